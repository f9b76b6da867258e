"""Per-task timers (Timer ON): turn slots and task state into phase messages, on time.

Each round the schedule is re-read from K2 and every deadline is the wall time of a slot,
so no error accumulates from sleeping. A phase is sent once its window has opened and only
while it is still open; the ledger remembers finished phases, so a restarted node sends what
is still owed and nothing that is done.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from k2node.node.agent import TaskAgent
from k2node.node.events import EventHub
from k2node.node.ledger import Ledger, latest_confirmed_round
from k2node.protocol import Phase
from k2node.rounds import MAX_DISTRIBUTION_RETRIES, Schedule
from k2node.settlement.base import TransactionError

# The watchdog restarts a task whose latest submission is older than this many rounds.
WATCHDOG_ROUNDS = 3
TIMER_SLACK_S = 0.0015
# How long after a round opens its re-sync and bookkeeping wait, at most a quarter slot.
BOOKKEEPING_DELAY_S = 0.02

Send = Callable[[dict[str, Any]], Awaitable[bool]]


@dataclass(frozen=True)
class _Event:
    slot: int  # when it may start
    deadline: int  # first slot at which it is too late
    kind: str  # a Phase value, or "payout"
    round_: int
    retry: bool = False

    @property
    def label(self) -> str:
        return f"{self.kind}{'-retry' if self.retry else ''}"


class Scheduler:
    def __init__(
        self,
        agent: TaskAgent,
        ledger: Ledger,
        send: Send,
        restart_task: Callable[[str], None] | None = None,
        events: EventHub | None = None,
    ) -> None:
        self._agent = agent
        self._ledger = ledger
        self._send = send
        self._restart_task = restart_task
        self._events = events or EventHub()
        self._started_round: int | None = None
        self.delays_ms: list[float] = []  # dispatch delay after a window opens (metrics)

    @property
    def task_id(self) -> str:
        return self._agent.task_id

    async def _sleep_until_slot(self, slot: int) -> bool:
        """Sleep until `slot` begins; False when it had already begun."""
        settlement = self._agent.settlement
        if settlement.current_slot() >= slot:
            return False
        deadline = settlement.wall_time_of_slot(slot)
        # the loop's timers wake up to a millisecond late (epoll's resolution): sleep to just
        # before the deadline, then yield until it has passed
        early = deadline - time.time() - TIMER_SLACK_S
        if early > 0:
            await asyncio.sleep(early)
        while settlement.current_slot() < slot:  # noqa: ASYNC110 - a deadline, not a flag
            await asyncio.sleep(0)
        return True

    def events_for_round(self, r: int, state: dict[str, Any]) -> list[_Event]:
        s = Schedule.of(state)
        start = s.round_start(r)
        sub_end = start + s.submission_window
        audit_end = sub_end + s.audit_window
        next_round = s.round_start(r + 1)
        events = [_Event(start, next_round, Phase.EXECUTE_TASK, r)]
        if r >= 1:
            events.append(_Event(start, sub_end, Phase.SUBMIT_PAYLOAD, r - 1))
            events.append(_Event(sub_end, audit_end, Phase.AUDIT_PAYLOAD, r - 1))
        if r >= 2:
            events.append(_Event(start, sub_end, Phase.GENERATE_DISTRIBUTION, r - 2))
            events.append(_Event(sub_end, audit_end, Phase.DISTRIBUTION_AUDIT, r - 2))
            events.append(_Event(audit_end, next_round, "payout", r - 2))
        records = state.get("distributions_audit_record", {})
        retries = min(MAX_DISTRIBUTION_RETRIES, int(state["allowed_failed_distributions"]))
        if r >= 3 and retries >= 1 and records.get(str(r - 3)) == "PayoutFailed":
            events.append(_Event(start, sub_end, Phase.GENERATE_DISTRIBUTION, r - 3, True))
            events.append(_Event(sub_end, audit_end, Phase.DISTRIBUTION_AUDIT, r - 3, True))
            events.append(_Event(audit_end, next_round, "payout", r - 3, True))
        return sorted(events, key=lambda e: e.slot)

    async def run(self) -> None:
        agent = self._agent
        state = await agent.state({"is_distribution_required": True})
        while True:
            schedule = Schedule.of(state)
            r = schedule.round_of(agent.settlement.current_slot())
            if r < 0:
                await self._sleep_until_slot(schedule.starting_slot)
                state = await agent.state({"is_distribution_required": True})
                continue
            if self._started_round is None:
                self._started_round = r
            start = schedule.round_start(r)
            # The round's opening messages need only the schedule: they go out first, and
            # the re-sync with K2 and the bookkeeping follow.
            opened = [e for e in self.events_for_round(r, state) if e.slot == start and not e.retry]
            for event in opened:
                await self._run_event(event)
            # let every other task's opening messages out before this one's bookkeeping
            await asyncio.sleep(min(BOOKKEEPING_DELAY_S, agent.settlement.slot_ms / 4000))
            state = await agent.state({"is_distribution_required": True})
            await self._bookkeeping(r, state)
            for event in self.events_for_round(r, state):
                if event not in opened:
                    await self._run_event(event)
            await self._sleep_until_slot(Schedule.of(state).round_start(r + 1))

    async def _bookkeeping(self, r: int, state: dict[str, Any]) -> None:
        await self._check_payouts(r, state)
        self._watchdog(r)
        self._ledger.prune(self.task_id, r - 20)

    async def _run_event(self, event: _Event) -> None:
        settlement = self._agent.settlement
        if event.kind != "payout" and self._ledger.phase_done(
            self.task_id, event.label, event.round_
        ):
            return
        waited = await self._sleep_until_slot(event.slot)
        now = settlement.current_slot()
        if now >= event.deadline:
            self._events.warn(
                "phase_missed",
                task_id=self.task_id,
                round=event.round_,
                phase=event.label,
                window_end=event.deadline,
                slot=now,
            )
            return
        delay_ms = (time.time() - settlement.wall_time_of_slot(event.slot)) * 1000
        if event.kind == "payout":
            await self._payout(event.round_)
            return
        # phaseLabel is echoed back by k2node tasks; JavaScript tasks ignore it.
        message: dict[str, Any] = {
            "functionCall": event.kind,
            "roundNumber": event.round_,
            "phaseLabel": event.label,
        }
        if event.kind == Phase.GENERATE_DISTRIBUTION:
            message["isPreviousRoundFailed"] = event.retry
        delivered = await self._send(message)
        if waited:  # a phase sent late because the node started late is no timer delay
            self.delays_ms.append(delay_ms)
        # logged after the other tasks' messages due now have left: the log can wait
        asyncio.get_running_loop().call_soon(
            functools.partial(
                self._events.emit,
                "phase_sent",
                task_id=self.task_id,
                round=event.round_,
                phase=event.label,
                delivered=delivered,
                delay_ms=round(delay_ms, 3),
            )
        )

    def on_phase_done(self, reply: dict[str, Any]) -> None:
        """A k2node task's reply: remember finished phases and log the outcome."""
        round_ = reply.get("roundNumber")
        label = reply.get("phaseLabel") or reply.get("phaseDone")
        if not isinstance(label, str) or not isinstance(round_, int):
            return
        if reply.get("ok"):
            self._ledger.mark_phase(self.task_id, label, round_, "done")
            self._events.emit(
                "phase_done", task_id=self.task_id, round=round_, phase=label, ms=reply.get("ms")
            )
        else:
            self._events.warn(
                "phase_failed",
                task_id=self.task_id,
                round=round_,
                phase=label,
                ms=reply.get("ms"),
                error=str(reply.get("error"))[:500],
            )

    async def _payout(self, round_: int) -> None:
        """Trigger the payout of `round_` if this node submitted its distribution list."""
        info = await self._agent.distribution_info(round_)
        submitters = info["distribution_rewards_submission"].get(str(round_), {})
        record = info["distributions_audit_record"].get(str(round_))
        me = self._agent.staking.pubkey
        if record == "PayoutSuccessful":
            return
        if not submitters or list(submitters)[-1] != me:
            return
        try:
            result = await self._agent.payout(round_)
        except TransactionError as exc:
            self._events.warn("payout_refused", task_id=self.task_id, round=round_, error=str(exc))
            return
        self._events.emit(
            "payout_triggered", task_id=self.task_id, round=round_, record=result.get("record")
        )

    async def _check_payouts(self, r: int, state: dict[str, Any]) -> None:
        """Log each settled payout once, with this node's reward or slash; and trigger a
        payout its submitter left undone for a whole round (any staked node may)."""
        me = self._agent.staking.pubkey
        records = state.get("distributions_audit_record", {})
        lists = state.get("distribution_rewards_submission", {})
        for n in range(max(0, r - 5), r - 2):
            submitters = list(lists.get(str(n), {}))
            record = records.get(str(n))
            if record is None and submitters and n <= r - 4:
                try:
                    await self._agent.payout(n)
                    self._events.emit(
                        "payout_triggered_for_absent_submitter", task_id=self.task_id, round=n
                    )
                except TransactionError as exc:
                    self._events.warn(
                        "payout_refused", task_id=self.task_id, round=n, error=str(exc)
                    )
                continue
            if record is None or not submitters:
                continue
            key = f"logged/{self.task_id}/{n:010d}/payout-{record}"
            if not self._ledger.once(key):
                continue
            amount = 0
            if record == "PayoutSuccessful":
                dist = await self._agent.distribution_list(submitters[-1], n) or {}
                amount = int(dist.get(me, 0))
            self._events.emit(
                "payout_settled",
                task_id=self.task_id,
                round=n,
                staking_key=me,
                outcome=record,
                amount=amount,
                reward=max(amount, 0),
                slash=max(-amount, 0),
            )

    def _watchdog(self, r: int) -> None:
        if self._restart_task is None or self._started_round is None:
            return
        if r - self._started_round <= WATCHDOG_ROUNDS + 1:
            return
        latest = latest_confirmed_round(self._ledger.store, self.task_id, "submit")
        if latest is None or r - 1 - latest > WATCHDOG_ROUNDS:
            self._started_round = r
            self._restart_task(f"latest submission is for round {latest}, now round {r}")
