"""Per-task timers (Timer ON): turn slots and task state into phase messages, on time.

Each round the schedule is re-read from K2 and every deadline is the wall time of a slot,
so no error accumulates from sleeping. A phase is sent once its window has opened and only
while it is still open; the ledger remembers finished phases, so a restarted node sends what
is still owed and nothing that is done. The scheduler only keeps time: what a round's
opening means for payouts and the watchdog, and the payout itself, are its owner's.

Faults (a K2 that does not answer, a disk that refuses writes) are logged once where they
are met (`Outage`); here they cost no line of their own. While K2 is unreachable the timers
go on with the last task state they read, and skip the round's bookkeeping; a phase that
failed while a fault held, or a payout that could not be triggered, is sent again once the
fault clears, if its window is still open (else `phase_missed`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from k2node.contract.phases import PAYOUT, Phase, TimedPhase, phase_message, phases_of_round
from k2node.contract.rounds import Schedule
from k2node.contract.values import is_round
from k2node.node.agent import TaskAgent
from k2node.node.clock import Clock
from k2node.node.events import EventHub
from k2node.settlement.rpc import RpcSettlement

KEPT_DELAYS = 10_000  # dispatch delays kept: a long-running node keeps only the latest
# What a paused task is not sent: new work and its submission.
WORK_PHASES = frozenset({Phase.EXECUTE_TASK, Phase.SUBMIT_PAYLOAD})
# How long after a round opens its re-sync and bookkeeping wait, and a payout due then,
# at most a quarter slot.
BOOKKEEPING_DELAY_S = 0.02

Send = Callable[[dict[str, Any]], Awaitable[bool]]


class RoundOwner(Protocol):
    """What the scheduler leaves to the task it keeps time for."""

    async def round_opened(self, round_: int, state: dict[str, Any]) -> None: ...

    async def payout_due(self, round_: int) -> None: ...


class Scheduler:
    def __init__(
        self, clock: Clock, agent: TaskAgent, send: Send, owner: RoundOwner, events: EventHub
    ) -> None:
        self._clock = clock
        self._agent = agent
        self._send = send
        self._owner = owner
        self._events = events
        # dispatch delay after a window opens, the latest KEPT_DELAYS (metrics, benchmarks)
        self.delays_ms: deque[float] = deque(maxlen=KEPT_DELAYS)
        self._awake_at: float | None = None  # when the timers first ran
        self.paused = False  # the bounty cannot pay a round: no new work is sent
        settlement = agent.settlement
        self._k2 = settlement.outage if isinstance(settlement, RpcSettlement) else None
        self._faults = [f for f in (self._k2, agent.ledger.disk) if f is not None]
        # phases sent and not yet answered, with the faults begun by then
        self._sent: dict[tuple[str, int], tuple[TimedPhase, int]] = {}
        self._owed: asyncio.Queue[TimedPhase] = asyncio.Queue()  # to send once faults clear

    @property
    def task_id(self) -> str:
        return self._agent.task_id

    async def _state(self) -> dict[str, Any]:
        return await self._agent.state({"is_distribution_required": True})

    async def run(self) -> None:
        resending = asyncio.get_running_loop().create_task(
            self._resend_owed(), name=f"owed-{self.task_id}"
        )
        try:
            await self._rounds()
        finally:
            resending.cancel()

    async def _rounds(self) -> None:
        clock = self._clock
        if self._awake_at is None:
            self._awake_at = clock.time()
        state = await self._state()
        while True:
            schedule = Schedule.of(state)
            r = schedule.round_of(clock.current_slot())
            if r < 0:
                await clock.sleep_until_slot(schedule.starting_slot)
                state = await self._state()
                continue
            start = schedule.round_start(r)
            self._check_bounty(r, state)
            # The round's opening messages need only the schedule: they go out first, and
            # the re-sync with K2 and the bookkeeping follow.
            opened = [p for p in phases_of_round(r, state) if p.slot == start and not p.retry]
            for phase in opened:
                await self._run_phase(phase)
            # let every other task's opening messages out before this one's bookkeeping
            await clock.sleep(self._bookkeeping_delay_s())
            fresh = await self._fresh_state()
            if fresh is not None:
                state = fresh
                await self._bookkeeping(r, state)
            now = clock.current_slot()  # (a task that never answers leaves its phases here)
            self._sent = {k: v for k, v in self._sent.items() if v[0].deadline > now}
            for phase in phases_of_round(r, state):
                if phase not in opened:
                    await self._run_phase(phase)
            await clock.sleep_until_slot(Schedule.of(state).round_start(r + 1))

    # -- faults ---------------------------------------------------------------------------
    def _faults_begun(self) -> int:
        return sum(f.count for f in self._faults)

    @property
    def faulted(self) -> bool:
        """Whether a fault (K2 unreachable, the disk refusing writes) holds now."""
        return any(f.active for f in self._faults)

    async def _fresh_state(self) -> dict[str, Any] | None:
        """The task's state now; None while K2 cannot be read (the last state serves: the
        schedule does not change, and a known outage is not waited on here)."""
        if self._k2 is not None and self._k2.active:
            return None
        try:
            return await self._state()
        except OSError:  # K2Unreachable: its outage has said so
            return None

    async def _bookkeeping(self, r: int, state: dict[str, Any]) -> None:
        try:
            await self._owner.round_opened(r, state)
        except OSError as exc:  # a fault met midway: the next round does it
            if not self.faulted:
                self._events.warn(
                    "round_bookkeeping_failed", task_id=self.task_id, round=r, error=str(exc)
                )

    async def _resend_owed(self) -> None:
        """Each owed phase, once every fault has cleared, while its window is open."""
        clock = self._clock
        while True:
            phase = await self._owed.get()
            cleared = True
            for fault in self._faults:
                left = clock.wall_time_of_slot(phase.deadline) - clock.time()
                cleared = cleared and await fault.cleared(max(0.0, left))
            if cleared:
                await self._run_phase(phase, resent=True)
            else:
                self._missed(phase, clock.current_slot())

    async def _payout(self, phase: TimedPhase) -> None:
        try:
            await self._owner.payout_due(phase.round_)
        except OSError as exc:
            if self.faulted:
                self._owed.put_nowait(phase)
            else:
                self._events.warn(
                    "payout_failed", task_id=self.task_id, round=phase.round_, error=str(exc)
                )

    def _bookkeeping_delay_s(self) -> float:
        return min(BOOKKEEPING_DELAY_S, self._clock.slot_ms / 4000)

    def _check_bounty(self, r: int, state: dict[str, Any]) -> None:
        """A task whose bounty cannot pay a round gets no new work or submissions from this
        node (they would cost fees for nothing); audits, lists and payouts of the rounds
        already submitted go on. One line when it pauses, one when it resumes."""
        left, per_round = int(state["total_bounty_amount"]), int(state["bounty_amount_per_round"])
        paused = left < per_round
        if paused != self.paused:
            self.paused = paused
            event = "task_paused" if paused else "task_resumed"
            self._events.emit(
                event, task_id=self.task_id, round=r, bounty_left=left, bounty_per_round=per_round
            )

    async def _run_phase(self, phase: TimedPhase, resent: bool = False) -> None:
        clock = self._clock
        ledger = self._agent.ledger
        if self.paused and phase.kind in WORK_PHASES:
            return
        if phase.kind != PAYOUT and ledger.phase_done(self.task_id, phase.label, phase.round_):
            return
        await clock.sleep_until_slot(phase.slot)
        if phase.kind == PAYOUT:
            # a payout has the rest of the round: the phase messages due now go out first
            await clock.sleep(self._bookkeeping_delay_s())
        now = clock.current_slot()
        if now >= phase.deadline:
            self._missed(phase, now)
            return
        opened = clock.wall_time_of_slot(phase.slot)
        delay_ms = (clock.time() - opened) * 1000
        if phase.kind == PAYOUT:
            await self._payout(phase)
            return
        delivered = await self._send(phase_message(Phase(phase.kind), phase.round_, phase.retry))
        if delivered:
            self._sent[(phase.label, phase.round_)] = (phase, self._faults_begun())
        if self._awake_at is not None and opened >= self._awake_at and not resent:
            # (a window that opened before the timers ran is not: its delay is not theirs)
            self.delays_ms.append(delay_ms)
        # logged after the other tasks' messages due now have left: the log can wait
        self._events.emit_soon(
            "phase_sent",
            task_id=self.task_id,
            round=phase.round_,
            phase=phase.label,
            delivered=delivered,
            delay_ms=round(delay_ms, 3),
            **({"resent": True} if resent else {}),
        )

    def _missed(self, phase: TimedPhase, now: int) -> None:
        self._events.warn(
            "phase_missed",
            task_id=self.task_id,
            round=phase.round_,
            phase=phase.label,
            window_end=phase.deadline,
            slot=now,
        )

    def on_phase_done(self, reply: dict[str, Any]) -> None:
        """A k2node task's reply: remember finished phases and log the outcome."""
        if "phaseDone" not in reply:  # another message on the channel (a heartbeat, say)
            return
        round_ = reply.get("roundNumber")
        label = reply.get("phaseLabel") or reply.get("phaseDone")
        if not isinstance(label, str) or not is_round(round_):
            return
        sent = self._sent.pop((label, round_), None)
        if reply.get("ok"):
            # a disk refusing it has said so once; the phase is done all the same
            with contextlib.suppress(OSError):
                self._agent.ledger.mark_phase(self.task_id, label, round_, "done")
            self._events.emit(
                "phase_done", task_id=self.task_id, round=round_, phase=label, ms=reply.get("ms")
            )
            return
        self._events.warn(
            "phase_failed",
            task_id=self.task_id,
            round=round_,
            phase=label,
            ms=reply.get("ms"),
            error=str(reply.get("error"))[:500],
        )
        if sent is None:
            return
        # a full disk may have failed the task's own writes first: the ledger looks
        faulted = self._faults_begun() > sent[1] or not self._agent.ledger.writable()
        if faulted or self.faulted:
            self._owed.put_nowait(sent[0])  # failed by a fault: again once it clears
