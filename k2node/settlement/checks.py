"""The task program's checks of instruction arguments, and the rules several instructions
share; each refuses with a TransactionError that says why."""

from __future__ import annotations

from typing import Any

from k2node.contract.rounds import Window
from k2node.contract.values import is_int
from k2node.settlement.base import TransactionError
from k2node.settlement.wire import PROGRAM_ID
from k2node.settlement.world import World

PROGRAM_OWNER = str(PROGRAM_ID)


def int_arg(args: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = args.get(name)
    if not is_int(value) or value < minimum:
        raise TransactionError(f"{name} must be an integer >= {minimum}")
    return value


def str_arg(args: dict[str, Any], name: str, max_len: int, default: str | None = None) -> str:
    value = args.get(name, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise TransactionError(f"{name} must be a string of at most {max_len} characters")
    return value


def flag_arg(args: dict[str, Any], name: str) -> bool:
    """A boolean as the wire carries it: an integer, 1 or 0."""
    value = args.get(name)
    if value not in (0, 1) or not is_int(value):
        raise TransactionError(f"{name} must be 1 or 0, got {value!r}")
    return bool(value)


def round_arg(args: dict[str, Any]) -> tuple[int, str]:
    """The round an instruction is about, and its key in the round sections."""
    round_ = int_arg(args, "round", 0)
    return round_, str(round_)


def check_window(window: Window, slot: int, what: str, round_: int) -> None:
    if slot not in window:
        raise TransactionError(
            f"{what} for round {round_} is accepted in slots "
            f"[{window.start}, {window.end}), now {slot}"
        )


def debit(world: World, key: str, amount: int) -> None:
    have = world.balances.get(key, 0)
    if have < amount:
        raise TransactionError(f"insufficient balance: {have} ROE, needs {amount}")
    world.set_balance(key, have - amount)


def credit(world: World, key: str, amount: int) -> None:
    world.set_balance(key, world.balances.get(key, 0) + amount)


def require_stake_pot(state: dict[str, Any], tx: dict[str, Any]) -> None:
    if tx.get("stake_pot", state["stake_pot_account"]) != state["stake_pot_account"]:
        raise TransactionError(f"the task's stake pot is {state['stake_pot_account']}")


def require_program_owned(world: World, key: str, what: str) -> None:
    if world.accounts.get(key, {}).get("owner") != PROGRAM_OWNER:
        raise TransactionError(f"the {what} account {key} is not owned by the task program")


def require_stake(state: dict[str, Any], key: str) -> None:
    stake = state["stake_list"].get(key, 0)
    if stake <= 0 or stake < state["minimum_stake_amount"]:
        raise TransactionError(f"{key} is not staked on this task")


def require_participant(state: dict[str, Any], key: str, rkey: str) -> None:
    """Staked, or a submitter of the round: a node selected for a round's distribution
    stays able to submit and pay it out after being slashed below the minimum."""
    if key in state["submissions"].get(rkey, {}):
        return
    require_stake(state, key)
