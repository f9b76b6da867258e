"""The node: wires store, settlement, wallets, API, task processes and timers together.

Lifetimes nest in an AsyncExitStack (store -> settlement -> API -> supervisor -> timers),
so shutdown unwinds in reverse by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import socket
import string
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from k2node.config import ConfigError, Settings, load_task_config
from k2node.crypto import Keypair, load_or_create_wallet
from k2node.ipfs import IpfsBackend
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.kubo import KuboIpfs
from k2node.node.agent import TaskAgent
from k2node.node.api import NodeApi
from k2node.node.events import EventHub
from k2node.node.gateway import IpfsGateway
from k2node.node.ledger import Ledger
from k2node.node.namespace_rpc import TaskContext
from k2node.node.scheduler import Scheduler
from k2node.node.supervisor import Supervisor, TaskSpec
from k2node.settlement.base import Settlement, TransactionError, sign_tx
from k2node.settlement.local import LocalK2
from k2node.settlement.rpc import K2Unreachable, RpcSettlement
from k2node.store import Store

log = structlog.get_logger("k2node.node")

_SECRET_ALPHABET = string.ascii_letters + string.digits
# Every shutdown step is time-boxed; their sum must stay under systemd's TimeoutStopSec.
SHUTDOWN_STEPS = ("tasks", "api")
SHUTDOWN_STEP_TIMEOUT_S = 10.0
PEERS_TTL_S = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _report_failure(job: asyncio.Task[Any]) -> None:
    """A background job that died on its own says so (cancellation at stop is expected)."""
    if not job.cancelled() and job.exception() is not None:
        log.error("background_job_failed", job=job.get_name(), error=repr(job.exception()))


async def _ensure_balance(settlement: Settlement, key: str, amount: int) -> None:
    """Top `key` up from the K2's faucet (the embedded one, or a `k2node k2` devnet's)."""
    have = await settlement.get_balance(key)
    if have < amount:
        try:
            await settlement.airdrop(key, amount - have)
        except TransactionError as exc:
            log.warning("airdrop_refused", pubkey=key, error=str(exc))


async def deploy_task(settlement: Settlement, manager: Keypair, task_config: Path) -> str:
    """Create a task on the local K2 from a config-task.yml, funding its bounty by airdrop."""
    args = load_task_config(task_config)
    await _ensure_balance(settlement, manager.pubkey, args["total_bounty_amount"])
    tx = sign_tx(manager, "CreateTask", "", args, settlement.current_slot())
    result = await settlement.send(tx)
    task_id = str(result["task_id"])
    log.info("task_deployed", task_id=task_id, name=args["task_name"])
    return task_id


class Node:
    def __init__(
        self,
        settings: Settings,
        settlement: Settlement | None = None,
        restart_backoff_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self._shared_settlement = settlement
        self._restart_backoff_s = restart_backoff_s
        self.settlement: Settlement | None = None
        self.staking: Keypair | None = None
        self.main: Keypair | None = None
        self.port = 0
        self.contexts: dict[str, TaskContext] = {}
        self.schedulers: dict[str, Scheduler] = {}
        self.supervisor: Supervisor | None = None
        self.ledger: Ledger | None = None
        self.ipfs: IpfsBackend | None = None
        self.events = EventHub()
        self._peer_cache: tuple[float, list[str]] = (float("-inf"), [])

    @asynccontextmanager
    async def manage(self) -> AsyncIterator[Node]:
        settings = self.settings
        async with AsyncExitStack() as stack:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            store = Store.open(settings.data_dir / "node-db")
            stack.callback(store.close)
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
            stack.push_async_callback(session.close)
            settlement: Settlement
            if self._shared_settlement is not None:
                settlement = self._shared_settlement
            elif settings.k2_node_url:
                try:
                    settlement = await RpcSettlement.connect(settings.k2_node_url, session)
                except (K2Unreachable, TransactionError) as exc:
                    raise ConfigError(f"K2_NODE_URL: {exc}") from None
            else:
                local = LocalK2.open(settings.data_dir / "k2", settings.slot_ms)
                stack.callback(local.close)
                settlement = local
            self.settlement = settlement
            self.main, created = load_or_create_wallet(settings.wallet_location)
            if created:
                log.info(
                    "wallet_created", path=str(settings.wallet_location), pubkey=self.main.pubkey
                )
            self.staking, _ = load_or_create_wallet(settings.data_dir / "wallets" / "staking.json")
            self.ledger = Ledger(store, settlement)
            embedded: EmbeddedIpfs | None = None
            if settings.ipfs_api:
                kubo = KuboIpfs(settings.ipfs_api)
                await kubo.start()
                stack.push_async_callback(kubo.close)
                self.ipfs = kubo
            else:
                embedded = EmbeddedIpfs.open(settings.data_dir / "ipfs", session, self._peers)
                stack.callback(embedded.close)
                self.ipfs = embedded
            task_ids = list(settings.tasks) or [await self._example_task(store, settlement)]

            supervisor = Supervisor(self._on_reply, self._restart_backoff_s)
            self.supervisor = supervisor
            ports: dict[str, int] = {}
            api = NodeApi(
                self.contexts,
                ports,
                lambda tid: bool((p := supervisor.process(tid)) and p.running),
                self.main.pubkey,
                settings.admin_token,
                self._manual_phase,
                self.events,
            )
            app = api.app()
            if embedded is not None:
                app.router.add_routes(
                    IpfsGateway(embedded, api.is_admin, self.main.pubkey).routes()
                )
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            stack.push_async_callback(self._step, "api", runner.cleanup())
            site = web.TCPSite(runner, settings.server_host, settings.server_port)
            await site.start()
            self.port = int(runner.addresses[0][1])  # the real one when SERVER_PORT is 0
            public_url = settings.public_url(self.port)

            specs = []
            for i, task_id in enumerate(task_ids):
                stake = settings.task_stakes[i] if i < len(settings.task_stakes) else 0
                specs.append(await self._prepare_task(task_id, stake, public_url, ports))

            background: list[asyncio.Task[Any]] = []

            async def stop_background() -> None:
                supervisor.stop()
                for job in background:
                    if not job.get_name().startswith("supervise-"):
                        job.cancel()
                await asyncio.gather(*background, return_exceptions=True)

            stack.push_async_callback(self._step, "tasks", stop_background())
            for spec in specs:
                jobs = [(supervisor.supervise(spec), f"supervise-{spec.task_id}")]
                if settings.global_timers:
                    jobs.append(
                        (
                            self._run_scheduler(self.schedulers[spec.task_id]),
                            f"timers-{spec.task_id}",
                        )
                    )
                for coroutine, name in jobs:
                    job = asyncio.create_task(coroutine, name=name)
                    job.add_done_callback(_report_failure)
                    background.append(job)
            log.info(
                "node_started",
                port=self.port,
                tasks=task_ids,
                timers=settings.global_timers,
                staking_key=self.staking.pubkey,
            )
            yield self
            log.info("node_stopping")
        log.info("node_stopped")

    async def _step(self, name: str, step: Any) -> None:
        """One logged, time-boxed step of the shutdown."""
        try:
            await asyncio.wait_for(step, SHUTDOWN_STEP_TIMEOUT_S)
            log.info("shutdown_step", step=name, ok=True)
        except Exception as exc:
            log.warning("shutdown_step", step=name, ok=False, error=repr(exc))

    async def _run_scheduler(self, scheduler: Scheduler) -> None:
        assert self.supervisor is not None
        await self.supervisor.wait_started(scheduler.task_id)
        while True:
            try:
                await scheduler.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # a K2 hiccup must not end the timers for good
                log.exception("timers_error", task_id=scheduler.task_id)
                await asyncio.sleep(1.0)

    async def _example_task(self, store: Store, settlement: Settlement) -> str:
        """The bundled example, deployed once per data directory (embedded default)."""
        assert self.main is not None
        known = store.get("deployed-example")
        if isinstance(known, str):
            with contextlib.suppress(TransactionError):
                await settlement.get_task_state(known)
                return known
        task_id = await deploy_task(settlement, self.main, self.settings.task_config)
        store.put("deployed-example", task_id)
        return task_id

    async def _prepare_task(
        self, task_id: str, stake: int, public_url: str, ports: dict[str, int]
    ) -> TaskSpec:
        assert self.settlement and self.staking and self.main and self.ledger
        settings = self.settings
        try:
            state = await self.settlement.get_task_state(task_id)
        except TransactionError:
            raise ConfigError(f"TASKS: task {task_id} does not exist on K2") from None
        base = settings.data_dir / "namespace" / task_id
        base.mkdir(parents=True, exist_ok=True)
        agent = TaskAgent(
            task_id, self.settlement, self.ledger, self.staking, self.main.pubkey, base
        )
        stake = max(stake, int(state["minimum_stake_amount"]), 1)
        await _ensure_balance(
            self.settlement,
            self.staking.pubkey,
            max(stake, settings.initial_staking_wallet_balance),
        )
        result = await agent.stake(stake, public_url)
        log.info("staked", task_id=task_id, stake=result.get("stake"))
        await self.ledger.reconcile(task_id)
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(20))
        self.contexts[task_id] = TaskContext(
            agent, state["task_name"], secret, stake, public_url, self.ipfs
        )
        self.schedulers[task_id] = Scheduler(
            agent,
            self.ledger,
            functools.partial(self._send_phase, task_id),
            functools.partial(self._restart, task_id),
            self.events,
        )
        ports[task_id] = _free_port()
        argv = (
            state["task_name"],
            task_id,
            str(ports[task_id]),
            "service",
            self.main.pubkey,
            secret,
            public_url,
            public_url,
            str(stake),
            str(self.port),
        )
        return TaskSpec(task_id, state["task_name"], settings.task_entry, argv, base / "task.log")

    async def _peers(self) -> list[str]:
        """Other nodes of this node's tasks, by the URLs they staked with. Read at most every
        PEERS_TTL_S: a fetch asks once per missing block, and K2 may be across the network."""
        read_at, cached = self._peer_cache
        if time.monotonic() - read_at < PEERS_TTL_S:
            return cached
        urls: list[str] = []
        for ctx in self.contexts.values():
            state = await ctx.agent.state()
            for url in state["ip_address_list"].values():
                if url != ctx.public_url and url not in urls:
                    urls.append(url)
        self._peer_cache = (time.monotonic(), urls)
        return urls

    async def _send_phase(self, task_id: str, message: dict[str, Any]) -> bool:
        assert self.supervisor is not None
        return await self.supervisor.send(task_id, message)

    def _restart(self, task_id: str, reason: str) -> None:
        assert self.supervisor is not None
        self.supervisor.request_restart(task_id, reason)

    def _on_reply(self, task_id: str, message: dict[str, Any]) -> None:
        scheduler = self.schedulers.get(task_id)
        if scheduler is not None and "phaseDone" in message:
            scheduler.on_phase_done(message)

    async def _manual_phase(self, task_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if body["functionCall"] == "payout":
            try:
                return await self.contexts[task_id].agent.payout(body["roundNumber"])
            except TransactionError as exc:
                return {"error": str(exc)}
        message = {
            "functionCall": body["functionCall"],
            "roundNumber": body["roundNumber"],
            "isPreviousRoundFailed": bool(body.get("isPreviousRoundFailed", False)),
        }
        return {"delivered": await self._send_phase(task_id, message)}


async def run_node(settings: Settings, stop: asyncio.Event) -> int:
    async with Node(settings).manage():
        await stop.wait()
    return 0
