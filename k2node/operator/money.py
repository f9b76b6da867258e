"""`k2node stake`, `unstake`, `claim`: what each will do and cost, every refusal in words
before anything is signed, then one transaction. `k2node tasks`: what K2 offers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from k2node.contract.rounds import Schedule
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.http.rpc_chain import ALLOWLISTED
from k2node.node.standing import last_submission, unstake_opens
from k2node.operator.reach import OperatorError, Reach
from k2node.settlement import transactions, wire
from k2node.settlement.base import TransactionError
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from k2node.settlement.wire import PROGRAM_ID


def koii(roe: int) -> str:
    return f"{Decimal(roe) / ROE_PER_KOII:,.9f}".rstrip("0").rstrip(".") + " KOII"


def roe_of(text: str) -> int:
    """An amount typed in KOII, in ROE; OperatorError when it is not one."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise OperatorError(f"{text!r} is not an amount of KOII") from None
    roe = amount * ROE_PER_KOII
    if not amount.is_finite() or amount <= 0 or roe != roe.to_integral_value():
        raise OperatorError(f"{text!r} is not a positive amount of KOII (at most 9 decimals)")
    return int(roe)


# every plan is signed by the main wallet, which pays, and the staking key
FEE = LAMPORTS_PER_SIGNATURE * 2


@dataclass
class Plan:
    says: str  # what it will do, and what it costs
    instructions: list[Instruction]
    signers: list[Keypair]  # besides the main wallet, which pays the fee
    done: str


async def _state(reach: Reach, task_id: str, **wanted: bool) -> dict[str, Any]:
    try:
        return await reach.settlement.get_task_state(task_id, wanted)
    except TransactionError:
        raise OperatorError(f"K2 knows no task {task_id}") from None


def _staking(reach: Reach) -> Keypair:
    if reach.staking is None:
        raise OperatorError("this data directory has no staking wallet yet: run the node once")
    return reach.staking


async def plan_stake(reach: Reach, task_id: str, amount_text: str) -> Plan:
    amount = roe_of(amount_text)
    state = await _state(reach, task_id, is_stake_list_required=True)
    staking = _staking(reach)
    have = int(state["stake_list"].get(staking.pubkey, 0))
    minimum = int(state["minimum_stake_amount"])
    if have + amount < minimum:
        raise OperatorError(
            f"{state['task_name']} needs a stake of at least {koii(minimum)}; with "
            f"{koii(amount)} more you would have {koii(have + amount)}"
        )
    held = await transactions.staking_lamports(reach.settlement, staking.pubkey)
    extra = transactions.STAKING_EXTRA if held is None else 0
    # stakes withdrawn earlier wait in the staking account: the next stake draws on them first
    from_staking, from_main = transactions.stake_split(amount, held)
    balance = await reach.settlement.get_balance(reach.main.pubkey)
    if balance < from_main + extra + FEE:
        raise OperatorError(
            f"your main wallet holds {koii(balance)}; staking {koii(amount)} takes "
            f"{koii(from_main + extra + FEE)} from it with the fee"
            + (" and the staking account's rent" if extra else "")
            + (f" ({koii(from_staking)} comes from the staking account)" if from_staking else "")
        )
    pot = Pubkey.from_string(state["stake_pot_account"])
    instructions = transactions.stake(
        Pubkey.from_string(reach.main.pubkey),
        Pubkey.from_string(staking.pubkey),
        Pubkey.from_string(task_id),
        pot,
        amount,
        reach.public_url[:64],
        held,
    )
    rent = f" and {koii(extra)} to open the staking account" if extra else ""
    sources = []
    if from_staking:
        sources.append(f"{koii(from_staking)} withdrawn earlier, in the staking account")
    if from_main or not from_staking:
        sources.append(f"{koii(from_main)}{rent} from the main wallet {reach.main.pubkey}")
    return Plan(
        f"stake {koii(amount)} on {state['task_name']} ({task_id}): costs "
        f"{' and '.join(sources)}, fee {koii(FEE)}; your stake becomes {koii(have + amount)}",
        instructions,
        [staking],
        f"staked: {koii(have + amount)} on {state['task_name']}",
    )


async def plan_unstake(reach: Reach, task_id: str) -> Plan:
    state = await _state(reach, task_id, is_stake_list_required=True, is_submission_required=True)
    staking = _staking(reach)
    have = int(state["stake_list"].get(staking.pubkey, 0))
    if have <= 0:
        raise OperatorError(f"you have no stake on {state['task_name']}")
    schedule = Schedule.of(state)
    now = max(0, schedule.round_of(reach.settlement.current_slot()))
    last = last_submission(state, staking.pubkey)
    opens = unstake_opens(last, now)
    if opens is not None:
        wait_s = (schedule.round_start(opens) - reach.settlement.current_slot()) * (
            reach.settlement.slot_ms / 1000
        )
        wait = f"{max(1, round(wait_s))} s" if wait_s < 90 else f"{round(wait_s / 60)} minutes"
        raise OperatorError(
            f"your last submission was in round {last}; unstaking opens at round {opens}, in "
            f"about {wait} (stop the task first, or it submits again)"
        )
    ix = transactions.withdraw(Pubkey.from_string(task_id), Pubkey.from_string(staking.pubkey))
    return Plan(
        f"unstake {koii(have)} from {state['task_name']} ({task_id}) back to the staking "
        f"account {staking.pubkey}: fee {koii(FEE)}",
        [ix],
        [staking],
        f"unstaked {koii(have)} from {state['task_name']}",
    )


async def plan_claim(reach: Reach, task_id: str) -> Plan:
    state = await _state(reach, task_id, is_available_balances_required=True)
    staking = _staking(reach)
    available = int(state["available_balances"].get(staking.pubkey, 0))
    if available <= 0:
        raise OperatorError(f"nothing to claim on {state['task_name']}")
    ix = transactions.claim(
        Pubkey.from_string(task_id),
        Pubkey.from_string(staking.pubkey),
        Pubkey.from_string(state["stake_pot_account"]),
        Pubkey.from_string(reach.main.pubkey),
    )
    return Plan(
        f"claim {koii(available)} of rewards on {state['task_name']} ({task_id}) into your "
        f"main wallet {reach.main.pubkey}: fee {koii(FEE)}",
        [ix],
        [staking],
        f"claimed {koii(available)} from {state['task_name']}",
    )


async def carry_out(reach: Reach, plan: Plan) -> str:
    """Sign and send the plan's transaction; its signature."""
    signed = await transactions.signed_now(
        reach.settlement,
        plan.instructions,
        wire.signer(reach.main),
        [wire.signer(k) for k in plan.signers],
    )
    try:
        return await reach.settlement.send(signed.wire)
    except TransactionError as exc:
        raise OperatorError(f"K2 refused it: {exc}") from None
    except OSError as exc:  # unreachable, or not on its disk: it may yet stand
        raise OperatorError(
            f"K2 did not confirm it ({exc}); transaction {signed.signature} may yet stand: "
            "run `k2node status` before trying again"
        ) from None


async def list_tasks(reach: Reach) -> list[dict[str, Any]]:
    """The tasks K2 lists (as the Desktop node finds them), with what joining one takes."""
    filters = [{"memcmp": {"offset": 0, "bytes": ALLOWLISTED}}]
    found = await reach.settlement.get_program_accounts(str(PROGRAM_ID), filters)
    rows = []
    for key, _account in found:
        try:
            state = await reach.settlement.get_task_state(key, {"is_stake_list_required": True})
        except TransactionError:
            continue
        rows.append(
            {
                "task_id": key,
                "name": state["task_name"],
                "active": bool(state.get("is_active", True)) and not state.get("is_migrated"),
                "bounty_left": int(state["total_bounty_amount"]),
                "bounty_per_round": int(state["bounty_amount_per_round"]),
                "minimum_stake": int(state["minimum_stake_amount"]),
                "nodes": len(state["stake_list"]),
            }
        )
    return sorted(rows, key=lambda row: (not row["active"], row["name"]))
