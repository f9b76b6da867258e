"""The contract's settlement rules, one by one, on the embedded local K2 with a hand clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.settlement.base import DuplicateTransaction, TransactionError, sign_tx
from k2node.settlement.local import LocalK2
from k2node.settlement.round_ix import KEEP_ROUNDS
from tests.conftest import TASK_ARGS, FakeClock, create_task, send, stake

# round_time 20, submission_window 8, audit_window 8 (slots of one second):
# round N is submitted in [S(N+1), +8), audited in [S(N+1)+8, +8),
# its list goes in [S(N+2), +8), is audited in [S(N+2)+8, +8); payout from S(N+2)+16.


@pytest.fixture
def keys() -> dict[str, Keypair]:
    return {name: Keypair.generate() for name in ("manager", "a", "b", "c", "d")}


async def _staked_task(k2: LocalK2, keys: dict[str, Keypair], **overrides: Any) -> str:
    task_id = await create_task(k2, keys["manager"], **overrides)
    for name in ("a", "b", "c", "d"):
        await stake(k2, keys[name], task_id)
    return task_id


async def _submit_all(
    k2: LocalK2, clock: FakeClock, keys: dict[str, Keypair], task_id: str, round_: int
) -> None:
    clock.to_slot(k2, 20 * (round_ + 1))
    for name in ("a", "b", "c", "d"):
        await send(k2, keys[name], "SubmitTask", task_id, submission=f"v-{name}", round=round_)


async def test_submission_only_in_its_window(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    clock.to_slot(k2, 19)
    with pytest.raises(TransactionError, match=r"accepted in slots \[20, 28\)"):
        await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=0)
    clock.to_slot(k2, 20)
    await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=0)
    with pytest.raises(TransactionError, match="already submitted"):
        await send(k2, keys["a"], "SubmitTask", task_id, submission="y", round=0)
    clock.to_slot(k2, 27)
    await send(k2, keys["b"], "SubmitTask", task_id, submission="x", round=0)
    clock.to_slot(k2, 28)
    with pytest.raises(TransactionError, match="accepted in slots"):
        await send(k2, keys["c"], "SubmitTask", task_id, submission="x", round=0)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert list(state["submissions"]["0"]) == [keys["a"].pubkey, keys["b"].pubkey]
    assert state["submissions"]["0"][keys["a"].pubkey] == {
        "submission_value": "x",
        "slot": 20,
        "round": 0,
    }


async def test_submission_size_limit_is_512_bytes(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    clock.to_slot(k2, 20)
    with pytest.raises(TransactionError, match="513 bytes"):
        await send(k2, keys["a"], "SubmitTask", task_id, submission="é" * 256 + "x", round=0)
    await send(k2, keys["a"], "SubmitTask", task_id, submission="é" * 256, round=0)
    with pytest.raises(TransactionError, match="must be a string"):
        await send(k2, keys["b"], "SubmitTask", task_id, submission=12, round=0)


async def test_forged_and_tampered_transactions_are_refused(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await _staked_task(k2, keys)
    clock.to_slot(k2, 20)
    forged = sign_tx(keys["b"], "SubmitTask", task_id, {"submission": "x", "round": 0}, 20)
    forged["signer"] = keys["a"].pubkey  # b pretends to be a
    with pytest.raises(TransactionError, match="invalid signature"):
        await k2.send(forged)
    tampered = sign_tx(keys["a"], "SubmitTask", task_id, {"submission": "x", "round": 0}, 20)
    tampered["args"]["submission"] = "y"
    with pytest.raises(TransactionError, match="invalid signature"):
        await k2.send(tampered)
    for junk in ({}, {"ix": "SubmitTask"}, [], "tx"):
        with pytest.raises(TransactionError, match="malformed"):
            await k2.send(junk)  # type: ignore[arg-type]
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert state["submissions"] == {}


async def test_replayed_and_expired_transactions_are_refused(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await _staked_task(k2, keys)
    clock.to_slot(k2, 20)
    tx = sign_tx(keys["a"], "SubmitTask", task_id, {"submission": "x", "round": 0}, 20)
    await k2.send(tx)
    with pytest.raises(DuplicateTransaction):
        await k2.send(tx)
    assert await k2.transaction_applied(tx["signature"])
    old = sign_tx(keys["b"], "SubmitTask", task_id, {"submission": "x", "round": 0}, 0)
    clock.to_slot(k2, 200)
    with pytest.raises(TransactionError, match="expired"):
        await k2.send(old)


async def test_unstaked_key_cannot_submit_or_vote(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    stranger = Keypair.generate()
    clock.to_slot(k2, 20)
    with pytest.raises(TransactionError, match="not staked"):
        await send(k2, stranger, "SubmitTask", task_id, submission="x", round=0)
    await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=0)
    clock.to_slot(k2, 28)
    with pytest.raises(TransactionError, match="not staked"):
        await send(
            k2,
            stranger,
            "AuditSubmissions",
            task_id,
            candidate=keys["a"].pubkey,
            is_valid=False,
            round=0,
        )


async def test_stake_below_minimum_is_refused(k2: LocalK2, keys: Any) -> None:
    task_id = await create_task(k2, keys["manager"])
    await k2.airdrop(keys["a"].pubkey, ROE_PER_KOII)
    with pytest.raises(TransactionError, match="below the minimum"):
        await send(k2, keys["a"], "Stake", task_id, amount=ROE_PER_KOII // 2)
    with pytest.raises(TransactionError, match="insufficient balance"):
        await send(k2, keys["a"], "Stake", task_id, amount=5 * ROE_PER_KOII)


async def test_audit_trigger_and_votes(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    a = keys["a"].pubkey

    async def vote(name: str, is_valid: bool, candidate: str = a) -> None:
        await send(
            k2,
            keys[name],
            "AuditSubmissions",
            task_id,
            candidate=candidate,
            is_valid=is_valid,
            round=0,
        )

    with pytest.raises(TransactionError, match="accepted in slots"):
        await vote("b", False)  # still the submission window
    clock.to_slot(k2, 28)
    with pytest.raises(TransactionError, match="no audit trigger"):
        await vote("b", True)
    await vote("b", False)  # raises the trigger, carries no vote
    with pytest.raises(TransactionError, match="already voted"):
        await vote("b", False)
    await vote("c", False)
    with pytest.raises(TransactionError, match="already voted"):
        await vote("c", True)
    await vote("d", True)
    with pytest.raises(TransactionError, match="cannot audit itself"):
        await vote("a", True)
    with pytest.raises(TransactionError, match="no entry"):
        await vote("b", False, candidate=Keypair.generate().pubkey)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    trigger = state["submissions_audit_trigger"]["0"][a]
    assert trigger["trigger_by"] == keys["b"].pubkey
    assert [(v["voter"], v["is_valid"]) for v in trigger["votes"]] == [
        (keys["c"].pubkey, False),
        (keys["d"].pubkey, True),
    ]
    clock.to_slot(k2, 36)
    with pytest.raises(TransactionError, match="accepted in slots"):
        await vote("d", False, candidate=keys["b"].pubkey)


async def _distribute(
    k2: LocalK2, key: Keypair, task_id: str, dist: dict[str, int], round_: int = 0
) -> None:
    await send(k2, key, "UploadDistributionList", task_id, list=dist, round=round_)
    await send(k2, key, "SubmitDistributionList", task_id, round=round_)


async def test_payout_pays_rewards_and_slashes(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    a, b, c, d = (keys[n].pubkey for n in "abcd")
    dist = {a: ROE_PER_KOII, b: ROE_PER_KOII, c: ROE_PER_KOII, d: -ROE_PER_KOII}
    clock.to_slot(k2, 39)
    with pytest.raises(TransactionError, match="accepted in slots"):
        await _distribute(k2, keys["b"], task_id, dist)
    clock.to_slot(k2, 40)
    await _distribute(k2, keys["b"], task_id, dist)
    with pytest.raises(TransactionError, match="already"):
        await _distribute(k2, keys["c"], task_id, dist)
    clock.to_slot(k2, 55)
    with pytest.raises(TransactionError, match="opens at slot 56"):
        await send(k2, keys["b"], "Payout", task_id, round=0)
    clock.to_slot(k2, 56)
    result = await send(k2, keys["c"], "Payout", task_id, round=0)  # any staked node may
    assert result["record"] == "PayoutSuccessful"
    again = await send(k2, keys["b"], "Payout", task_id, round=0)
    assert again == {"changed": False, "record": "PayoutSuccessful"}
    state = await k2.get_task_state(
        task_id,
        {
            "is_available_balances_required": True,
            "is_stake_list_required": True,
            "is_distribution_required": True,
        },
    )
    assert state["available_balances"] == {a: ROE_PER_KOII, b: ROE_PER_KOII, c: ROE_PER_KOII}
    assert state["stake_list"][d] == ROE_PER_KOII  # 2 staked, 1 slashed
    assert state["total_bounty_amount"] == TASK_ARGS["total_bounty_amount"] - 3 * ROE_PER_KOII
    assert state["distributions_audit_record"] == {"0": "PayoutSuccessful"}
    assert await k2.get_distribution_list(task_id, b, 0) == dist


async def test_distribution_list_is_validated(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    clock.to_slot(k2, 40)
    for bad in ({keys["a"].pubkey: 1.5}, {"not a key": 1}, {keys["a"].pubkey: True}, [1]):
        with pytest.raises(TransactionError):
            await send(k2, keys["b"], "UploadDistributionList", task_id, list=bad, round=0)
    with pytest.raises(TransactionError, match="no distribution list uploaded"):
        await send(k2, keys["b"], "SubmitDistributionList", task_id, round=0)


async def test_failed_payout_then_retry(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    a, b, c, d = (keys[n].pubkey for n in "abcd")
    good = {a: ROE_PER_KOII, b: ROE_PER_KOII, c: ROE_PER_KOII, d: 0}
    clock.to_slot(k2, 40)
    await _distribute(k2, keys["b"], task_id, {b: 3 * ROE_PER_KOII, a: 0, c: 0, d: 0})
    clock.to_slot(k2, 48)
    for name in ("c", "d"):  # c raises the trigger, d votes: net -1
        await send(
            k2, keys[name], "AuditDistribution", task_id, candidate=b, is_valid=False, round=0
        )
    clock.to_slot(k2, 56)
    failed = await send(k2, keys["b"], "Payout", task_id, round=0)
    assert failed["record"] == "PayoutFailed"
    state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
    assert state["available_balances"] == {}
    # the retry runs in the next round's windows
    clock.to_slot(k2, 60)
    with pytest.raises(TransactionError, match="already"):
        await _distribute(k2, keys["b"], task_id, good)
    await _distribute(k2, keys["c"], task_id, good)
    clock.to_slot(k2, 76)
    assert (await send(k2, keys["c"], "Payout", task_id, round=0))["record"] == "PayoutSuccessful"
    state = await k2.get_task_state(
        task_id, {"is_available_balances_required": True, "is_distribution_required": True}
    )
    assert state["available_balances"][a] == ROE_PER_KOII
    assert list(state["distribution_rewards_submission"]["0"]) == [b, c]


async def test_no_retry_when_none_allowed(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys, allowed_failed_distributions=0)
    await _submit_all(k2, clock, keys, task_id, 0)
    b = keys["b"].pubkey
    clock.to_slot(k2, 40)
    await _distribute(k2, keys["b"], task_id, {b: 0})
    clock.to_slot(k2, 48)
    for name in ("c", "d"):
        await send(
            k2, keys[name], "AuditDistribution", task_id, candidate=b, is_valid=False, round=0
        )
    clock.to_slot(k2, 56)
    await send(k2, keys["b"], "Payout", task_id, round=0)
    clock.to_slot(k2, 60)
    with pytest.raises(TransactionError, match="no distribution attempts left"):
        await _distribute(k2, keys["c"], task_id, {b: 0})


async def test_withdraw_is_refused_within_three_rounds_of_a_submission(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await _staked_task(k2, keys)
    clock.to_slot(k2, 20)
    await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=0)
    for slot in (21, 40, 79):  # rounds 1..3
        clock.to_slot(k2, slot)
        with pytest.raises(TransactionError, match="withdraw refused"):
            await send(k2, keys["a"], "Withdraw", task_id)
    clock.to_slot(k2, 80)  # round 4
    before = await k2.get_balance(keys["a"].pubkey)
    assert (await send(k2, keys["a"], "Withdraw", task_id))["withdrawn"] == 2 * ROE_PER_KOII
    assert await k2.get_balance(keys["a"].pubkey) == before + 2 * ROE_PER_KOII
    # a key that never submitted may leave at once
    await send(k2, keys["b"], "Withdraw", task_id)
    with pytest.raises(TransactionError, match="no stake"):
        await send(k2, keys["b"], "Withdraw", task_id)


async def test_claim_moves_available_balance_to_the_main_wallet(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    a = keys["a"].pubkey
    clock.to_slot(k2, 40)
    await _distribute(k2, keys["b"], task_id, {a: 5, keys["b"].pubkey: 0})
    clock.to_slot(k2, 56)
    await send(k2, keys["b"], "Payout", task_id, round=0)
    main = Keypair.generate().pubkey
    assert (await send(k2, keys["a"], "ClaimReward", task_id, to=main))["claimed"] == 5
    assert await k2.get_balance(main) == 5
    with pytest.raises(TransactionError, match="nothing to claim"):
        await send(k2, keys["a"], "ClaimReward", task_id, to=main)
    # b cannot claim a's balance: it can only sign for itself
    with pytest.raises(TransactionError, match="nothing to claim"):
        await send(k2, keys["b"], "ClaimReward", task_id, to=main)


async def test_task_creation_rules(k2: LocalK2, keys: Any) -> None:
    manager = keys["manager"]
    with pytest.raises(TransactionError, match="round_time must be"):
        await create_task(k2, manager, round_time=10)
    with pytest.raises(TransactionError, match="task_name"):
        await create_task(k2, manager, task_name="x" * 25)
    with pytest.raises(TransactionError, match="submission_window"):
        await create_task(k2, manager, submission_window=0)
    poor = Keypair.generate()
    with pytest.raises(TransactionError, match="insufficient balance"):
        await k2.send(sign_tx(poor, "CreateTask", "", dict(TASK_ARGS), k2.current_slot()))
    with pytest.raises(TransactionError, match="unknown instruction"):
        await k2.send(sign_tx(poor, "Mint", "", {}, k2.current_slot()))


async def test_task_state_sections_follow_options(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    bare = await k2.get_task_state(task_id, {})
    assert bare["submissions"] == {} and bare["stake_list"] == {}
    assert bare["task_name"] == "test task" and bare["current_round"] == 1
    full = await k2.get_task_state(
        task_id, {"is_submission_required": True, "is_stake_list_required": True}
    )
    assert len(full["submissions"]["0"]) == 4 and len(full["stake_list"]) == 4
    full["submissions"].clear()  # a copy: the chain is untouched
    assert (await k2.get_task_state(task_id, {"is_submission_required": True}))["submissions"]
    with pytest.raises(TransactionError, match="does not exist"):
        await k2.get_task_state("nope")


async def test_state_survives_restart(tmp_path: Path, clock: FakeClock, keys: Any) -> None:
    path = tmp_path / "chain"
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    before = await k2.get_task_state(
        task_id, {"is_submission_required": True, "is_stake_list_required": True}
    )
    k2.close()  # writes a snapshot
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    assert (
        await k2.get_task_state(
            task_id, {"is_submission_required": True, "is_stake_list_required": True}
        )
        == before
    )
    clock.to_slot(k2, 28)
    await send(
        k2,
        keys["b"],
        "AuditSubmissions",
        task_id,
        candidate=keys["a"].pubkey,
        is_valid=False,
        round=0,
    )
    k2._store.close()  # a crash: no snapshot, only the log
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert keys["a"].pubkey in state["submissions_audit_trigger"]["0"]
    assert k2.current_slot() == 28  # the slot clock continues from the same genesis
    k2.close()


async def test_old_rounds_are_pruned(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await _staked_task(k2, keys)
    for round_ in range(KEEP_ROUNDS + 6):
        clock.to_slot(k2, 20 * (round_ + 1))
        await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=round_)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    rounds = sorted(int(r) for r in state["submissions"])
    assert len(rounds) <= KEEP_ROUNDS + 1
    assert rounds[-1] == KEEP_ROUNDS + 5


async def test_a_slashed_submitter_can_still_distribute_its_round(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await _staked_task(k2, keys)
    await _submit_all(k2, clock, keys, task_id, 0)
    a, b = keys["a"].pubkey, keys["b"].pubkey
    k2._world.tasks[task_id]["stake_list"][a] = 1  # slashed below the minimum meanwhile
    outsider = Keypair.generate()
    clock.to_slot(k2, 40)
    with pytest.raises(TransactionError, match="not staked"):
        await _distribute(k2, outsider, task_id, {a: 0, b: 0})
    await _distribute(k2, keys["a"], task_id, {a: 0, b: 0})
    clock.to_slot(k2, 56)
    assert (await send(k2, keys["a"], "Payout", task_id, round=0))["record"] == "PayoutSuccessful"
    clock.to_slot(k2, 61)
    with pytest.raises(TransactionError, match="not staked"):
        await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=2)
