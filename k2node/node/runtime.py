"""The node's lifetime: its parts built in order by async factories and entered on one
AsyncExitStack, so nothing exists half-built and shutdown unwinds in reverse by construction.

store -> settlement -> wallets and ledger -> IPFS -> HTTP server -> tasks (process + timers).
Every shutdown step is logged and time-boxed; `ShutdownPlan.steps` lists them with their
bounds, whose sum stays under systemd's stop timeout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from k2node.config import ConfigError, Settings
from k2node.crypto import Keypair
from k2node.eventloop import loop_kind
from k2node.ipfs import IpfsBackend
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.kubo import KuboIpfs
from k2node.logs import get_logger
from k2node.node import heap
from k2node.node.clock import SlotTimer
from k2node.node.confine import landlock_abi
from k2node.node.events import EventHub
from k2node.node.fleet import Fleet, report_failure
from k2node.node.http.api import NodeApi
from k2node.node.http.capped import CappedSite
from k2node.node.http.proxy import ProxyLimits
from k2node.node.ledger import Ledger
from k2node.node.metrics import NodeMetrics
from k2node.node.notify import Notifier
from k2node.node.peers import Peers
from k2node.node.process import STOP_TIMEOUT_S
from k2node.node.processlimit import process_limit
from k2node.node.provision import Wallets, example_task, load_wallets, provision_task
from k2node.node.reload import source_folder
from k2node.node.running import RunningTask
from k2node.node.standing import standing
from k2node.settlement.base import Settlement, TransactionError
from k2node.settlement.local import LocalK2
from k2node.settlement.rpc import K2Unreachable, RpcSettlement
from k2node.settlement.service import K2Service
from k2node.settlement.slots import SlotFollower, pubsub_url
from k2node.store import Store

log = get_logger("k2node.node")

# Bounds of the shutdown steps, in seconds.
TASKS_STOP_S = STOP_TIMEOUT_S + 5.0  # terminate, the grace period, kill
HTTP_STOP_S = 4.0  # aiohttp's own shutdown_timeout is 2 s
CLOSE_S = 3.0  # a client session, an IPFS store, the local K2's last snapshot, the database
# Waiting for a K2 that does not answer at start: the first retry, and the longest gap.
K2_RETRY_FIRST_S, K2_RETRY_MAX_S = 1.0, 30.0


@dataclass(frozen=True)
class ShutdownStep:
    name: str
    bound_s: float


@dataclass
class ShutdownPlan:
    steps: list[ShutdownStep] = field(default_factory=list)

    def add(
        self,
        stack: AsyncExitStack,
        name: str,
        bound_s: float,
        action: Callable[[], Awaitable[Any]],
    ) -> None:
        self.steps.append(ShutdownStep(name, bound_s))
        stack.push_async_callback(self._run, name, bound_s, action)

    def close(
        self, stack: AsyncExitStack, name: str, action: Callable[[], Any], bound_s: float = CLOSE_S
    ) -> None:
        """A synchronous close, run in a thread so that its bound holds."""
        self.add(stack, name, bound_s, lambda: asyncio.to_thread(action))

    @staticmethod
    async def _run(name: str, bound_s: float, action: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(action(), bound_s)
        except Exception as exc:
            log.warning("shutdown_step", step=name, ok=False, error=repr(exc))
            return
        ms = round((time.monotonic() - started) * 1000, 1)
        log.info("shutdown_step", step=name, ok=True, ms=ms)


@dataclass(frozen=True)
class Node:
    settings: Settings
    settlement: Settlement
    wallets: Wallets
    ledger: Ledger
    ipfs: IpfsBackend
    events: EventHub
    tasks: dict[str, RunningTask]
    port: int  # the bound one, also when SERVER_PORT is 0
    shutdown: ShutdownPlan

    @property
    def staking(self) -> Keypair:
        return self.wallets.staking

    @classmethod
    @asynccontextmanager
    async def manage(
        cls,
        settings: Settings,
        settlement: Settlement | None = None,
        restart_backoff_s: float = 1.0,
    ) -> AsyncIterator[Node]:
        """Build and run a node; leave it stopped. `settlement` shares one K2 (tests)."""
        plan = ShutdownPlan()
        async with AsyncExitStack() as stack:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            _check_sandbox(settings)
            processes = process_limit(settings.task_processes)  # says which mechanism holds
            stack.callback(processes.close)  # after the tasks have stopped
            store = Store.open(settings.data_dir / "node-db")
            plan.close(stack, "node_db", store.close)
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
            plan.add(stack, "http_client", CLOSE_S, session.close)
            if settlement is None:
                settlement = await _open_settlement(settings, session, stack, plan)
            wallets = load_wallets(settings)
            ledger = Ledger(store, settlement)
            tasks: dict[str, RunningTask] = {}
            task_ids: list[str] = []
            own_urls: set[str] = set()
            peers = Peers(settlement, task_ids, own_urls)
            ipfs, embedded = await _open_ipfs(settings, session, peers, stack, plan)
            events = EventHub()
            metrics = NodeMetrics()
            events.listeners.append(metrics.observe)
            stats = embedded.stats if embedded is not None else None
            metrics.watch(lambda: {i: t.process for i, t in tasks.items()}, stats)
            if isinstance(settlement, RpcSettlement):
                settlement.observe = metrics.k2_call
            k2 = K2Service(settlement) if isinstance(settlement, LocalK2) else None
            limits = ProxyLimits(
                max_body=settings.task_max_body_mb << 20,
                ws_connections=settings.task_ws_connections,
                ws_message=settings.task_ws_message_mb << 20,
            )

            settled: Settlement = settlement  # (narrowed: the closure below keeps the type)

            async def current_standing() -> dict[str, Any]:
                found = await standing(
                    settled,
                    wallets.main.pubkey,
                    wallets.staking.pubkey,
                    list(tasks),
                    task_ids,
                    settings,
                )
                return found.to_json()

            api = NodeApi(
                tasks,
                wallets.main.pubkey,
                settings.admin_token,
                events,
                embedded,
                k2,
                limits,
                metrics,
                current_standing,
            )
            port = await _serve(api.app(), settings, stack, plan)
            own_urls.add(settings.public_url(port))
            task_ids += list(settings.tasks) or [
                await example_task(store, settlement, wallets.main, settings.task_config)
            ]
            timer = SlotTimer(settlement)
            fleet = Fleet(tasks, settings.global_timers)
            plan.add(stack, "tasks", TASKS_STOP_S, fleet.stop)

            # Python tasks serve their routes on Unix sockets here: only this user may enter
            sockets = Path(tempfile.mkdtemp(prefix="k2node-"))
            plan.close(stack, "task_sockets", lambda: shutil.rmtree(sockets, ignore_errors=True))

            async def start(task_id: str, stake: int) -> RunningTask:
                ready = await provision_task(
                    settings,
                    settlement,
                    ledger,
                    wallets,
                    ipfs,
                    task_id,
                    stake,
                    port,
                    sockets,
                    processes,
                )
                watch = None
                if settings.reload:
                    watch = source_folder(ready.spec.entry, settings.data_dir / "executables")
                return RunningTask(
                    ready.context,
                    ready.spec,
                    timer,
                    events,
                    restart_backoff_s,
                    watch=watch,
                    auto_claim=settings.auto_claim,
                )

            stakes = list(settings.task_stakes) + [0] * len(task_ids)
            await fleet.start_all(list(zip(task_ids, stakes, strict=False)), start)
            node = cls(settings, settlement, wallets, ledger, ipfs, events, tasks, port, plan)
            collector = asyncio.create_task(
                heap.collect_between_slots(timer, settle_first=True), name="gc"
            )
            collector.add_done_callback(report_failure)
            stack.callback(heap.unsettle)
            stack.callback(collector.cancel)  # first thing at shutdown: instant, not a step
            log.info(
                "node_started",
                port=port,
                tasks=task_ids,
                timers=settings.global_timers,
                staking_key=wallets.staking.pubkey,
                event_loop=loop_kind(),
            )
            yield node
            log.info("node_stopping")
        log.info("node_stopped")


def _check_sandbox(settings: Settings) -> None:
    abi = landlock_abi()
    if settings.task_sandbox == "off":
        log.warning("task_sandbox_off", reason="K2NODE_TASK_SANDBOX=off")
    elif abi >= 1:
        log.info("task_sandbox", landlock_abi=abi)
    elif settings.task_sandbox == "required":
        raise ConfigError("K2NODE_TASK_SANDBOX=required, but this kernel has no Landlock")
    else:
        log.warning("task_sandbox_unavailable", reason="no Landlock: tasks run unconfined")


async def _open_settlement(
    settings: Settings, session: aiohttp.ClientSession, stack: AsyncExitStack, plan: ShutdownPlan
) -> Settlement:
    if settings.k2_node_url:
        rpc = await _reach_k2(settings.k2_node_url, session)
        follower = asyncio.create_task(
            SlotFollower(rpc, pubsub_url(settings.k2_node_url)).run(), name="k2-slots"
        )
        follower.add_done_callback(report_failure)

        async def stop_following() -> None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

        plan.add(stack, "k2_slots", CLOSE_S, stop_following)
        return rpc
    local = LocalK2.open(settings.data_dir / "k2", settings.slot_ms)
    plan.add(stack, "local_k2", CLOSE_S, local.aclose)
    return local


async def _reach_k2(url: str, session: aiohttp.ClientSession) -> RpcSettlement:
    """The K2 at `url`, waited for with backoff: a node started before its K2 (a reboot, a
    devnet coming up, a K2 restarting) waits for it rather than exits. An answer that is
    not K2's is a configuration error."""
    delay = K2_RETRY_FIRST_S
    while True:
        try:
            return await RpcSettlement.connect(url, session)
        except TransactionError as exc:
            raise ConfigError(f"K2_NODE_URL: {exc}") from None
        except K2Unreachable as exc:
            log.warning("k2_unreachable", url=url, error=str(exc)[:300], retry_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, K2_RETRY_MAX_S)


async def _open_ipfs(
    settings: Settings,
    session: aiohttp.ClientSession,
    peers: Peers,
    stack: AsyncExitStack,
    plan: ShutdownPlan,
) -> tuple[IpfsBackend, EmbeddedIpfs | None]:
    """The IPFS backend, and the embedded store when it is the one (the node serves it)."""
    if settings.ipfs_api:
        kubo = KuboIpfs(settings.ipfs_api)
        await kubo.start()
        plan.add(stack, "ipfs", CLOSE_S, kubo.close)
        return kubo, None
    embedded = EmbeddedIpfs.open(settings.data_dir / "ipfs", session, peers)
    plan.close(stack, "ipfs", embedded.close)
    return embedded, embedded


async def _serve(
    app: web.Application, settings: Settings, stack: AsyncExitStack, plan: ShutdownPlan
) -> int:
    # A connection that has not finished a request this long after it opened, or after its
    # last answer, is closed: slow or idle clients cannot pin the node (a long request or
    # a WebSocket being served is not idle).
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=settings.http_idle_s
    )
    await runner.setup()
    plan.add(stack, "http_server", HTTP_STOP_S, runner.cleanup)
    site = CappedSite(
        runner, settings.server_host, settings.server_port, settings.http_max_connections
    )
    await site.start()
    return int(runner.addresses[0][1])


async def run_node(settings: Settings, stop: asyncio.Event) -> int:
    notifier = Notifier(os.environ)
    try:
        async with AsyncExitStack() as stack:
            node = await _start_unless_stopped(stack, settings, stop)
            if node is None:
                log.info("node_start_abandoned", reason="stop asked before the node was up")
                return 0
            notifier.send(f"READY=1\nSTATUS=serving on port {node.port}, {len(node.tasks)} tasks")
            pinging = asyncio.create_task(notifier.watchdog(), name="sd-watchdog")
            await stop.wait()
            notifier.send("STOPPING=1")
            pinging.cancel()
            await asyncio.gather(pinging, return_exceptions=True)
    finally:
        notifier.close()
    return 0


async def _start_unless_stopped(
    stack: AsyncExitStack, settings: Settings, stop: asyncio.Event
) -> Node | None:
    """The node entered on `stack`, or None when a stop comes first: a SIGTERM while the
    node waits for its K2 (or any slow start) ends it, what was built unwinding as usual."""
    starting = asyncio.create_task(stack.enter_async_context(Node.manage(settings)), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop-wait")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        return starting.result()
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    return None
