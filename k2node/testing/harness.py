"""TaskHarness: a task's CoreLogic on N simulated nodes against the local K2's rules, in
virtual time, in one process: no sleeping, no ports, no subprocess.

Each node is the node's own code (TaskAgent, Ledger, RunningTask with its Scheduler,
Payouts and Watchdog) around the task's code run in-process; only the clock and the task
channel differ from a real node. With timers on, advancing time runs every phase on
schedule; with timers off, a test runs each phase by hand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from nacl.signing import SigningKey
from solders.keypair import Keypair as SoldersKeypair

from k2node.contract.phases import PAYOUT, Phase, phase_message
from k2node.contract.rounds import Schedule
from k2node.contract.task_state import OPTION_SECTIONS
from k2node.contract.units import DEFAULT_SLOT_MS, ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.agent import TaskAgent
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.ledger import Ledger
from k2node.node.process import OnReply, TaskSpec
from k2node.node.provision import deploy_task
from k2node.node.running import RunningTask
from k2node.settlement.local import LocalK2
from k2node.store import Store
from k2node.task.core import CoreLogic
from k2node.task.runner import build_task_app
from k2node.testing.clock import INTO_SLOT_S, SimTimer, VirtualClock
from k2node.testing.inprocess import InProcessTask, LocalNamespace
from k2node.testing.tasks import TaskSource, config_of, core_of, launch_args

# What each simulated node's main wallet starts with: stake and many rounds of fees.
NODE_FUNDS_KOII = 1_000
# Every section of the task state (a test reads all of it).
ALL_SECTIONS = dict.fromkeys(OPTION_SECTIONS, True)
WINDOWS = ("submission", "audit", "distribution", "distribution_audit", "payout")


def seeded_keypair(seed: int | None, label: str) -> Keypair:
    """A key derived from the seed (the same on every run), or a new one without a seed."""
    if seed is None:
        return Keypair.generate()
    return Keypair(SigningKey(hashlib.sha256(f"k2node-sim:{seed}:{label}".encode()).digest()))


class InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """What the nodes of a harness send to a thread (a task's CPU work, an IPFS upload) is
    run at once, in the loop's own thread: in one process and in virtual time a thread buys
    nothing, and a hand-off to one costs more than most of the work it carries. (A thread
    pool by type, which asyncio asks of a default executor; it never starts a thread.)

    What it hands back is an asyncio future of the running loop, already done: asyncio's
    `wrap_future` passes such a future through as it is, so the awaiting phase has its
    result at once, where a concurrent future's would come back as a wake-up from another
    thread (a write to the loop's self-pipe, and a turn of the loop)."""

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the caller's to see, as a thread's would be
            done.set_exception(exc)
        return cast(concurrent.futures.Future[Any], done)


def inline(stack: AsyncExitStack, loop: asyncio.AbstractEventLoop) -> None:
    """The loop's default executor inline while the harness runs, a thread pool after."""
    loop.set_default_executor(InlineExecutor())
    stack.callback(lambda: loop.set_default_executor(concurrent.futures.ThreadPoolExecutor()))


@dataclass(frozen=True)
class _Parts:
    """What every node of a harness shares, or is built with."""

    folder: Path
    ipfs: EmbeddedIpfs
    session: aiohttp.ClientSession
    timers: bool
    stake: int | None


@dataclass
class SimNode:
    """One node of a harness: the node's parts and the task's code it runs."""

    index: int
    core: CoreLogic
    agent: TaskAgent
    task: RunningTask
    channel: InProcessTask

    @property
    def staking_key(self) -> str:
        return self.agent.staking.pubkey

    @property
    def ledger(self) -> Ledger:
        return self.agent.ledger

    async def store_get(self, key: str) -> Any:
        """A value the task keeps in its own store (`namespace.store_set`)."""
        return await self.channel.namespace.store_get(key)

    async def phase(self, name: str, round_: int, retry: bool = False) -> dict[str, Any]:
        """Run one phase now, as a developer does with timers off; the task's reply (for
        `payout`, what K2 answered). Time does not move."""
        if name == PAYOUT:
            return await self.task.manual_phase(name, round_, retry)
        return await self.channel.run_now(phase_message(Phase(name), round_, retry))

    @asynccontextmanager
    async def client(self) -> AsyncIterator[TestClient[Any, Any]]:
        """aiohttp's test client on the task's own HTTP routes (what `/task/<id>/` serves)."""
        async with TestClient(TestServer(build_task_app(self.core))) as client:
            yield client


class TaskHarness:
    def __init__(self, clock: VirtualClock, k2: LocalK2, task_id: str) -> None:
        self.clock = clock
        self.k2 = k2
        self.task_id = task_id
        self.nodes: list[SimNode] = []
        self.events = EventHub()
        self.schedule: Schedule | None = None

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        task: TaskSource,
        folder: Path | None = None,
        nodes: int = 3,
        *,
        timers: bool = True,
        config: Path | None = None,
        seed: int | None = None,
        slot_ms: float = DEFAULT_SLOT_MS,
        core_for: Callable[[int], CoreLogic] | None = None,
        keys: Sequence[tuple[Keypair, Keypair]] | None = None,
        task_key: Keypair | None = None,
        stake: int | None = None,
    ) -> AsyncIterator[TaskHarness]:
        """`nodes` nodes running `task` (a CoreLogic subclass, `file.py:Class` or
        `module:Class`) from the task's config-task.yml (found beside it by default), all
        staked in round 0 (`stake` ROE each; the task's minimum by default).

        `core_for(i)` gives node i another CoreLogic (an adversary). Keys (each node's main
        and staking wallets, the task's account) are derived from `seed`, new ones without
        it, or given: `keys` and `task_key`."""
        if nodes < 1:
            raise ValueError("a harness needs at least one node")
        if keys is not None and len(keys) != nodes:
            raise ValueError(f"{len(keys)} key pairs for {nodes} nodes")
        async with AsyncExitStack() as stack:
            if folder is None:
                folder = Path(tempfile.mkdtemp(prefix="k2node-harness-"))
                stack.callback(shutil.rmtree, folder, True)
            folder.mkdir(parents=True, exist_ok=True)
            inline(stack, asyncio.get_running_loop())
            clock = VirtualClock()
            # the world in memory only, and the nodes' signatures trusted: they sign here
            k2 = LocalK2.open(folder / "k2", slot_ms, clock=clock, simulated=True)
            stack.push_async_callback(k2.aclose)
            manager = seeded_keypair(seed, "manager")
            account = task_key or seeded_keypair(seed, "task")
            task_id = await deploy_task(
                k2,
                manager,
                config or config_of(task),
                task_key=SoldersKeypair.from_seed(account.secret_bytes[:32]),
            )
            harness = cls(clock, k2, task_id)
            # one network's content, for all nodes, in memory
            ipfs = EmbeddedIpfs.open(folder / "ipfs", durable=False)
            stack.callback(ipfs.close)
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            make = core_for or (lambda _i: core_of(task))
            for i in range(nodes):
                main, staking = (
                    keys[i]
                    if keys is not None
                    else (seeded_keypair(seed, f"main{i}"), seeded_keypair(seed, f"staking{i}"))
                )
                parts = _Parts(folder, ipfs, session, timers, stake)
                harness.nodes.append(await harness._add_node(i, make(i), main, staking, parts))
            harness.schedule = await harness.nodes[0].agent.schedule()
            stack.push_async_callback(harness._stop)
            await harness._launch(timers)
            yield harness

    async def _add_node(
        self, i: int, core: CoreLogic, main: Keypair, staking: Keypair, parts: _Parts
    ) -> SimNode:
        k2, timers = self.k2, parts.timers
        await k2.airdrop(main.pubkey, NODE_FUNDS_KOII * ROE_PER_KOII)
        base = parts.folder / f"node{i}"
        # a node's ledger and its task's store live in memory: they end with the harness
        ledger = Ledger(Store.memory(base / "ledger"), k2, durable=False)
        agent = TaskAgent(self.task_id, k2, ledger, staking, main, base)
        state = await agent.state()
        stake = max(parts.stake or 0, int(state["minimum_stake_amount"]), 1)
        url = f"http://node{i}.sim"
        await agent.stake(stake, url)
        secret = f"sim-secret-{i}"
        context = TaskContext(agent, state["task_name"], secret, stake, url, parts.ipfs)
        spec = TaskSpec(
            launch_args(self.task_id, state, main.pubkey, secret, stake, url), "", base / "task.log"
        )
        task_store = Store.memory(base / "task-db")
        namespace = LocalNamespace(context, self.events, task_store, parts.session)

        def channel(_spec: TaskSpec, on_reply: OnReply) -> InProcessTask:
            return InProcessTask(core, namespace, on_reply, self.clock)

        # timers off: a timer nobody sleeps on must not hold the clock still
        timer = self.clock.timer(k2.slots) if timers else SimTimer(k2.slots, self.clock)
        running = RunningTask(context, spec, timer, self.events, channel=channel)
        assert isinstance(running.process, InProcessTask)
        return SimNode(i, core, agent, running, running.process)

    async def _launch(self, timers: bool) -> None:
        self._jobs = [
            asyncio.create_task(node.task.run(timers), name=f"sim-node{node.index}")
            for node in self.nodes
        ]
        up: asyncio.Future[Any] = asyncio.gather(
            *(node.channel.started.wait() for node in self.nodes)
        )
        waited: list[asyncio.Future[Any]] = [up, *self._jobs]
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        for job in self._jobs:  # a node that ended before all were up: its task's error
            if job.done():
                up.cancel()
                await asyncio.gather(up, return_exceptions=True)
                failure = job.exception()
                while isinstance(failure, BaseExceptionGroup) and failure.exceptions:
                    failure = failure.exceptions[0]  # the task's own error, not its group
                if failure is not None:
                    raise failure
                raise RuntimeError(f"{job.get_name()} stopped before the harness was up")
        await self.clock.settle()

    async def _stop(self) -> None:
        for node in self.nodes:
            node.task.stop()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    # -- time ------------------------------------------------------------------------------
    @property
    def slot(self) -> int:
        return self.k2.current_slot()

    @property
    def current_round(self) -> int:
        assert self.schedule is not None
        return max(0, self.schedule.round_of(self.slot))

    async def settle(self) -> None:
        """Let every phase running now finish; time does not move."""
        await self.clock.settle()

    async def advance_to_slot(self, slot: int) -> None:
        """Move time to the start of `slot`, running every phase due on the way."""
        await self.clock.advance_to(self.k2.wall_time_of_slot(slot) + INTO_SLOT_S)

    async def advance_to_round(self, round_: int) -> None:
        assert self.schedule is not None
        await self.advance_to_slot(self.schedule.round_start(round_))

    async def run_rounds(self, count: int) -> None:
        """Move on `count` whole rounds, to the start of a round."""
        await self.advance_to_round(self.current_round + count)

    async def advance_to_window(self, window: str, round_: int) -> None:
        """Move to where the window for round `round_`'s `window` opens: its submission,
        audit, distribution, distribution_audit, or payout (K2-CONTRACT's schedule)."""
        s = self.schedule
        assert s is not None
        opens = {
            "submission": lambda: s.submission_of(round_).start,
            "audit": lambda: s.audit_of(round_).start,
            "distribution": lambda: s.distribution_of(round_).start,
            "distribution_audit": lambda: s.distribution_audit_of(round_).start,
            "payout": lambda: s.payout_opens(round_),
        }
        if window not in opens:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")
        await self.advance_to_slot(opens[window]())

    # -- reads -----------------------------------------------------------------------------
    async def state(self) -> dict[str, Any]:
        """The task's state on K2 with every section."""
        return await self.k2.get_task_state(self.task_id, ALL_SECTIONS)

    def node(self, staking_key: str) -> SimNode:
        return next(n for n in self.nodes if n.staking_key == staking_key)
