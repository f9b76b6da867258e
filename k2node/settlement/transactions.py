"""The transactions a node sends, as Koii's own clients compose them: the task program's
instruction, with the System program's create-account or transfer where the flow needs one
(a staking account the task program owns, a funder account, a task's account)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from solders.hash import Hash
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import (
    CreateAccountParams,
    TransferParams,
    create_account,
    transfer,
)

from k2node.settlement.base import Settlement
from k2node.settlement.system_ix import minimum_balance
from k2node.settlement.wire import PROGRAM_ID, Ix, Signed, Signer, chunks, instruction, sign

# A staking account: space 100, funded with the stake plus rent for 1,000 bytes and 10,000
# lamports, as the Desktop node creates it.
STAKING_SPACE, STAKING_EXTRA = 100, minimum_balance(1000) + 10_000
# A funder account for FundTask: space 100, the amount plus rent plus 1,000 lamports.
FUNDER_SPACE = 100
# What CreateTask's transaction moves to the new stake pot beside it (0.001 KOII).
STAKE_POT_SEED_LAMPORTS = 1_000_000


async def signed_now(
    settlement: Settlement,
    instructions: list[Instruction],
    payer: Signer,
    signers: Sequence[Signer],
) -> Signed:
    """One transaction signed over K2's latest blockhash, the payer paying its fees."""
    blockhash, _ = await settlement.latest_blockhash()
    hash_ = Hash.from_string(blockhash)
    return sign(instructions, payer, signers, hash_, checked=settlement.checks_signatures)


def _program_account(payer: Pubkey, new: Pubkey, lamports: int, space: int) -> Instruction:
    return create_account(
        CreateAccountParams(
            from_pubkey=payer, to_pubkey=new, lamports=lamports, space=space, owner=PROGRAM_ID
        )
    )


def create_task(
    payer: Pubkey, task: Pubkey, stake_pot: Pubkey, fields: dict[str, Any], space: int
) -> list[Instruction]:
    accounts = {"payer": payer, "task": task, "stake_pot": stake_pot}
    return [
        _program_account(payer, task, minimum_balance(space) + 1000, space),
        instruction(Ix.CREATE_TASK, fields, accounts),
        transfer(
            TransferParams(from_pubkey=payer, to_pubkey=stake_pot, lamports=STAKE_POT_SEED_LAMPORTS)
        ),
    ]


def update_task(
    payer: Pubkey,
    old: tuple[Pubkey, Pubkey],
    new: tuple[Pubkey, Pubkey],
    fields: dict[str, Any],
    space: int,
) -> list[Instruction]:
    """A new version of task `old` (task, stake pot) as `new` (task, stake pot)."""
    accounts = {"payer": payer, "task": old[0], "stake_pot": old[1]}
    accounts |= {"new_task": new[0], "new_stake_pot": new[1]}
    return [
        _program_account(payer, new[0], minimum_balance(space) + 1000, space),
        instruction(Ix.UPDATE_TASK, fields, accounts),
        transfer(
            TransferParams(from_pubkey=payer, to_pubkey=new[1], lamports=STAKE_POT_SEED_LAMPORTS)
        ),
    ]


def fund_task(
    payer: Pubkey, funder: Pubkey, task: Pubkey, stake_pot: Pubkey, amount: int
) -> list[Instruction]:
    lamports = amount + minimum_balance(FUNDER_SPACE) + 1000
    accounts = {"task": task, "signer": funder, "stake_pot": stake_pot}
    return [
        _program_account(payer, funder, lamports, FUNDER_SPACE),
        instruction(Ix.FUND_TASK, {"amount": amount}, accounts),
    ]


def stake(
    payer: Pubkey,
    staking: Pubkey,
    task: Pubkey,
    stake_pot: Pubkey,
    amount: int,
    ip_address: str,
    staking_lamports: int | None,
) -> list[Instruction]:
    """Stake `amount` from the staking account. The first time (`staking_lamports` None) the
    main wallet opens it, owned by the task program, with the stake in it. Once it exists,
    what it holds beyond its reserve (a stake withdrawn from any task) is staked first, and
    the main wallet pays in only the rest: the task program owns the account, so no plain
    transfer could move that back out."""
    accounts = {"task": task, "signer": staking, "stake_pot": stake_pot}
    stake_ix = instruction(Ix.STAKE, {"amount": amount, "ip_address": ip_address}, accounts)
    if staking_lamports is None:
        return [_program_account(payer, staking, amount + STAKING_EXTRA, STAKING_SPACE), stake_ix]
    _, from_main = stake_split(amount, staking_lamports)
    if from_main == 0:
        return [stake_ix]
    fund = transfer(TransferParams(from_pubkey=payer, to_pubkey=staking, lamports=from_main))
    return [fund, stake_ix]


async def staking_lamports(settlement: Settlement, staking: str) -> int | None:
    """What the staking account holds; None while it is not open (owned by the task program)."""
    account = await settlement.get_account(staking)
    if account is None or account.owner != str(PROGRAM_ID):
        return None
    return account.lamports


def stake_split(amount: int, staking_lamports: int | None) -> tuple[int, int]:
    """How a stake of `amount` is paid: (from the staking account's spare, from the main
    wallet)."""
    spare = 0 if staking_lamports is None else staking_spare(staking_lamports)
    from_staking = min(amount, spare)
    return from_staking, amount - from_staking


def staking_spare(lamports: int) -> int:
    """What a staking account holds beyond the reserve it was opened with: stakes withdrawn,
    which the next stake draws on before the main wallet."""
    return max(0, lamports - STAKING_EXTRA)


def round_action(ix: Ix, task: Pubkey, signer: Pubkey, **fields: Any) -> Instruction:
    """SubmitTask, SubmitDistributionList and the like: the task, the signer, the round."""
    return instruction(ix, fields, {"task": task, "signer": signer})


def vote(
    ix: Ix, task: Pubkey, voter: Pubkey, candidate: Pubkey, is_valid: bool, round_: int
) -> Instruction:
    fields = {"is_valid": int(is_valid), "round": round_}
    return instruction(ix, fields, {"task": task, "signer": voter, "candidate": candidate})


def upload_list(task: Pubkey, signer: Pubkey, list_json: bytes, round_: int) -> list[Instruction]:
    """One instruction per chunk, each sent in a transaction of its own."""
    return [
        instruction(
            Ix.UPLOAD_DISTRIBUTION_LIST,
            {"chunk": chunk, "round": round_},
            {"task": task, "signer": signer},
        )
        for chunk in chunks(list_json)
    ]


def with_stake_pot(
    ix: Ix, task: Pubkey, signer: Pubkey, stake_pot: Pubkey, **fields: Any
) -> Instruction:
    """Payout: the task, the signer, its stake pot."""
    return instruction(ix, fields, {"task": task, "signer": signer, "stake_pot": stake_pot})


def claim(task: Pubkey, claimer: Pubkey, stake_pot: Pubkey, beneficiary: Pubkey) -> Instruction:
    accounts = {"task": task, "signer": claimer, "stake_pot": stake_pot, "beneficiary": beneficiary}
    return instruction(Ix.CLAIM_REWARD, {}, accounts)


def withdraw(task: Pubkey, staking: Pubkey) -> Instruction:
    """Unstake: the whole stake back to the staking account (refused within 3 rounds of
    its last submission)."""
    return instruction(Ix.WITHDRAW, {}, {"task": task, "signer": staking})
