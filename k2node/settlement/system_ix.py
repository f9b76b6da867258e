"""The System program's instructions the task flows use: create an account, transfer.

Rent follows Solana's defaults, which K2 keeps: a new account holds at least
(128 + space) x 3,480 x 2 lamports (two years of rent at 3,480 lamports per byte-year).
"""

from __future__ import annotations

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.system_program import decode_create_account, decode_transfer

from k2node.settlement.base import TransactionError
from k2node.settlement.checks import credit, debit
from k2node.settlement.world import World

ACCOUNT_STORAGE_OVERHEAD = 128
LAMPORTS_PER_BYTE_YEAR = 3_480
EXEMPTION_YEARS = 2
MAX_ACCOUNT_SPACE = 10 * 1024 * 1024
_CREATE_ACCOUNT, _TRANSFER = 0, 2


def minimum_balance(space: int) -> int:
    """The lamports an account of `space` bytes needs to be exempt from rent."""
    return (ACCOUNT_STORAGE_OVERHEAD + space) * LAMPORTS_PER_BYTE_YEAR * EXEMPTION_YEARS


def apply(world: World, data: bytes, accounts: list[Pubkey], signers: set[Pubkey]) -> None:
    kind = int.from_bytes(data[:4], "little") if len(data) >= 4 else -1
    metas = [AccountMeta(key, key in signers, True) for key in accounts]
    instruction = Instruction(SYSTEM_PROGRAM, data, metas)
    try:
        if kind == _CREATE_ACCOUNT:
            created = decode_create_account(instruction)
            _create_account(
                world,
                created["from_pubkey"],
                created["to_pubkey"],
                signers,
                (created["lamports"], created["space"], created["owner"]),
            )
            return
        if kind == _TRANSFER:
            sent = decode_transfer(instruction)
            _transfer(world, sent["from_pubkey"], sent["to_pubkey"], sent["lamports"], signers)
            return
    except (ValueError, TypeError, IndexError) as exc:
        raise TransactionError(f"System: malformed instruction: {exc}") from None
    raise TransactionError(f"System: instruction {kind} is not supported by this K2")


def _system_owned(world: World, key: Pubkey) -> bool:
    return str(key) not in world.accounts


def _create_account(
    world: World,
    source: Pubkey,
    new: Pubkey,
    signers: set[Pubkey],
    params: tuple[int, int, Pubkey],
) -> None:
    lamports, space, owner = params
    if source not in signers or new not in signers:
        raise TransactionError("System: createAccount needs both accounts to sign")
    if not _system_owned(world, source):
        raise TransactionError("System: createAccount must be paid from a System account")
    if world.balances.get(str(new), 0) > 0 or not _system_owned(world, new):
        raise TransactionError(f"System: account {new} already in use")
    if space > MAX_ACCOUNT_SPACE:
        raise TransactionError(f"System: {space} bytes is more than an account may hold")
    if lamports < minimum_balance(space):
        raise TransactionError(
            f"System: {lamports} lamports is below the rent-exempt minimum of "
            f"{minimum_balance(space)} for {space} bytes"
        )
    debit(world, str(source), lamports)
    credit(world, str(new), lamports)
    if owner != SYSTEM_PROGRAM:  # a System account needs no record beside its balance
        world.set_account(str(new), {"owner": str(owner), "space": space})


def _transfer(
    world: World, source: Pubkey, to: Pubkey, lamports: int, signers: set[Pubkey]
) -> None:
    if source not in signers:
        raise TransactionError("System: transfer needs its source to sign")
    if not _system_owned(world, source):
        raise TransactionError("System: transfer from an account a program owns")
    debit(world, str(source), lamports)
    credit(world, str(to), lamports)
