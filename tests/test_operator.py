"""`k2node status`, `tasks`, `stake`, `unstake`, `claim` on a node's data: from the running
node's API, then straight from its K2; every refusal in words, changing nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from solders.pubkey import Pubkey

from k2node.config import Settings
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.operator.money import roe_of
from k2node.operator.reach import OperatorError
from k2node.settlement.local import LocalK2
from k2node.settlement.service import K2Service
from tests.conftest import create_task, node_settings, wait_for

SLOT_MS = "100"  # the example's 20-slot rounds take 2 s


async def _k2node(
    data: Path, *args: str, port: int = 9, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, as an operator runs it (while this test's loop
    goes on serving the node it may ask)."""
    command = [sys.executable, "-m", "k2node", *args, "--data-dir", str(data), "--port", str(port)]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"K2NODE_SLOT_MS": SLOT_MS} | (env or {}),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


def _json(run: subprocess.CompletedProcess[str]) -> Any:
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def _refused(run: subprocess.CompletedProcess[str], words: str) -> None:
    assert run.returncode == 1, run.stdout[-1000:]
    assert words in run.stderr, run.stderr[-1000:]


async def _world(data: Path, task_id: str, *keys: str) -> tuple[Any, ...]:
    k2 = LocalK2.open(data / "k2", float(SLOT_MS))
    try:
        state = await k2.get_task_state(
            task_id, {"is_stake_list_required": True, "is_available_balances_required": True}
        )
        balances = [await k2.get_balance(k) for k in keys]
    finally:
        k2.close()
    return state["stake_list"], state["available_balances"], balances


async def test_an_operator_sees_claims_and_unstakes(tmp_path: Path) -> None:
    data = tmp_path / "node"
    wallet = data / "wallets" / "id.json"
    settings = Settings(data_dir=data, wallet_location=wallet, server_port=0, slot_ms=100.0)
    async with Node.manage(settings) as node:
        task_id = next(iter(node.tasks))
        me = node.staking.pubkey

        async def rewarded() -> bool:
            state = await node.settlement.get_task_state(
                task_id, {"is_available_balances_required": True}
            )
            return state["available_balances"].get(me, 0) > 0

        await wait_for(rewarded, within=60)
        # from the running node's API
        seen = _json(await _k2node(data, "status", "--json", port=node.port))
        assert seen["node_running"] is True
        assert seen["staking_wallet"]["pubkey"] == me
        (task,) = seen["tasks"]
        assert task["task_id"] == task_id and task["state"] == "running"
        assert task["claimable"] > 0 and task["stake"] == task["minimum_stake"]
        assert task["last_submission_round"] is not None
        assert task["rewards"] and all(v > 0 for v in task["rewards"].values())
        listed = _json(await _k2node(data, "tasks", "--json", port=node.port))
        assert [t["task_id"] for t in listed] == [task_id] and listed[0]["nodes"] == 1
        main = node.wallets.main.pubkey
    # straight from the data directory's K2, no node running. First the one refusal that
    # holds only for a while: four rounds (8 s of 100 ms slots) after the last submission
    stakes, available, (main_before,) = await _world(data, task_id, main)
    _refused(await _k2node(data, "unstake", task_id, "--yes"), "unstaking opens at round")
    seen = _json(await _k2node(data, "status", "--json"))
    assert seen["node_running"] is False
    (task,) = seen["tasks"]
    claimable = task["claimable"]
    text = await _k2node(data, "status")
    assert "node: not running" in text.stdout and f"k2node claim {task_id}" in text.stdout

    # refusals: each says why and changes nothing
    _refused(await _k2node(data, "claim", task_id), "not a terminal to ask on: add --yes")
    _refused(await _k2node(data, "stake", task_id, "100000", "--yes"), "your main wallet holds")
    _refused(await _k2node(data, "stake", task_id, "-1", "--yes"), "not a positive amount of KOII")
    _refused(await _k2node(data, "stake", task_id, "1e400", "--yes"), "your main wallet holds")
    _refused(
        await _k2node(data, "stake", str(Pubkey.new_unique()), "1", "--yes"), "K2 knows no task"
    )
    assert await _world(data, task_id, main) == (stakes, available, [main_before])

    # claim: the rewards move to the main wallet, once
    done = await _k2node(data, "claim", task_id, "--yes")
    assert done.returncode == 0 and "claimed" in done.stdout, done.stderr
    _, available_after, (main_after,) = await _world(data, task_id, main)
    assert available_after[me] == 0
    assert main_after == main_before + claimable - 10_000  # two signatures' fees
    _refused(await _k2node(data, "claim", task_id, "--yes"), "nothing to claim on")

    # unstake once three rounds have passed since the last submission
    async def open_now() -> bool:
        (found,) = _json(await _k2node(data, "status", "--json"))["tasks"]
        return found["unstake_opens_round"] is None

    await wait_for(open_now, within=30, every=0.5)
    done = await _k2node(data, "unstake", task_id, "--yes")
    assert done.returncode == 0 and "unstaked 1 KOII" in done.stdout, done.stderr
    stakes_after, _, _ = await _world(data, task_id)
    assert me not in stakes_after
    _refused(await _k2node(data, "unstake", task_id, "--yes"), "you have no stake on")
    _refused(
        await _k2node(data, "stake", task_id, "0.5", "--yes"), "needs a stake of at least 1 KOII"
    )

    # the stake came back to the staking account: status shows it, staking again draws on
    # it, the main wallet pays the fee alone
    assert _json(await _k2node(data, "status", "--json"))["staking_wallet"]["unstaked"] == (
        ROE_PER_KOII
    )
    text = await _k2node(data, "status")
    assert "(1 KOII of it unstaked, for the next stake)" in text.stdout
    _, _, (main_before, staking_before) = await _world(data, task_id, main, me)
    done = await _k2node(data, "stake", task_id, "1", "--yes")
    assert done.returncode == 0, done.stderr
    assert "costs 1 KOII withdrawn earlier, in the staking account, fee" in done.stdout
    stakes_after, _, (main_after, staking_after) = await _world(data, task_id, main, me)
    assert stakes_after[me] == ROE_PER_KOII
    assert (main_after, staking_after) == (main_before - 10_000, staking_before - ROE_PER_KOII)
    assert _json(await _k2node(data, "status", "--json"))["staking_wallet"]["unstaked"] == 0


async def test_no_wallet_and_no_k2_are_clear(tmp_path: Path) -> None:
    _refused(await _k2node(tmp_path / "empty", "status"), "no wallet at")
    wallets = tmp_path / "w" / "wallets"
    wallets.mkdir(parents=True)
    (wallets / "id.json").write_text(json.dumps(list(range(64))))
    _refused(await _k2node(tmp_path / "w", "status"), "main wallet")  # not a key pair


@pytest.mark.parametrize(
    ("text", "roe"), [("1", ROE_PER_KOII), ("0.5", ROE_PER_KOII // 2), ("1e-9", 1)]
)
def test_amounts_are_koii(text: str, roe: int) -> None:
    assert roe_of(text) == roe


@pytest.mark.parametrize("text", ["0", "-2", "abc", "nan", "inf", "1e-10", ""])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(OperatorError):
        roe_of(text)


async def test_on_a_devnet_the_commands_go_to_its_k2(tmp_path: Path) -> None:
    """A node on a `k2node k2` service: status and claim reach that K2 (K2_NODE_URL)."""
    k2 = LocalK2.open(tmp_path / "k2", float(SLOT_MS))
    service = TestClient(TestServer(K2Service(k2).app()))
    await service.start_server()
    try:
        task_id = await create_task(
            k2, Keypair.generate(), round_time=20, submission_window=8, audit_window=8
        )
        url = str(service.make_url("/"))
        data = tmp_path / "node"
        async with Node.manage(node_settings(data, task_id, k2_node_url=url)) as node:
            me = node.staking.pubkey

            async def rewarded() -> bool:
                state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
                return state["available_balances"].get(me, 0) > 0

            await wait_for(rewarded, within=60)
            extra = {"K2_NODE_URL": url, "TASKS": task_id}
            seen = _json(await _k2node(data, "status", "--json", port=node.port, env=extra))
            assert seen["node_running"] is True
            assert seen["tasks"][0]["claimable"] > 0
            done = await _k2node(data, "claim", task_id, "--yes", port=node.port, env=extra)
            assert done.returncode == 0 and "claimed" in done.stdout, done.stderr
            state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
            assert state["available_balances"][me] == 0
    finally:
        await service.close()
        k2.close()
