"""The task program's wallet and task lifecycle instructions: creating and funding a task,
staking and withdrawing, claiming rewards, switching a task on and off; and the faucet.

Funds move as on K2: a task's bounty comes from its creator or a funder account, a stake
from the node's staking account (an account the task program owns), rewards go to a
beneficiary named by the claimer.
"""

from __future__ import annotations

from typing import Any

from k2node.contract.rounds import Schedule
from k2node.settlement.base import TransactionError
from k2node.settlement.checks import (
    credit,
    debit,
    flag_arg,
    int_arg,
    require_program_owned,
    require_stake_pot,
    str_arg,
)
from k2node.settlement.world import TaskPrivate, World, new_task_state

MAX_TASK_NAME = 24
WITHDRAW_COOLDOWN_ROUNDS = 3
NETWORKS = ("IPFS", "ARWEAVE", "DEVELOPMENT")


def airdrop(world: World, to: str, amount: int) -> None:
    """The faucet of a development K2 (requestAirdrop); no transaction, no fee."""
    if amount <= 0:
        raise TransactionError("an airdrop must be of at least 1 lamport")
    credit(world, to, amount)


def _create_args(args: dict[str, Any]) -> dict[str, Any]:
    """CreateTask's arguments, checked, under the task state's field names."""
    name = str_arg(args, "task_name", MAX_TASK_NAME)
    if not name.strip():
        raise TransactionError("task_name must not be empty")
    round_time = int_arg(args, "round_time", 1)
    submission_window = int_arg(args, "submission_window", 1)
    audit_window = int_arg(args, "audit_window", 1)
    if round_time < submission_window + audit_window:
        raise TransactionError("round_time must be >= submission_window + audit_window")
    total_bounty = int_arg(args, "total_bounty_amount", 1)
    bounty_per_round = int_arg(args, "bounty_amount_per_round", 1)
    if bounty_per_round > total_bounty:
        raise TransactionError("bounty_amount_per_round exceeds total_bounty_amount")
    network = str_arg(args, "task_executable_network", 64, "DEVELOPMENT")
    if network not in NETWORKS:
        raise TransactionError("task_executable_network must be IPFS, ARWEAVE or DEVELOPMENT")
    checked = {
        "task_name": name,
        "round_time": round_time,
        "submission_window": submission_window,
        "audit_window": audit_window,
        "total_bounty_amount": total_bounty,
        "bounty_amount_per_round": bounty_per_round,
        "task_executable_network": network,
        "task_description": str_arg(args, "task_description", 64, ""),
        "task_audit_program": str_arg(args, "task_audit_program", 64, "main"),
        "task_metadata": str_arg(args, "task_metadata", 64, ""),
        "minimum_stake_amount": int_arg(args, "minimum_stake_amount", 0),
        "allowed_failed_distributions": int_arg(args, "allowed_failed_distributions", 0),
        "task_vars": str_arg(args, "local_vars", 64, ""),
    }
    return checked


def create_task(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    """The task's account, created just before in the same transaction, gets its state."""
    checked = _create_args(args)
    task_id = tx["task_id"]
    require_program_owned(world, task_id, "task")
    if task_id in world.tasks:
        raise TransactionError(f"task {task_id} already exists")
    debit(world, tx["signer"], checked["total_bounty_amount"])
    credit(world, tx["stake_pot"], checked["total_bounty_amount"])
    world.tasks[task_id] = new_task_state(task_id, tx["signer"], tx["stake_pot"], slot, checked)
    world.private[task_id] = TaskPrivate()
    return {"task_id": task_id}


def update_task(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    """A new version of a task, as create-task-cli sends it: a new task account (created just
    before in the same transaction) with the remaining bounty; the old one stops, points at
    the new, and keeps its stakes and unclaimed rewards for their owners to take out."""
    old_id, new_id = tx["task_id"], tx["new_task"]
    old = world.task(old_id)
    require_stake_pot(old, tx)
    if tx["payer"] != old["task_manager"]:
        raise TransactionError("only the task manager can update a task")
    if old["is_migrated"]:
        raise TransactionError(f"task {old_id} was already updated to {old['migrated_to']}")
    require_program_owned(world, new_id, "new task")
    if new_id in world.tasks:
        raise TransactionError(f"task {new_id} already exists")
    remaining = old["total_bounty_amount"]
    checked = _create_args(args | {"total_bounty_amount": remaining})
    debit(world, old["stake_pot_account"], remaining)
    credit(world, tx["new_stake_pot"], remaining)
    world.keep_task(new_id)
    world.tasks[new_id] = new_task_state(new_id, tx["payer"], tx["new_stake_pot"], slot, checked)
    world.private[new_id] = TaskPrivate()
    old |= {"is_migrated": True, "migrated_to": new_id, "is_active": False}
    old["total_bounty_amount"] = 0
    return {"task_id": new_id, "total_bounty_amount": remaining}


def fund_task(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    require_stake_pot(state, tx)
    require_program_owned(world, tx["signer"], "funder")
    amount = int_arg(args, "amount", 1)
    debit(world, tx["signer"], amount)
    credit(world, state["stake_pot_account"], amount)
    state["total_bounty_amount"] += amount
    return {"total_bounty_amount": state["total_bounty_amount"]}


def stake(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    require_stake_pot(state, tx)
    amount = int_arg(args, "amount", 1)
    ip_address = str_arg(args, "ip_address", 64, "")
    key = tx["signer"]
    require_program_owned(world, key, "staking")
    total = state["stake_list"].get(key, 0) + amount
    if total < state["minimum_stake_amount"]:
        raise TransactionError(
            f"stake {total} ROE is below the minimum {state['minimum_stake_amount']}"
        )
    debit(world, key, amount)
    credit(world, state["stake_pot_account"], amount)
    state["stake_list"][key] = total
    state["total_stake_amount"] += amount
    if ip_address:
        state["ip_address_list"][key] = ip_address
    return {"stake": total}


def withdraw(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    key = tx["signer"]
    staked = state["stake_list"].get(key)
    if staked is None:
        raise TransactionError("no stake to withdraw")
    current = Schedule.of(state).round_of(slot)
    last = world.private[tx["task_id"]].last_submission.get(key)
    if last is not None and last >= current - WITHDRAW_COOLDOWN_ROUNDS:
        raise TransactionError(
            f"withdraw refused: submitted for round {last}, within "
            f"{WITHDRAW_COOLDOWN_ROUNDS} rounds of round {current}"
        )
    debit(world, state["stake_pot_account"], staked)
    credit(world, key, staked)
    del state["stake_list"][key]
    state["ip_address_list"].pop(key, None)
    state["total_stake_amount"] -= staked
    return {"withdrawn": staked}


def claim_reward(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    require_stake_pot(state, tx)
    to = tx["beneficiary"]
    amount = state["available_balances"].get(tx["signer"], 0)
    if amount <= 0:
        raise TransactionError("nothing to claim")
    debit(world, state["stake_pot_account"], amount)
    state["available_balances"][tx["signer"]] = 0
    credit(world, to, amount)
    return {"claimed": amount}


def set_active(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    if tx["signer"] != state["task_manager"]:
        raise TransactionError("only the task manager can change is_active")
    active = flag_arg(args, "is_active")
    state["is_active"] = active
    return {"is_active": active}
