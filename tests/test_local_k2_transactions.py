"""What the local K2 takes as a transaction: forged, tampered, malformed, replayed and
expired ones refused; a simulation's K2 trusting signatures and keeping every other rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from solders.hash import Hash
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from k2node.contract.units import ROE_PER_KOII
from k2node.settlement import wire
from k2node.settlement.base import DuplicateTransaction, TransactionError
from k2node.settlement.local import LocalK2
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from tests.conftest import (
    FakeClock,
    funded,
    signed_submission,
    staked_task,
)


async def test_forged_tampered_unsigned_and_malformed_transactions_are_refused(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await staked_task(k2, keys)
    payer = await funded(k2)
    clock.to_slot(k2, 20)
    good = (await signed_submission(k2, keys["a"], task_id, payer)).transaction
    # b signs in a's place: the signature is not a's
    forged = Transaction.populate(
        good.message, [good.signatures[0], wire.signer(keys["b"]).sign_message(bytes(good.message))]
    )
    tampered = bytearray(bytes(good))
    tampered[-20] ^= 0xFF  # the round's bytes, after the signatures
    unsigned = Transaction.new_unsigned(good.message)
    cases = {
        "signature verification failed": [bytes(forged), bytes(tampered), bytes(unsigned)],
        "malformed": [b"", b"\x01", bytes(good)[:-3], b"\x00" * 200],
        "at most 1232": [bytes(good) + b"\x00" * 1000],
    }
    for message, raws in cases.items():
        for raw in raws:
            with pytest.raises(TransactionError, match=message):
                await k2.send(raw)
    other_program = Instruction(Pubkey.new_unique(), b"\x01", [])
    blockhash = Hash.from_string((await k2.latest_blockhash())[0])
    signed = wire.sign([other_program], wire.signer(payer), [], blockhash)
    with pytest.raises(TransactionError, match="does not exist on this K2"):
        await k2.send(signed.wire)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert state["submissions"] == {}
    assert await k2.get_balance(payer.pubkey) == 100 * ROE_PER_KOII  # no fee either


async def test_replayed_and_expired_transactions_are_refused(
    k2: LocalK2, clock: FakeClock, keys: Any
) -> None:
    task_id = await staked_task(k2, keys)
    payer = await funded(k2)
    clock.to_slot(k2, 20)
    signed = await signed_submission(k2, keys["a"], task_id, payer)
    assert await k2.send(signed.wire) == signed.signature
    with pytest.raises(DuplicateTransaction):
        await k2.send(signed.wire)
    assert await k2.transaction_applied(signed.signature)
    # the payer paid the fee once, for two signatures
    assert await k2.get_balance(payer.pubkey) == 100 * ROE_PER_KOII - 2 * LAMPORTS_PER_SIGNATURE
    old = await signed_submission(k2, keys["b"], task_id, payer, str(k2.blockhash_of(0)))
    clock.to_slot(k2, 200)
    with pytest.raises(TransactionError, match="Blockhash not found"):
        await k2.send(old.wire)
    unknown = await signed_submission(k2, keys["b"], task_id, payer, str(Hash.new_unique()))
    with pytest.raises(TransactionError, match="Blockhash not found"):
        await k2.send(unknown.wire)


async def test_a_simulation_k2_trusts_signatures_keeps_every_other_rule_and_writes_nothing(
    tmp_path: Path, clock: FakeClock, keys: Any
) -> None:
    trusting = LocalK2.open(tmp_path / "sim", slot_ms=1000, clock=clock, simulated=True)
    try:
        task_id = await staked_task(trusting, keys)
        payer = await funded(trusting)
        clock.to_slot(trusting, 20)
        good = (await signed_submission(trusting, keys["a"], task_id, payer)).transaction
        forged = Transaction.populate(
            good.message,
            [good.signatures[0], wire.signer(keys["b"]).sign_message(bytes(good.message))],
        )
        await trusting.send(bytes(forged))  # b signed in a's place, and it is taken
        state = await trusting.get_task_state(task_id, {"is_submission_required": True})
        assert list(state["submissions"]["0"]) == [keys["a"].pubkey]
        with pytest.raises(TransactionError, match="already submitted"):
            other_payer = await funded(trusting)
            await trusting.send(
                (await signed_submission(trusting, keys["a"], task_id, other_payer)).wire
            )
        with pytest.raises(TransactionError, match="malformed"):
            await trusting.send(bytes(good)[:-3])
        assert trusting.seq > 0
    finally:
        trusting.close()
    again = LocalK2.open(tmp_path / "sim", slot_ms=1000, clock=clock)
    try:  # the world ended with the run: no log, no snapshot
        assert again.seq == 0
        with pytest.raises(TransactionError, match="does not exist"):
            await again.get_task_state(task_id)
    finally:
        again.close()


async def test_stand_in_signatures_are_refused_by_a_checking_k2_and_taken_by_a_simulations(
    k2: LocalK2, tmp_path: Path, clock: FakeClock, keys: Any
) -> None:
    assert k2.checks_signatures
    task_id = await staked_task(k2, keys)
    payer = await funded(k2)
    clock.to_slot(k2, 20)
    stand_in = await signed_submission(k2, keys["a"], task_id, payer, checked=False)
    real = await signed_submission(k2, keys["a"], task_id, payer)
    assert stand_in.transaction.message == real.transaction.message
    assert stand_in.signature != real.signature
    again = await signed_submission(k2, keys["a"], task_id, payer, checked=False)
    other = await signed_submission(k2, keys["b"], task_id, payer, checked=False)
    # like ed25519's: the same for the same signer and message, another for another
    assert again.signature == stand_in.signature != other.signature
    with pytest.raises(TransactionError, match="signature verification failed"):
        await k2.send(stand_in.wire)
    assert await k2.send(real.wire) == real.signature

    trusting = LocalK2.open(tmp_path / "sim", slot_ms=1000, clock=clock, simulated=True)
    try:
        assert not trusting.checks_signatures
        task_id = await staked_task(trusting, keys)  # signed_now: stand-ins, taken
        payer = await funded(trusting)
        clock.to_slot(trusting, 20)
        stand_in = await signed_submission(trusting, keys["a"], task_id, payer, checked=False)
        assert await trusting.send(stand_in.wire) == stand_in.signature
        with pytest.raises(DuplicateTransaction):
            await trusting.send(stand_in.wire)
        state = await trusting.get_task_state(task_id, {"is_submission_required": True})
        assert list(state["submissions"]["0"]) == [keys["a"].pubkey]
    finally:
        trusting.close()
