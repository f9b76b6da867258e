"""TaskAgent: reads in the contract's shapes, bad requests refused before anything is signed,
and actions keyed by round and attempt so a retry is not mistaken for a repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.agent import ActionError, TaskAgent
from k2node.node.ledger import Ledger
from k2node.settlement.local import LocalK2
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from k2node.store import Store
from tests.conftest import FakeClock, create_task, send, stake


@pytest.fixture
async def agent(tmp_path: Path, k2: LocalK2) -> AsyncIterator[TaskAgent]:
    store = Store.open(tmp_path / "node-db")
    manager, me = Keypair.generate(), Keypair.generate()
    task_id = await create_task(k2, manager)
    yield TaskAgent(task_id, k2, Ledger(store, k2), me, manager, tmp_path / "task")
    store.close()


async def test_reads_answer_in_the_contract_shapes(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    clock.to_slot(k2, 45)
    assert await agent.current_round() == 2
    assert (await agent.schedule()).round_time == 20
    info = await agent.submission_info(1)
    assert info == {"submissions": {"1": {}}, "submissions_audit_trigger": {"1": {}}}
    dist = await agent.distribution_info(0)
    assert set(dist) == {
        "distribution_rewards_submission",
        "distributions_audit_trigger",
        "distributions_audit_record",
    }
    assert await agent.distribution_list(Keypair.generate().pubkey, 0) is None
    assert agent.db_path == agent.base_path / "db"


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [
        ("submit", ("v", -1), "round"),
        ("submit", ("v", True), "round"),
        ("submit", ("v", "1"), "round"),
        ("submit", (5, 0), "string"),
        ("submit", ("é" * 257, 0), "514 bytes"),
        ("audit", ("not a key", False, 0), "base58"),
        ("audit", (Keypair.generate().pubkey, "no", 0), "isValid"),
        ("audit_distribution", ({"_bn": "zz"}, True, 0), "public key"),
        ("upload_distribution", ([1, 2], 0), "object"),
        ("payout", (None,), "round"),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_signed(
    agent: TaskAgent, k2: LocalK2, call: str, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ActionError, match=message):
        await getattr(agent, call)(*args)
    assert set(k2.tx_count) == {"CreateTask", "System"}  # the task's creation, nothing more
    assert agent.ledger.store.keys("ledger/") == []


async def test_stake_is_topped_up_once_and_claim_of_nothing_is_zero(
    agent: TaskAgent, k2: LocalK2
) -> None:
    first = await agent.stake(2 * 10**9, "http://127.0.0.1:1")
    assert first["stake"] == 2 * 10**9
    assert (await agent.stake(2 * 10**9, "http://127.0.0.1:1")).get("already") is True
    assert k2.tx_count["Stake"] == 1
    assert await agent.claim() == {"claimed": 0}


async def test_a_withdrawn_stake_is_staked_again_before_the_main_wallet_pays(
    agent: TaskAgent, k2: LocalK2, tmp_path: Path
) -> None:
    url, me, main = "http://127.0.0.1:1", agent.staking.pubkey, agent.main.pubkey
    await agent.stake(2 * ROE_PER_KOII, url)
    reserve = await k2.get_balance(me)  # what opening the staking account left beside the stake
    await send(k2, agent.staking, "Withdraw", agent.task_id)
    assert await k2.get_balance(me) == reserve + 2 * ROE_PER_KOII
    fee = 2 * LAMPORTS_PER_SIGNATURE
    for koii, from_main in ((1, 0), (3, 2)):  # then 1 KOII left of it, and 2 more needed
        task_id = await create_task(k2, Keypair.generate())
        other = TaskAgent(task_id, k2, agent.ledger, agent.staking, agent.main, tmp_path / task_id)
        before = await k2.get_balance(main)
        assert (await other.stake(koii * ROE_PER_KOII, url))["stake"] == koii * ROE_PER_KOII
        assert await k2.get_balance(main) == before - from_main * ROE_PER_KOII - fee
    assert await k2.get_balance(me) == reserve


async def test_a_retried_distribution_is_a_new_action_not_a_repeat(
    agent: TaskAgent, k2: LocalK2, clock: FakeClock
) -> None:
    task_id = agent.task_id
    await agent.stake(2 * 10**9, "http://127.0.0.1:1")
    peers = [Keypair.generate(), Keypair.generate()]
    for peer in peers:
        await stake(k2, peer, task_id)
    clock.to_slot(k2, 21)
    await agent.submit("mine", 0)
    for peer in peers:
        await send(k2, peer, "SubmitTask", task_id, submission="theirs", round=0)
    everyone = [agent.staking.pubkey, *(p.pubkey for p in peers)]
    clock.to_slot(k2, 41)
    await agent.upload_distribution(dict.fromkeys(everyone, 1), 0)
    await agent.submit_distribution(0)
    assert (await agent.submit_distribution(0)).get("already") is True  # asked twice: once
    clock.to_slot(k2, 49)
    for peer in peers:
        mine = agent.staking.pubkey
        await send(k2, peer, "AuditDistribution", task_id, candidate=mine, is_valid=False, round=0)
    clock.to_slot(k2, 57)
    await agent.payout(0)
    assert (await agent.state({"is_distribution_required": True}))[
        "distributions_audit_record"
    ] == {"0": "PayoutFailed"}
    # the retry (attempt 1) is sent although attempt 0 of the same round is confirmed
    winner = peers[0]
    clock.to_slot(k2, 61)
    await send(
        k2, winner, "UploadDistributionList", task_id, list=dict.fromkeys(everyone, 1), round=0
    )
    await send(k2, winner, "SubmitDistributionList", task_id, round=0)
    clock.to_slot(k2, 77)
    result = await agent.payout(0)
    assert not result.get("already") and await k2.transaction_applied(result["signature"])
    state = await agent.state({"is_distribution_required": True})
    assert state["distributions_audit_record"] == {"0": "PayoutSuccessful"}
    keys = agent.ledger.store.keys(f"ledger/{task_id}/payout/")
    assert [k.rsplit("/", 1)[1] for k in keys] == ["0", "1"]
