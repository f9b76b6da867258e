"""What a round's opening means beside the timers: payouts triggered and logged once, and
the watchdog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.agent import TaskAgent
from k2node.node.events import EventHub
from k2node.node.ledger import CONFIRMED, Action, Ledger
from k2node.node.payouts import WATCHDOG_ROUNDS, Payouts, Watchdog
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import FakeClock, create_task, funded, send, stake


@pytest.fixture
async def agent(tmp_path: Path, k2: LocalK2) -> AsyncIterator[TaskAgent]:
    store = Store.open(tmp_path / "node-db")
    task_id = await create_task(k2, Keypair.generate(), bounty_amount_per_round=4 * ROE_PER_KOII)
    me = Keypair.generate()
    await stake(k2, me, task_id)
    yield TaskAgent(task_id, k2, Ledger(store, k2), me, await funded(k2), tmp_path / "task")
    store.close()


async def _state(agent: TaskAgent) -> dict[str, object]:
    return await agent.state({"is_distribution_required": True})


async def test_a_payout_its_submitter_left_undone_is_triggered_and_logged_once(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    task_id, me = agent.task_id, agent.staking.pubkey
    peer = Keypair.generate()
    await stake(k2, peer, task_id)
    clock.to_slot(k2, 21)
    await agent.submit("mine", 0)
    await send(k2, peer, "SubmitTask", task_id, submission="theirs", round=0)
    clock.to_slot(k2, 41)
    dist = {me: 2 * ROE_PER_KOII, peer.pubkey: 2 * ROE_PER_KOII}
    await send(k2, peer, "UploadDistributionList", task_id, list=dist, round=0)
    await send(k2, peer, "SubmitDistributionList", task_id, round=0)
    payouts = Payouts(agent, EventHub())
    clock.to_slot(k2, 57)  # the payout window of round 0 is open
    with capture_logs() as logs:
        await payouts.trigger_if_mine(0)  # not this node's list: it leaves it to the peer
        await payouts.settle(3, await _state(agent))  # a round later: still the peer's turn
        assert not [e for e in logs if e["event"].startswith("payout_")]
        clock.to_slot(k2, 81)
        await payouts.settle(4, await _state(agent))  # two rounds later: anyone's
        await payouts.settle(4, await _state(agent))
        await payouts.settle(5, await _state(agent))
    events = [e["event"] for e in logs]
    assert events.count("payout_triggered_for_absent_submitter") == 1
    settled = [e for e in logs if e["event"] == "payout_settled"]
    assert len(settled) == 1  # logged once, however often the round is looked at
    assert settled[0]["round"] == 0 and settled[0]["reward"] == 2 * ROE_PER_KOII
    assert settled[0]["submitted"] is True
    assert (await _state(agent))["distributions_audit_record"] == {"0": "PayoutSuccessful"}


async def test_a_round_this_node_took_no_part_in_is_settled_as_not_submitted(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    peer = Keypair.generate()
    await stake(k2, peer, agent.task_id)
    clock.to_slot(k2, 21)  # this node started too late for round 0: only the peer submits
    await send(k2, peer, "SubmitTask", agent.task_id, submission="theirs", round=0)
    clock.to_slot(k2, 41)
    dist = {peer.pubkey: 4 * ROE_PER_KOII}
    await send(k2, peer, "UploadDistributionList", agent.task_id, list=dist, round=0)
    await send(k2, peer, "SubmitDistributionList", agent.task_id, round=0)
    clock.to_slot(k2, 57)
    await send(k2, peer, "Payout", agent.task_id, round=0)
    with capture_logs() as logs:
        await Payouts(agent, EventHub()).settle(3, await _state(agent))
    settled = [e for e in logs if e["event"] == "payout_settled"]
    assert [(e["round"], e["submitted"], e["amount"]) for e in settled] == [(0, False, 0)]


def _confirm_submission(agent: TaskAgent, round_: int) -> None:
    agent.ledger.store.put(Ledger.key(agent.task_id, Action.SUBMIT, round_), {"status": CONFIRMED})


async def test_the_watchdog_restarts_a_task_whose_submissions_fell_behind(
    agent: TaskAgent,
) -> None:
    reasons: list[str] = []
    watchdog = Watchdog(agent, reasons.append)
    for r in range(10, 10 + WATCHDOG_ROUNDS + 2):  # a task just started gets time
        watchdog.check(r)
    assert reasons == []
    watchdog.check(15)  # five rounds and not one submission
    assert reasons == ["latest submission is for round None, now round 15"]
    for r in range(16, 21):  # watched afresh from the restart
        _confirm_submission(agent, r - 1)
        watchdog.check(r)
    assert len(reasons) == 1
    watchdog.check(20 + WATCHDOG_ROUNDS + 1)  # the last one, round 19, is now too old
    assert len(reasons) == 2 and "round 19" in reasons[1]
