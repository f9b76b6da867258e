"""Where the operator's commands read and write: the running node (its tasks, its embedded
K2 at `/k2`), `K2_NODE_URL`, or the data directory's own K2 when no node runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from k2node.config import Settings
from k2node.crypto import Keypair, WalletError, load_wallet
from k2node.node.provision import EXAMPLE_KEY, K2_RPC_PATH
from k2node.settlement.base import Settlement
from k2node.settlement.local import LocalK2
from k2node.settlement.rpc import K2Unreachable, RpcSettlement
from k2node.store import Store, StoreError

NODE_TIMEOUT_S = 2.0


class OperatorError(Exception):
    """Why a command cannot go on; it changed nothing."""


@dataclass
class Reach:
    settlement: Settlement
    main: Keypair
    staking: Keypair | None  # None until a node has staked from this data directory
    node_tasks: list[str] | None  # the running node's tasks; None when no node runs
    public_url: str

    def task_ids(self, settings: Settings) -> list[str]:
        if settings.tasks:
            return list(settings.tasks)
        if self.node_tasks is not None:
            return self.node_tasks
        return _example_of(settings.data_dir)


def _example_of(data_dir: Path) -> list[str]:
    try:
        store = Store.open(data_dir / "node-db")
    except StoreError:
        return []
    try:
        found = store.get(EXAMPLE_KEY)
    finally:
        store.close()
    return [found] if isinstance(found, str) else []


def _wallet(path: Path, what: str) -> Keypair | None:
    if not path.exists():
        return None
    try:
        return load_wallet(path)
    except WalletError as exc:
        raise OperatorError(f"{what}: {exc}") from None


async def _running_tasks(session: aiohttp.ClientSession, base: str) -> list[str] | None:
    try:
        timeout = aiohttp.ClientTimeout(total=NODE_TIMEOUT_S)
        async with session.get(f"{base}/tasks", timeout=timeout) as resp:
            listed = await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(listed, list):
        return None
    return [t["TaskID"] for t in listed if isinstance(t, dict) and isinstance(t.get("TaskID"), str)]


@asynccontextmanager
async def reach(settings: Settings) -> AsyncIterator[Reach]:
    main = _wallet(settings.wallet_location, "the main wallet")
    if main is None:
        raise OperatorError(
            f"no wallet at {settings.wallet_location}: run the node once (it creates one), "
            "or set WALLET_LOCATION"
        )
    staking = _wallet(settings.data_dir / "wallets" / "staking.json", "the staking wallet")
    base = f"http://127.0.0.1:{settings.server_port}"
    async with aiohttp.ClientSession() as session:
        running = await _running_tasks(session, base)
        local: LocalK2 | None = None
        try:
            if settings.k2_node_url or running is not None:
                url = settings.k2_node_url or base + K2_RPC_PATH
                settlement: Settlement = await RpcSettlement.connect(url, session)
            elif (settings.data_dir / "k2").exists():
                local = LocalK2.open(settings.data_dir / "k2", settings.slot_ms)
                settlement = local
            else:
                raise OperatorError(
                    f"no node answers on port {settings.server_port} and {settings.data_dir} "
                    "holds no K2: start the node, or point --data-dir at its data"
                )
        except (K2Unreachable, StoreError) as exc:
            raise OperatorError(f"K2: {exc}") from None
        try:
            yield Reach(
                settlement, main, staking, running, settings.public_url(settings.server_port)
            )
        finally:
            if local is not None:
                local.close()
