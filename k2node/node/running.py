"""One task as the node runs it: its context, its process, its timers and its bookkeeping.

Every part of a task is owned here and talks to its siblings directly: the timers send phase
messages to the process, the process hands the task's replies back to the timers, and the
watchdog restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from k2node.contract.ipc import TASK_LIMITS
from k2node.contract.phases import PAYOUT, Phase, phase_message
from k2node.contract.values import is_int, is_round
from k2node.logs import get_logger
from k2node.node.clock import Clock
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.payouts import Payouts, Watchdog
from k2node.node.process import KeptProcess, OnReply, TaskSpec
from k2node.node.reload import changed_sources
from k2node.node.scheduler import Scheduler
from k2node.settlement.base import TransactionError

log = get_logger("k2node.node")

# Finished-phase and ledger records are kept this many rounds, and pruned every
# PRUNE_EVERY_ROUNDS (a pruning reads a range of keys per kind of record).
KEEP_LEDGER_ROUNDS = 20
PRUNE_EVERY_ROUNDS = 10
# A K2 hiccup must not end the timers for good: they start again after this pause.
TIMERS_RETRY_S = 1.0
# A reload waits this long for the phases running to finish before it restarts the task.
RELOAD_WAIT_S = 60.0
RELOAD_POLL_S = 0.25  # how often it looks whether the process it waits on is still there


class TaskChannel(Protocol):
    """Where a task's phases go and its replies come from: its kept OS process in a node,
    or the task's code in this process for k2node.testing."""

    started: asyncio.Event  # set once the task is up and may be sent phases

    @property
    def running(self) -> bool: ...

    async def run(self) -> None: ...

    async def send(self, message: dict[str, Any]) -> bool: ...

    def request_restart(self, reason: str) -> None: ...

    async def restart(self, reason: str) -> bool:
        """Restart now; True once the task is up again."""
        ...

    def stop(self) -> None: ...


ChannelFactory = Callable[[TaskSpec, OnReply], TaskChannel]


class RunningTask:
    def __init__(
        self,
        context: TaskContext,
        spec: TaskSpec,
        clock: Clock,
        events: EventHub,
        restart_backoff_s: float = 1.0,
        channel: ChannelFactory | None = None,
        watch: Path | None = None,
        auto_claim: int = 0,
    ) -> None:
        self.context = context
        self.spec = spec  # its HTTP server: spec.server_socket, or spec.args.port
        agent = context.agent
        self.scheduler = Scheduler(clock, agent, self._send, self, events)
        self.process: TaskChannel = (
            channel(spec, self._on_message)
            if channel is not None
            else KeptProcess(spec, self._on_message, restart_backoff_s)
        )
        self.max_request_body: int | None = None  # as the task asked, over its channel
        self.payouts = Payouts(agent, events)
        self.watchdog = Watchdog(agent, self.process.request_restart)
        self._clock = clock
        self._timers_job: asyncio.Task[None] | None = None
        self._watch_job: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._stopped = False
        self._watch = watch  # the sources to reload the task from when they change
        self._auto_claim = auto_claim  # ROE: claim rewards once they reach this (0: never)
        self._events = events
        self._in_flight: set[tuple[str, int]] = set()  # phases sent, not yet answered
        self._idle = asyncio.Event()  # set while none is
        self._idle.set()
        self._open = asyncio.Event()  # cleared while the task is being reloaded
        self._open.set()

    @property
    def task_id(self) -> str:
        return self.context.task_id

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def server_socket(self) -> Path | None:
        return self.spec.server_socket

    @property
    def server_port(self) -> int:
        return self.spec.args.port

    def _on_message(self, message: dict[str, Any]) -> None:
        limits = message.get(TASK_LIMITS)
        if isinstance(limits, dict):
            body = limits.get("maxRequestBody")
            self.max_request_body = body if is_int(body) and body > 0 else None
            return
        if "phaseDone" in message:
            label, round_ = (
                message.get("phaseLabel") or message["phaseDone"],
                message.get("roundNumber"),
            )
            if is_round(round_):  # (whatever else a task sends is no phase of ours)
                self._in_flight.discard((str(label), round_))
            if not self._in_flight:
                self._idle.set()
        self.scheduler.on_phase_done(message)

    async def _send(self, message: dict[str, Any]) -> bool:
        await self._open.wait()  # a reload finishes before the next phase goes out
        delivered = await self.process.send(message)
        # only a k2node task says when a phase is done (JavaScript tasks do not)
        if delivered and "functionCall" in message and not self.spec.javascript:
            label = message.get("phaseLabel") or message["functionCall"]
            self._in_flight.add((str(label), message["roundNumber"]))
            self._idle.clear()
        return delivered

    async def run(self, timers: bool) -> None:
        """Keep the process (and, with timers on, the timers) going until `stop()`. The
        timers outlive a process stopped for good: a list this node submitted still gets its
        payout, and settled payouts are still logged."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self.process.run(), name=f"process-{self.task_id}")
            if timers and not self._stopped:  # (a stop may come before this runs)
                self._timers_job = group.create_task(self._timers(), name=f"timers-{self.task_id}")
            if self._watch is not None:
                self._watch_job = group.create_task(
                    self._reloads(self._watch), name=f"reload-{self.task_id}"
                )

    def stop(self) -> None:
        self._stopped = True
        self.process.stop()
        for job in (self._timers_job, self._watch_job):
            if job is not None:
                job.cancel()

    # -- --reload: new code between phases ------------------------------------------------
    async def _reloads(self, folder: Path) -> None:
        log.info("task_sources_watched", task_id=self.task_id, folder=str(folder))
        async for changed in changed_sources(folder):
            await self.reload(changed)

    async def _new_process(self, reason: str) -> bool:
        """A process with the new code: the running one restarted, or, when the last one
        stopped for good (an edit that did not even import), a new one started."""
        process = self.process
        if (
            isinstance(process, KeptProcess)
            and process.stopped_for_good
            and self._group is not None
            and not self._stopped
        ):
            before = process.starts
            process.stopped_for_good = False
            self._group.create_task(process.run(), name=f"process-{self.task_id}")
            return await process.started_after(before)
        return await process.restart(reason)

    async def _phases_answered(self) -> bool:
        """Wait for the phases in flight to be answered, for at most RELOAD_WAIT_S; True if
        they were, or if the process is gone (what it was sent will never be answered)."""
        deadline = asyncio.get_running_loop().time() + RELOAD_WAIT_S
        while self._in_flight and self.process.running:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):  # (and look again whether it still runs)
                await asyncio.wait_for(self._idle.wait(), min(left, RELOAD_POLL_S))
        return True

    async def reload(self, changed: Path) -> None:
        """Restart the task process with its new code once its running phases are done,
        holding the next phase until the new process is up."""
        self._open.clear()
        try:
            log.info(
                "task_source_changed",
                task_id=self.task_id,
                file=str(changed),
                phases_running=sorted(self._in_flight),
            )
            if not await self._phases_answered():
                log.warning(
                    "task_reload_interrupts", task_id=self.task_id, phases=sorted(self._in_flight)
                )
            self._in_flight.clear()
            self._idle.set()
            started = time.monotonic()
            try:
                up = await self._new_process(f"{changed.name} changed")
            except TimeoutError:
                up = False
            log.info(
                "task_reloaded" if up else "task_reload_failed",
                task_id=self.task_id,
                file=str(changed),
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        finally:
            self._open.set()

    async def _timers(self) -> None:
        await self.process.started.wait()
        while True:
            try:
                await self.scheduler.run()
            except asyncio.CancelledError:
                raise
            except OSError:
                if not self.scheduler.faulted:  # (a K2 or disk outage has said so once)
                    log.exception("timers_error", task_id=self.task_id)
                await self._clock.sleep(TIMERS_RETRY_S)
            except Exception:
                log.exception("timers_error", task_id=self.task_id)
                await self._clock.sleep(TIMERS_RETRY_S)

    # -- what the scheduler leaves to its owner ---------------------------------------------
    async def round_opened(self, round_: int, state: dict[str, Any]) -> None:
        await self.payouts.settle(round_, state)
        self.watchdog.check(round_)
        if round_ % PRUNE_EVERY_ROUNDS == 0:
            self.context.agent.ledger.prune(self.task_id, round_ - KEEP_LEDGER_ROUNDS)
        if self._auto_claim > 0:
            await self._claim_if_due(round_)

    async def _claim_if_due(self, round_: int) -> None:
        agent = self.context.agent
        state = await agent.state({"is_available_balances_required": True})
        if int(state["available_balances"].get(agent.staking.pubkey, 0)) < self._auto_claim:
            return
        try:
            claimed = await agent.claim()
        except TransactionError as exc:
            self._events.warn("auto_claim_refused", task_id=self.task_id, error=str(exc))
            return
        self._events.emit(
            "rewards_claimed", task_id=self.task_id, round=round_, amount=claimed["claimed"]
        )

    async def payout_due(self, round_: int) -> None:
        await self.payouts.trigger_if_mine(round_)

    # -- Timer OFF: a developer calls each phase by hand --------------------------------------
    async def manual_phase(self, name: str, round_: int, retry: bool) -> dict[str, Any]:
        if name == PAYOUT:
            try:
                return await self.context.agent.payout(round_)
            except TransactionError as exc:
                return {"error": str(exc)}
        return {"delivered": await self._send(phase_message(Phase(name), round_, retry))}
