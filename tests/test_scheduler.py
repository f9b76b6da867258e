"""The timers in virtual time: which phase goes out in which slot, a late start, a failed
payout's retry, and no drift over 1,000 rounds (milliseconds of test time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from k2node.contract.units import SlotClock
from k2node.crypto import Keypair
from k2node.node import scheduler as scheduler_module
from k2node.node.agent import TaskAgent
from k2node.node.clock import SlotTimer
from k2node.node.events import EventHub
from k2node.node.ledger import Ledger
from k2node.node.scheduler import Scheduler
from k2node.settlement.base import SlotClocked
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import TASK_ARGS, FakeClock, create_task, funded, send, stake

ROUND, SUBMISSION, AUDIT = TASK_ARGS["round_time"], TASK_ARGS["submission_window"], 8


class _Enough(Exception):
    pass


class Recorder:
    """Sends and round bookkeeping as the scheduler hands them out, with the slot of each."""

    def __init__(self, k2: LocalK2, stop_at_round: int) -> None:
        self._k2 = k2
        self._stop_at = stop_at_round
        self.sent: list[tuple[int, str, int, str]] = []  # slot, functionCall, round, label
        self.opened: list[int] = []
        self.retried: list[int] = []  # rounds sent with isPreviousRoundFailed

    async def send(self, message: dict[str, Any]) -> bool:
        kind, round_ = message["functionCall"], message["roundNumber"]
        self.sent.append((self._k2.current_slot(), kind, round_, message["phaseLabel"]))
        if message.get("isPreviousRoundFailed"):
            self.retried.append(round_)
        return True

    async def round_opened(self, round_: int, state: dict[str, Any]) -> None:
        if round_ >= self._stop_at:
            raise _Enough
        self.opened.append(round_)

    async def payout_due(self, round_: int) -> None:
        self.sent.append((self._k2.current_slot(), "payout", round_, "payout"))


@pytest.fixture
async def agent(tmp_path: Path, k2: LocalK2) -> AsyncIterator[TaskAgent]:
    store = Store.open(tmp_path / "node-db")
    task_id = await create_task(k2, Keypair.generate())
    me = Keypair.generate()
    yield TaskAgent(task_id, k2, Ledger(store, k2), me, await funded(k2), tmp_path / "task")
    store.close()


async def _run(agent: TaskAgent, clock: FakeClock, recorder: Recorder) -> Scheduler:
    k2 = agent.settlement
    scheduler = Scheduler(clock.timer(k2.slots), agent, recorder.send, recorder, EventHub())
    with pytest.raises(_Enough):
        await asyncio.wait_for(scheduler.run(), 60)
    return scheduler


def _expected(r: int, start: int) -> set[tuple[int, str, int, str]]:
    """The contract's phase table for round r (K2-CONTRACT: "The phase schedule")."""
    s = start + r * ROUND
    due = [(s, "executeTask", r)]
    if r >= 1:
        due += [(s, "submitPayload", r - 1), (s + SUBMISSION, "auditPayload", r - 1)]
    if r >= 2:
        due += [
            (s, "generateAndSubmitDistributionList", r - 2),
            (s + SUBMISSION, "distributionListAudit", r - 2),
            (s + SUBMISSION + AUDIT, "payout", r - 2),
        ]
    return {(slot, kind, n, kind) for slot, kind, n in due}


async def test_each_phase_goes_out_at_its_window_start(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    start = (await agent.state())["starting_slot"]
    recorder = Recorder(k2, stop_at_round=5)
    scheduler = await _run(agent, clock, recorder)
    # round 5 opened before the recorder stopped it: its opening messages went out
    opening = {e for e in _expected(5, start) if e[0] == start + 5 * ROUND}
    assert set(recorder.sent) == set().union(*(_expected(r, start) for r in range(5))) | opening
    assert len(recorder.sent) == len(set(recorder.sent))  # nothing twice
    assert recorder.opened == [0, 1, 2, 3, 4]
    assert scheduler.delays_ms and max(scheduler.delays_ms) < 0.01


async def test_finished_phases_are_not_sent_again(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    for label, round_ in (("executeTask", 2), ("submitPayload", 1), ("auditPayload", 2)):
        agent.ledger.mark_phase(agent.task_id, label, round_, "done")
    recorder = Recorder(k2, stop_at_round=4)
    await _run(agent, clock, recorder)
    sent = {(kind, r) for _, kind, r, _ in recorder.sent}
    assert ("executeTask", 2) not in sent and ("submitPayload", 1) not in sent
    assert ("auditPayload", 2) not in sent and ("auditPayload", 1) in sent


async def test_a_late_start_sends_what_is_still_open_and_reports_the_rest(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    start = (await agent.state())["starting_slot"]
    late = start + 2 * ROUND + SUBMISSION + 2  # round 2's audit window
    clock.to_slot(k2, late)
    recorder = Recorder(k2, stop_at_round=4)
    with capture_logs() as logs:
        scheduler = await _run(agent, clock, recorder)
    missed = {(e["phase"], e["round"]) for e in logs if e["event"] == "phase_missed"}
    assert missed == {("submitPayload", 1), ("generateAndSubmitDistributionList", 0)}
    round_two = [e for e in recorder.sent if e[0] < start + 3 * ROUND]
    assert {e[:3] for e in round_two} == {
        (late, "executeTask", 2),
        (late, "auditPayload", 1),
        (late, "distributionListAudit", 0),
        (start + 2 * ROUND + SUBMISSION + AUDIT, "payout", 0),
    }
    assert _expected(3, start) <= set(recorder.sent)
    # the late ones are no timer delay; the ones after are on time
    assert len(scheduler.delays_ms) == len(recorder.sent) - 4 - 1  # less round 2 and a payout
    assert max(scheduler.delays_ms) < 0.01


async def test_a_failed_payout_is_retried_in_the_next_rounds_windows(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    task_id, start = agent.task_id, (await agent.state())["starting_slot"]
    a, b, c = Keypair.generate(), Keypair.generate(), Keypair.generate()
    for key in (a, b, c):
        await stake(k2, key, task_id)
    clock.to_slot(k2, start + ROUND + 1)
    for key in (a, b, c):
        await send(k2, key, "SubmitTask", task_id, submission="v", round=0)
    clock.to_slot(k2, start + 2 * ROUND + 1)
    dist = {a.pubkey: 1, b.pubkey: 1, c.pubkey: 1}
    await send(k2, a, "UploadDistributionList", task_id, list=dist, round=0)
    await send(k2, a, "SubmitDistributionList", task_id, round=0)
    clock.to_slot(k2, start + 2 * ROUND + SUBMISSION + 1)
    for voter in (b, c):  # a trigger, then a false vote: the list is voted down
        await send(
            k2, voter, "AuditDistribution", task_id, candidate=a.pubkey, is_valid=False, round=0
        )
    clock.to_slot(k2, start + 2 * ROUND + SUBMISSION + AUDIT + 1)
    await send(k2, a, "Payout", task_id, round=0)
    state = await agent.state({"is_distribution_required": True})
    assert state["distributions_audit_record"] == {"0": "PayoutFailed"}
    # the timers learn it from K2 when round 3 opens, and retry in its windows
    recorder = Recorder(k2, stop_at_round=4)
    await _run(agent, clock, recorder)
    s3 = start + 3 * ROUND
    generate, audit = "generateAndSubmitDistributionList", "distributionListAudit"
    assert {
        (s3, generate, 0, f"{generate}-retry"),  # remembered apart from the first attempt
        (s3 + SUBMISSION, audit, 0, f"{audit}-retry"),
        (s3 + SUBMISSION + AUDIT, "payout", 0, "payout"),
    } <= set(recorder.sent)
    assert _expected(3, start) <= set(recorder.sent)  # besides round 3's own
    assert recorder.retried == [0]


async def test_no_drift_over_a_thousand_rounds(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    start = (await agent.state())["starting_slot"]
    recorder = Recorder(k2, stop_at_round=1000)
    scheduler = await _run(agent, clock, recorder)
    executed = [(slot, r) for slot, kind, r, _ in recorder.sent if kind == "executeTask"]
    assert executed == [(start + r * ROUND, r) for r in range(1001)]
    assert set(recorder.sent) >= _expected(999, start)
    assert len(scheduler.delays_ms) == len(recorder.sent) - 998  # every phase but payouts
    assert max(scheduler.delays_ms) < 0.01


async def test_a_long_running_scheduler_keeps_only_its_latest_delays(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "KEPT_DELAYS", 40)
    recorder = Recorder(k2, stop_at_round=30)
    scheduler = await _run(agent, clock, recorder)
    assert len(recorder.sent) - 29 > 40  # more phases were sent than are kept
    assert len(scheduler.delays_ms) == 40


async def test_the_slot_timer_wakes_in_the_slot_it_waits_for_not_before() -> None:
    timer = SlotTimer(SlotClocked(SlotClock(time.time(), 100.0)))
    now = timer.current_slot()
    assert await timer.sleep_until_slot(now) is False  # already begun: no wait
    for target in (now + 1, now + 3):
        assert await timer.sleep_until_slot(target) is True
        late_s = timer.time() - timer.wall_time_of_slot(target)
        assert timer.current_slot() >= target and 0 <= late_s < 0.1
