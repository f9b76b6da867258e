"""The contract's settlement rules, one by one, on the embedded local K2 with a hand clock."""

from __future__ import annotations

from typing import Any

import pytest
from solders.instruction import Instruction
from solders.keypair import Keypair as SoldersKeypair
from solders.pubkey import Pubkey

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.settlement import transactions, wire
from k2node.settlement.base import TransactionError
from k2node.settlement.local import LocalK2
from k2node.settlement.wire import Ix, WireError
from tests.conftest import (
    TASK_ARGS,
    FakeClock,
    create_task,
    funded,
    send,
    sign_and_send,
    stake,
    staked_task,
    submit_all,
)


async def test_submission_only_in_its_window(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
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
    task_id = await staked_task(k2, keys)
    clock.to_slot(k2, 20)
    with pytest.raises(WireError, match="at most 512"):  # the 512-byte field cannot hold it
        await send(k2, keys["a"], "SubmitTask", task_id, submission="é" * 256 + "x", round=0)
    await send(k2, keys["a"], "SubmitTask", task_id, submission="é" * 256, round=0)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert state["submissions"]["0"][keys["a"].pubkey]["submission_value"] == "é" * 256


async def test_unstaked_key_cannot_submit_or_vote(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
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


async def test_stake_below_minimum_or_from_a_system_account_is_refused(
    k2: LocalK2, keys: Any
) -> None:
    task_id = await create_task(k2, keys["manager"])
    with pytest.raises(TransactionError, match="below the minimum"):
        await stake(k2, keys["a"], task_id, amount=ROE_PER_KOII // 2)
    assert await k2.get_account(keys["a"].pubkey) is None  # the account's creation undone
    # a staking key that is a plain wallet, not an account the task program owns
    await k2.airdrop(keys["b"].pubkey, 5 * ROE_PER_KOII)
    task, pot = (
        Pubkey.from_string(task_id),
        Pubkey.from_string((await k2.get_task_state(task_id))["stake_pot_account"]),
    )
    me = Pubkey.from_string(keys["b"].pubkey)
    ix = wire.instruction(
        Ix.STAKE,
        {"amount": 2 * ROE_PER_KOII, "ip_address": ""},
        {"task": task, "signer": me, "stake_pot": pot},
    )
    with pytest.raises(TransactionError, match="not owned by the task program"):
        await sign_and_send(k2, [ix], await funded(k2), keys["b"])


async def test_audit_trigger_and_votes(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
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


async def _record(k2: LocalK2, task_id: str, round_: int = 0) -> str | None:
    state = await k2.get_task_state(task_id, {"is_distribution_required": True})
    record: str | None = state["distributions_audit_record"].get(str(round_))
    return record


async def _distribute(
    k2: LocalK2, key: Keypair, task_id: str, dist: dict[str, int], round_: int = 0
) -> None:
    await send(k2, key, "UploadDistributionList", task_id, list=dist, round=round_)
    await send(k2, key, "SubmitDistributionList", task_id, round=round_)


async def test_payout_pays_rewards_and_slashes(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
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
    await send(k2, keys["c"], "Payout", task_id, round=0)  # any staked node may
    assert await _record(k2, task_id) == "PayoutSuccessful"
    balances = (await k2.get_task_state(task_id, {"is_available_balances_required": True}))[
        "available_balances"
    ]
    await send(k2, keys["b"], "Payout", task_id, round=0)  # a second trigger changes nothing
    state = await k2.get_task_state(
        task_id,
        {
            "is_available_balances_required": True,
            "is_stake_list_required": True,
            "is_distribution_required": True,
        },
    )
    assert (
        state["available_balances"]
        == balances
        == {a: ROE_PER_KOII, b: ROE_PER_KOII, c: ROE_PER_KOII}
    )
    assert state["stake_list"][d] == ROE_PER_KOII  # 2 staked, 1 slashed
    assert state["total_bounty_amount"] == TASK_ARGS["total_bounty_amount"] - 3 * ROE_PER_KOII
    assert state["distributions_audit_record"] == {"0": "PayoutSuccessful"}
    assert await k2.get_section(task_id, "distributions_audit_record") == {"0": "PayoutSuccessful"}
    assert await k2.get_section(task_id, "stake_list") == state["stake_list"]
    assert await k2.get_distribution_list(task_id, b, 0) == dist


async def test_distribution_list_is_validated(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
    clock.to_slot(k2, 40)
    bad_lists = {
        "not an integer": {keys["a"].pubkey: 1.5},
        "list key": {"not a key": 1},
        "is not an integer": {keys["a"].pubkey: True},
        "must be an object": [1],
    }
    for message, bad in bad_lists.items():
        await send(k2, keys["b"], "UploadDistributionList", task_id, list=bad, round=0)
        with pytest.raises(TransactionError, match=message):
            await send(k2, keys["b"], "SubmitDistributionList", task_id, round=0)
    with pytest.raises(TransactionError, match="no distribution list uploaded"):
        await send(k2, keys["c"], "SubmitDistributionList", task_id, round=0)
    state = await k2.get_task_state(task_id, {"is_distribution_required": True})
    assert state["distribution_rewards_submission"] == {}


async def test_failed_payout_then_retry(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
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
    await send(k2, keys["b"], "Payout", task_id, round=0)
    assert await _record(k2, task_id) == "PayoutFailed"
    state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
    assert state["available_balances"] == {}
    # the retry runs in the next round's windows
    clock.to_slot(k2, 60)
    with pytest.raises(TransactionError, match="already"):
        await _distribute(k2, keys["b"], task_id, good)
    await _distribute(k2, keys["c"], task_id, good)
    clock.to_slot(k2, 76)
    await send(k2, keys["c"], "Payout", task_id, round=0)
    assert await _record(k2, task_id) == "PayoutSuccessful"
    state = await k2.get_task_state(
        task_id, {"is_available_balances_required": True, "is_distribution_required": True}
    )
    assert state["available_balances"][a] == ROE_PER_KOII
    assert list(state["distribution_rewards_submission"]["0"]) == [b, c]


async def test_no_retry_when_none_allowed(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys, allowed_failed_distributions=0)
    await submit_all(k2, clock, keys, task_id, 0)
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
    task_id = await staked_task(k2, keys)
    clock.to_slot(k2, 20)
    await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=0)
    for slot in (21, 40, 79):  # rounds 1..3
        clock.to_slot(k2, slot)
        with pytest.raises(TransactionError, match="withdraw refused"):
            await send(k2, keys["a"], "Withdraw", task_id)
    clock.to_slot(k2, 80)  # round 4
    before = await k2.get_balance(keys["a"].pubkey)
    await send(k2, keys["a"], "Withdraw", task_id)
    assert await k2.get_balance(keys["a"].pubkey) == before + 2 * ROE_PER_KOII
    # a key that never submitted may leave at once
    await send(k2, keys["b"], "Withdraw", task_id)
    with pytest.raises(TransactionError, match="no stake"):
        await send(k2, keys["b"], "Withdraw", task_id)


async def test_claim_moves_available_balance_to_the_main_wallet(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
    a = keys["a"].pubkey
    clock.to_slot(k2, 40)
    await _distribute(k2, keys["b"], task_id, {a: 5, keys["b"].pubkey: 0})
    clock.to_slot(k2, 56)
    await send(k2, keys["b"], "Payout", task_id, round=0)
    main = Keypair.generate().pubkey
    await send(k2, keys["a"], "ClaimReward", task_id, to=main)
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
    with pytest.raises(WireError, match="task_name is 25 bytes"):
        await create_task(k2, manager, task_name="x" * 25)
    with pytest.raises(TransactionError, match="task_name must not be empty"):
        await create_task(k2, manager, task_name="   ")
    with pytest.raises(TransactionError, match="submission_window"):
        await create_task(k2, manager, submission_window=0)
    poor, task, pot = Keypair.generate(), SoldersKeypair(), Pubkey.new_unique()
    await k2.airdrop(poor.pubkey, ROE_PER_KOII)  # rent, fees, but not the bounty
    fields = {**TASK_ARGS, "task_metadata": "", "local_vars": ""}
    payer = Pubkey.from_string(poor.pubkey)
    created = transactions.create_task(payer, task.pubkey(), pot, fields, 1000)
    with pytest.raises(TransactionError, match="instruction 1: CreateTask: insufficient balance"):
        await sign_and_send(k2, created, poor, task)
    assert await k2.get_account(str(task.pubkey())) is None  # the account's creation undone
    assert await k2.get_balance(poor.pubkey) == ROE_PER_KOII  # and the fee
    mint = Instruction(wire.PROGRAM_ID, bytes([13]), [])
    with pytest.raises(TransactionError, match="unknown task program instruction 13"):
        await sign_and_send(k2, [mint], poor)


async def test_a_slashed_submitter_can_still_distribute_its_round(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
    a, b = keys["a"].pubkey, keys["b"].pubkey
    k2._world.tasks[task_id]["stake_list"][a] = 1  # slashed below the minimum meanwhile
    outsider = Keypair.generate()
    clock.to_slot(k2, 40)
    with pytest.raises(TransactionError, match="not staked"):
        await _distribute(k2, outsider, task_id, {a: 0, b: 0})
    await _distribute(k2, keys["a"], task_id, {a: 0, b: 0})
    clock.to_slot(k2, 56)
    await send(k2, keys["a"], "Payout", task_id, round=0)
    assert await _record(k2, task_id) == "PayoutSuccessful"
    clock.to_slot(k2, 61)
    with pytest.raises(TransactionError, match="not staked"):
        await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=2)
