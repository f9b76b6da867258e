"""The local K2's world: balances, accounts that programs own, task states in the contract's
JSON shape, what the task program keeps beside them, and the signatures it has applied.

A transaction changes the world under a journal: balances, accounts and the task states it
touches are remembered as they were, so a refused instruction undoes the whole transaction.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from k2node.settlement.base import TransactionError
from k2node.settlement.reads import EVERYTHING, SharedReads


@dataclass
class TaskPrivate:
    """What the real program keeps in other accounts: lists, attempts, last submissions."""

    lists: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    attempt_submitters: dict[str, dict[str, str]] = field(default_factory=dict)
    last_submission: dict[str, int] = field(default_factory=dict)
    # round -> "<uploader>/<attempt>" -> chunk index -> hex of the chunk's bytes
    uploads: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # the round the old rounds were last pruned in (not kept: a reopened K2 prunes again)
    pruned_in: int = field(default=-1, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "lists": self.lists,
            "attempts": self.attempts,
            "attempt_submitters": self.attempt_submitters,
            "last_submission": self.last_submission,
            "uploads": self.uploads,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TaskPrivate:
        return cls(**raw)


@dataclass
class Journal:
    """What a transaction changed, as it was before (None: it did not exist)."""

    balances: dict[str, int | None] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    tasks: dict[str, tuple[dict[str, Any] | None, TaskPrivate | None]] = field(default_factory=dict)


@dataclass
class World:
    balances: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    private: dict[str, TaskPrivate] = field(default_factory=dict)
    # signature -> slot applied at, oldest first
    signatures: dict[str, int] = field(default_factory=dict)
    # accounts owned by a program (the rest are the System program's): owner, space
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    journal: Journal | None = None
    # what readers are handed: frozen copies of the task states' parts (not persisted)
    reads: SharedReads = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.reads = SharedReads(self.tasks)

    def set_balance(self, key: str, lamports: int) -> None:
        if self.journal is not None and key not in self.journal.balances:
            self.journal.balances[key] = self.balances.get(key)
        self.balances[key] = lamports

    def set_account(self, key: str, account: dict[str, Any]) -> None:
        if self.journal is not None and key not in self.journal.accounts:
            self.journal.accounts[key] = self.accounts.get(key)
        self.accounts[key] = account

    def keep_task(self, task_id: str) -> None:
        """Remember a task as it is, for a transaction that may yet be refused after it."""
        if self.journal is not None and task_id not in self.journal.tasks:
            state, private = self.tasks.get(task_id), self.private.get(task_id)
            self.journal.tasks[task_id] = (copy.deepcopy(state), copy.deepcopy(private))

    def undo(self, journal: Journal) -> None:
        for key, lamports in journal.balances.items():
            _restore(self.balances, key, lamports)
        for key, account in journal.accounts.items():
            _restore(self.accounts, key, account)
        for task_id, (state, private) in journal.tasks.items():
            _restore(self.tasks, task_id, state)
            _restore(self.private, task_id, private)
            self.reads.touch(task_id, EVERYTHING)

    def task(self, task_id: str) -> dict[str, Any]:
        state = self.tasks.get(task_id) if isinstance(task_id, str) else None
        if state is None:
            raise TransactionError(f"task {task_id!r} does not exist")
        return state

    def to_json(self) -> dict[str, Any]:
        """The world as JSON values; containers are shared with the world, not copied."""
        return {
            "balances": self.balances,
            "tasks": self.tasks,
            "private": {k: v.to_json() for k, v in self.private.items()},
            "signatures": self.signatures,
            "accounts": self.accounts,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> World:
        return cls(
            raw["balances"],
            raw["tasks"],
            {k: TaskPrivate.from_json(v) for k, v in raw["private"].items()},
            raw["signatures"],
            raw["accounts"],
        )


def _restore(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def new_task_state(
    task_id: str, manager: str, stake_pot: str, slot: int, checked: dict[str, Any]
) -> dict[str, Any]:
    """A created task's state; `checked` holds the validated CreateTask arguments."""
    return {
        "task_id": task_id,
        "task_name": checked["task_name"],
        "task_description": checked["task_description"],
        "task_manager": manager,
        "is_allowlisted": True,
        "is_active": True,
        "task_audit_program": checked["task_audit_program"],
        "task_executable_network": checked["task_executable_network"],
        "task_metadata": checked["task_metadata"],
        "stake_pot_account": stake_pot,
        "total_bounty_amount": checked["total_bounty_amount"],
        "bounty_amount_per_round": checked["bounty_amount_per_round"],
        "total_stake_amount": 0,
        "minimum_stake_amount": checked["minimum_stake_amount"],
        "current_round": 0,
        "available_balances": {},
        "stake_list": {},
        "ip_address_list": {},
        "round_time": checked["round_time"],
        "starting_slot": slot,
        "audit_window": checked["audit_window"],
        "submission_window": checked["submission_window"],
        "submissions": {},
        "submissions_audit_trigger": {},
        "distribution_rewards_submission": {},
        "distributions_audit_trigger": {},
        "distributions_audit_record": {},
        "task_vars": checked["task_vars"],
        "koii_vars": {},
        "is_migrated": False,
        "migrated_to": "",
        "allowed_failed_distributions": checked["allowed_failed_distributions"],
    }
