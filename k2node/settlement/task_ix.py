"""The task program's wallet and task lifecycle instructions: the faucet, creating and funding
a task, staking and withdrawing, claiming rewards, switching a task on and off."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import base58

from k2node.contract.rounds import Schedule
from k2node.settlement.base import TransactionError
from k2node.settlement.checks import credit, debit, int_arg, pubkey_arg, str_arg
from k2node.settlement.world import TaskPrivate, World, new_task_state

MAX_TASK_NAME = 24
MAX_TASK_VARS_BYTES = 4096
WITHDRAW_COOLDOWN_ROUNDS = 3
NETWORKS = ("IPFS", "ARWEAVE", "DEVELOPMENT")


def airdrop(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    to = pubkey_arg(args, "to")
    credit(world, to, int_arg(args, "amount", 1))
    return {"balance": world.balances[to]}


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
    }
    task_vars = args.get("task_vars", {})
    if not isinstance(task_vars, dict) or len(json.dumps(task_vars)) > MAX_TASK_VARS_BYTES:
        raise TransactionError(
            f"task_vars must be an object of at most {MAX_TASK_VARS_BYTES} bytes"
        )
    checked["task_vars"] = task_vars
    return checked


def create_task(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    checked = _create_args(args)
    debit(world, tx["signer"], checked["total_bounty_amount"])
    # the program derives a task's accounts from its creating transaction
    task_id = base58.b58encode(hashlib.sha256(tx["signature"].encode()).digest()).decode()
    pot = base58.b58encode(hashlib.sha256(b"stake_pot:" + task_id.encode()).digest()).decode()
    world.tasks[task_id] = new_task_state(task_id, tx["signer"], pot, slot, checked)
    world.private[task_id] = TaskPrivate()
    return {"task_id": task_id}


def fund_task(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    amount = int_arg(args, "amount", 1)
    debit(world, tx["signer"], amount)
    state["total_bounty_amount"] += amount
    return {"total_bounty_amount": state["total_bounty_amount"]}


def stake(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    amount = int_arg(args, "amount", 1)
    ip_address = str_arg(args, "ip_address", 64, "")
    key = tx["signer"]
    total = state["stake_list"].get(key, 0) + amount
    if total < state["minimum_stake_amount"]:
        raise TransactionError(
            f"stake {total} ROE is below the minimum {state['minimum_stake_amount']}"
        )
    debit(world, key, amount)
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
    del state["stake_list"][key]
    state["ip_address_list"].pop(key, None)
    state["total_stake_amount"] -= staked
    credit(world, key, staked)
    return {"withdrawn": staked}


def claim_reward(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    to = pubkey_arg(args, "to")
    amount = state["available_balances"].get(tx["signer"], 0)
    if amount <= 0:
        raise TransactionError("nothing to claim")
    state["available_balances"][tx["signer"]] = 0
    credit(world, to, amount)
    return {"claimed": amount}


def set_active(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    if tx["signer"] != state["task_manager"]:
        raise TransactionError("only the task manager can change is_active")
    active = args.get("is_active")
    if not isinstance(active, bool):
        raise TransactionError("is_active must be a boolean")
    state["is_active"] = active
    return {"is_active": active}
