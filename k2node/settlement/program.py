"""The local K2's programs: applying one wire transaction to the world at a slot.

A transaction's fee is charged to its payer (its first account), then its instructions run
in order: the System program's create-account and transfer, and the task program's
instructions (task_ix.py, round_ix.py). If any is refused, the world's journal undoes the
whole transaction, fee included, and the error names the instruction and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from solders.instruction import CompiledInstruction
from solders.message import Message
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.transaction import Transaction

from k2node.settlement import round_ix, system_ix, task_ix, wire
from k2node.settlement.base import TransactionError
from k2node.settlement.checks import debit
from k2node.settlement.reads import touched_by
from k2node.settlement.world import Journal, World

# Applied signatures are remembered this long, so a resent transaction is recognised.
SIGNATURE_MEMORY_SLOTS = 5_000
# What a K2 validator charges per signature (Solana's default, which K2 keeps).
LAMPORTS_PER_SIGNATURE = 5_000

Handler = Callable[[World, dict[str, Any], dict[str, Any], int], Any]


def _handler(ix: wire.Ix) -> Handler:
    """An instruction's handler is its name in task_ix.py or round_ix.py (SUBMIT_TASK is
    submit_task)."""
    found: Handler = getattr(task_ix, ix.name.lower(), None) or getattr(round_ix, ix.name.lower())
    return found


_HANDLERS = {ix: _handler(ix) for ix in wire.Ix}
# The instructions' names as Koii's layouts spell them (SUBMIT_TASK is SubmitTask).
PROGRAM_NAMES = {int(ix): ix.name.title().replace("_", "") for ix in wire.Ix}


def instruction_names(tx: Transaction) -> list[str]:
    """What a transaction asks for, by name (for logs and counts); unknown ones as such."""
    message = tx.message
    keys = message.account_keys
    names = []
    for compiled in message.instructions:
        program = keys[compiled.program_id_index]
        if program == wire.PROGRAM_ID:
            names.append(PROGRAM_NAMES.get(compiled.data[0] if compiled.data else -1, "Unknown"))
        else:
            names.append("System" if program == SYSTEM_PROGRAM else "Unknown")
    return names


def apply(world: World, tx: Transaction, slot: int) -> None:
    """Apply a transaction whose signatures and blockhash the caller has checked."""
    message = tx.message
    signature = str(tx.signatures[0])
    journal = world.journal = Journal()
    try:
        fee = LAMPORTS_PER_SIGNATURE * len(tx.signatures)
        payer = str(message.account_keys[0])
        if payer in world.accounts:
            raise TransactionError(f"the fee payer {payer} is not a System account")
        try:
            debit(world, payer, fee)
        except TransactionError:
            raise TransactionError(f"the fee payer cannot pay the fee of {fee} lamports") from None
        last = len(message.instructions) - 1
        for index, compiled in enumerate(message.instructions):
            try:
                _instruction(world, message, compiled, signature, slot, index < last)
            except (TransactionError, wire.WireError) as exc:
                raise TransactionError(f"instruction {index}: {exc}") from None
    except BaseException:
        world.undo(journal)
        raise
    finally:
        world.journal = None
    world.signatures[signature] = slot
    _forget_old_signatures(world, slot)


def _instruction(
    world: World,
    message: Message,
    compiled: CompiledInstruction,
    signature: str,
    slot: int,
    more_follow: bool,
) -> None:
    keys = message.account_keys
    program = keys[compiled.program_id_index]
    accounts = [keys[i] for i in compiled.accounts]
    signers = {keys[i] for i in compiled.accounts if message.is_signer(i)}
    if program == SYSTEM_PROGRAM:
        system_ix.apply(world, compiled.data, accounts, signers)
        return
    if program != wire.PROGRAM_ID:
        raise TransactionError(f"program {program} does not exist on this K2")
    ix, fields = wire.decode(compiled.data)
    name, handler = PROGRAM_NAMES[ix], _HANDLERS[ix]
    roles = wire.roles(ix, accounts)
    acting = roles.get("signer") or roles["payer"]
    for role in roles:
        if wire.signs(ix, role) and roles[role] not in signers:
            raise TransactionError(f"{name}: {role} {roles[role]} did not sign")
    tx = {
        "ix": name,
        "task_id": str(roles["task"]),
        "signer": str(acting),
        "signature": signature,
        **{role: str(key) for role, key in roles.items() if role not in ("task", "signer")},
    }
    # A handler refused changes nothing; but a later instruction may yet be refused, and
    # then this one's change is undone from a copy (costly for a large task: the last
    # instruction, as a stake's is, needs none).
    if more_follow:
        world.keep_task(tx["task_id"])
    try:
        handler(world, tx, fields, slot)
    except TransactionError as exc:
        raise TransactionError(f"{name}: {exc}") from None
    world.reads.touch(tx["task_id"], touched_by(name, tx, fields))


def _forget_old_signatures(world: World, slot: int) -> None:
    sigs = world.signatures
    oldest = next(iter(sigs.values()), slot)
    if oldest < slot - SIGNATURE_MEMORY_SLOTS:
        world.signatures = {k: v for k, v in sigs.items() if v >= slot - SIGNATURE_MEMORY_SLOTS}
