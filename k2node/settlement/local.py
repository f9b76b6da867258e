"""LocalK2: the embedded settlement layer.

A slot clock and the task program's rules over task states in the contract's JSON shape.
Transactions are ed25519-signed by the acting key and applied one at a time; every applied
transaction is appended to a LevelDB log with the slot it was applied at, and the world is
snapshotted now and then, so a restart replays to exactly the state it had.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import base58
import structlog

from k2node.crypto import decode_pubkey
from k2node.rounds import MAX_DISTRIBUTION_RETRIES, Schedule
from k2node.rules import MAX_SUBMISSION_BYTES, count_votes
from k2node.settlement.base import (
    DEFAULT_SLOT_MS,
    DuplicateTransaction,
    SlotClock,
    TransactionError,
    check_tx_signature,
)
from k2node.store import Store

log = structlog.get_logger("k2node.k2")

MAX_TASK_NAME = 24
MAX_DISTRIBUTION_ENTRIES = 200_000
# A transaction signed more than this many slots ago (or ahead) is refused, as a stale blockhash.
TX_MAX_AGE_SLOTS = 150
# Applied signatures are remembered this long, so a resent transaction is recognised.
SIGNATURE_MEMORY_SLOTS = 5_000
# Rounds older than this are pruned from task states, so state stays bounded.
KEEP_ROUNDS = 12
WITHDRAW_COOLDOWN_ROUNDS = 3
SNAPSHOT_EVERY = 2_000

ROUND_SECTIONS = (
    "submissions",
    "submissions_audit_trigger",
    "distribution_rewards_submission",
    "distributions_audit_trigger",
    "distributions_audit_record",
)
_OPTION_SECTIONS = {
    "is_submission_required": ("submissions", "submissions_audit_trigger"),
    "is_distribution_required": (
        "distribution_rewards_submission",
        "distributions_audit_trigger",
        "distributions_audit_record",
    ),
    "is_available_balances_required": ("available_balances",),
    "is_stake_list_required": ("stake_list",),
}
_HEAVY_SECTIONS = tuple(s for group in _OPTION_SECTIONS.values() for s in group)


def _int_arg(args: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = args.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TransactionError(f"{name} must be an integer >= {minimum}")
    return value


def _str_arg(args: dict[str, Any], name: str, max_len: int, default: str | None = None) -> str:
    value = args.get(name, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise TransactionError(f"{name} must be a string of at most {max_len} characters")
    return value


def _pubkey_arg(args: dict[str, Any], name: str) -> str:
    try:
        return decode_pubkey(args.get(name))
    except ValueError as exc:
        raise TransactionError(f"{name}: {exc}") from None


@dataclass
class _TaskPrivate:
    """What the real program keeps in other accounts: lists, attempts, last submissions."""

    lists: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    attempt_submitters: dict[str, dict[str, str]] = field(default_factory=dict)
    last_submission: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "lists": self.lists,
            "attempts": self.attempts,
            "attempt_submitters": self.attempt_submitters,
            "last_submission": self.last_submission,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> _TaskPrivate:
        return cls(**raw)


@dataclass
class _World:
    balances: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    private: dict[str, _TaskPrivate] = field(default_factory=dict)
    signatures: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "balances": self.balances,
            "tasks": self.tasks,
            "private": {k: v.to_json() for k, v in self.private.items()},
            "signatures": self.signatures,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> _World:
        return cls(
            raw["balances"],
            raw["tasks"],
            {k: _TaskPrivate.from_json(v) for k, v in raw["private"].items()},
            raw["signatures"],
        )


class LocalK2:
    def __init__(
        self,
        store: Store,
        world: _World,
        genesis: float,
        slot_ms: float,
        seq: int,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._world = world
        self._slots = SlotClock(genesis, slot_ms)
        self._seq = seq
        self._since_snapshot = 0
        self._clock = clock
        self.tx_count: dict[str, int] = {}  # received transactions by instruction (tests, metrics)

    @classmethod
    def open(
        cls,
        path: Path,
        slot_ms: float = DEFAULT_SLOT_MS,
        clock: Callable[[], float] = time.time,
    ) -> LocalK2:
        """Open (or create) the local K2 at `path` and replay it to its last state."""
        if slot_ms <= 0:
            raise ValueError("slot time must be positive")
        store = Store.open(path)
        meta = store.get("meta")
        if meta is None:
            meta = {"genesis": clock(), "slot_ms": slot_ms}
            store.put("meta", meta)
        elif meta["slot_ms"] != slot_ms:
            log.warning("k2_slot_time_kept", stored=meta["slot_ms"], asked=slot_ms)
        snapshot = store.get("snapshot")
        world = _World.from_json(snapshot["world"]) if snapshot else _World()
        seq = snapshot["seq"] if snapshot else 0
        k2 = cls(store, world, float(meta["genesis"]), float(meta["slot_ms"]), seq, clock)
        replayed = 0
        for _key, entry in store.items("log/"):
            if entry["seq"] <= seq:
                continue
            k2._apply(entry["tx"], entry["slot"])
            k2._seq = entry["seq"]
            replayed += 1
        log.info(
            "k2_opened",
            path=str(path),
            seq=k2._seq,
            replayed=replayed,
            slot=k2.current_slot(),
            tasks=len(world.tasks),
        )
        return k2

    def close(self) -> None:
        if not self._store.closed:
            self._snapshot()
            self._store.close()

    # -- clock -------------------------------------------------------------------------
    @property
    def slot_ms(self) -> float:
        return self._slots.slot_ms

    def current_slot(self) -> int:
        return self._slots.slot_at(self._clock())

    def wall_time_of_slot(self, slot: int) -> float:
        return self._slots.time_of(slot)

    # -- reads -------------------------------------------------------------------------
    def _task(self, task_id: str) -> dict[str, Any]:
        state = self._world.tasks.get(task_id) if isinstance(task_id, str) else None
        if state is None:
            raise TransactionError(f"task {task_id!r} does not exist")
        return state

    async def get_task_state(
        self, task_id: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        state = self._task(task_id)
        options = options or {}
        wanted = {s for opt, group in _OPTION_SECTIONS.items() if options.get(opt) for s in group}
        out = {
            k: (v if not isinstance(v, dict | list) else copy.deepcopy(v))
            if k not in _HEAVY_SECTIONS or k in wanted
            else {}
            for k, v in state.items()
        }
        out["current_round"] = max(0, Schedule.of(state).round_of(self.current_slot()))
        return out

    async def get_round_sections(
        self, task_id: str, round_: int, sections: tuple[str, ...]
    ) -> dict[str, Any]:
        state = self._task(task_id)
        key = str(round_)
        return {s: {key: copy.deepcopy(state[s].get(key, {}))} for s in sections}

    async def get_distribution_list(
        self, task_id: str, submitter: str, round_: int
    ) -> dict[str, int] | None:
        self._task(task_id)
        private = self._world.private[task_id]
        found = private.lists.get(str(round_), {}).get(submitter)
        return dict(found) if found is not None else None

    async def get_balance(self, pubkey: str) -> int:
        return self._world.balances.get(pubkey, 0)

    async def transaction_applied(self, signature: str) -> bool:
        return signature in self._world.signatures

    # -- writes ------------------------------------------------------------------------
    async def airdrop(self, pubkey: str, amount: int) -> None:
        """The embedded faucet; only the node itself reaches it, never a task or a peer."""
        self._commit({"ix": "Airdrop", "args": {"to": pubkey, "amount": amount}})

    async def send(self, tx: dict[str, Any]) -> dict[str, Any]:
        check_tx_signature(tx)
        ix = tx["ix"]
        if ix == "Airdrop":
            raise TransactionError("Airdrop is not a signed instruction")
        self.tx_count[ix] = self.tx_count.get(ix, 0) + 1
        if tx["signature"] in self._world.signatures:
            raise DuplicateTransaction("transaction already applied")
        slot = self.current_slot()
        if not isinstance(tx["slot"], int) or not (
            slot - TX_MAX_AGE_SLOTS <= tx["slot"] <= slot + 5
        ):
            raise TransactionError(f"transaction expired (signed at slot {tx['slot']}, now {slot})")
        return self._commit(tx)

    def _commit(self, tx: dict[str, Any]) -> dict[str, Any]:
        slot = self.current_slot()
        result = self._apply(tx, slot)  # raises before changing anything when refused
        self._seq += 1
        self._store.put(f"log/{self._seq:012d}", {"seq": self._seq, "tx": tx, "slot": slot})
        self._since_snapshot += 1
        if self._since_snapshot >= SNAPSHOT_EVERY:
            self._snapshot()
        return result

    def _snapshot(self) -> None:
        stale = [k for k in self._store.keys("log/")]
        self._store.put_many(
            {"snapshot": {"seq": self._seq, "world": self._world.to_json()}}, delete=stale
        )
        self._since_snapshot = 0

    def _apply(self, tx: dict[str, Any], slot: int) -> dict[str, Any]:
        ix = tx["ix"]
        handler = _INSTRUCTIONS.get(ix)
        if handler is None:
            raise TransactionError(f"unknown instruction {ix!r}")
        args = tx.get("args")
        if not isinstance(args, dict):
            raise TransactionError("args must be an object")
        result = handler(self, tx, args, slot)
        if "signature" in tx:
            self._world.signatures[tx["signature"]] = slot
            self._prune_signatures(slot)
        return result

    def _prune_signatures(self, slot: int) -> None:
        sigs = self._world.signatures
        oldest = next(iter(sigs.values()), slot)
        if oldest < slot - SIGNATURE_MEMORY_SLOTS:
            self._world.signatures = {
                k: v for k, v in sigs.items() if v >= slot - SIGNATURE_MEMORY_SLOTS
            }

    # -- instructions ------------------------------------------------------------------
    def _ix_airdrop(self, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
        to = _pubkey_arg(args, "to")
        amount = _int_arg(args, "amount", 1)
        self._world.balances[to] = self._world.balances.get(to, 0) + amount
        return {"balance": self._world.balances[to]}

    def _debit(self, key: str, amount: int) -> None:
        have = self._world.balances.get(key, 0)
        if have < amount:
            raise TransactionError(f"insufficient balance: {have} ROE, needs {amount}")
        self._world.balances[key] = have - amount

    def _ix_create_task(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        name = _str_arg(args, "task_name", MAX_TASK_NAME)
        if not name.strip():
            raise TransactionError("task_name must not be empty")
        round_time = _int_arg(args, "round_time", 1)
        submission_window = _int_arg(args, "submission_window", 1)
        audit_window = _int_arg(args, "audit_window", 1)
        if round_time < submission_window + audit_window:
            raise TransactionError("round_time must be >= submission_window + audit_window")
        total_bounty = _int_arg(args, "total_bounty_amount", 1)
        bounty_per_round = _int_arg(args, "bounty_amount_per_round", 1)
        if bounty_per_round > total_bounty:
            raise TransactionError("bounty_amount_per_round exceeds total_bounty_amount")
        network = _str_arg(args, "task_executable_network", 64, "DEVELOPMENT")
        if network not in ("IPFS", "ARWEAVE", "DEVELOPMENT"):
            raise TransactionError("task_executable_network must be IPFS, ARWEAVE or DEVELOPMENT")
        fields = {
            "description": _str_arg(args, "task_description", 64, ""),
            "program": _str_arg(args, "task_audit_program", 64, "main"),
            "metadata": _str_arg(args, "task_metadata", 64, ""),
            "min_stake": _int_arg(args, "minimum_stake_amount", 0),
            "failed": _int_arg(args, "allowed_failed_distributions", 0),
        }
        task_vars = args.get("task_vars", {})
        if not isinstance(task_vars, dict) or len(json.dumps(task_vars)) > 4096:
            raise TransactionError("task_vars must be an object of at most 4096 bytes")
        self._debit(tx["signer"], total_bounty)
        task_id = base58.b58encode(hashlib.sha256(tx["signature"].encode()).digest()).decode()
        pot = hashlib.sha256(b"stake_pot:" + task_id.encode()).digest()
        self._world.tasks[task_id] = {
            "task_id": task_id,
            "task_name": name,
            "task_description": fields["description"],
            "task_manager": tx["signer"],
            "is_allowlisted": True,
            "is_active": True,
            "task_audit_program": fields["program"],
            "task_executable_network": network,
            "task_metadata": fields["metadata"],
            "stake_pot_account": base58.b58encode(pot).decode(),
            "total_bounty_amount": total_bounty,
            "bounty_amount_per_round": bounty_per_round,
            "total_stake_amount": 0,
            "minimum_stake_amount": fields["min_stake"],
            "current_round": 0,
            "available_balances": {},
            "stake_list": {},
            "ip_address_list": {},
            "round_time": round_time,
            "starting_slot": slot,
            "audit_window": audit_window,
            "submission_window": submission_window,
            "submissions": {},
            "submissions_audit_trigger": {},
            "distribution_rewards_submission": {},
            "distributions_audit_trigger": {},
            "distributions_audit_record": {},
            "task_vars": task_vars,
            "koii_vars": {},
            "is_migrated": False,
            "migrated_to": "",
            "allowed_failed_distributions": fields["failed"],
        }
        self._world.private[task_id] = _TaskPrivate()
        return {"task_id": task_id}

    def _ix_fund_task(self, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        amount = _int_arg(args, "amount", 1)
        self._debit(tx["signer"], amount)
        state["total_bounty_amount"] += amount
        return {"total_bounty_amount": state["total_bounty_amount"]}

    def _ix_stake(self, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        amount = _int_arg(args, "amount", 1)
        ip_address = _str_arg(args, "ip_address", 64, "")
        key = tx["signer"]
        total = state["stake_list"].get(key, 0) + amount
        if total < state["minimum_stake_amount"]:
            raise TransactionError(
                f"stake {total} ROE is below the minimum {state['minimum_stake_amount']}"
            )
        self._debit(key, amount)
        state["stake_list"][key] = total
        state["total_stake_amount"] += amount
        if ip_address:
            state["ip_address_list"][key] = ip_address
        return {"stake": total}

    def _ix_withdraw(self, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        key = tx["signer"]
        stake = state["stake_list"].get(key)
        if stake is None:
            raise TransactionError("no stake to withdraw")
        current = Schedule.of(state).round_of(slot)
        last = self._world.private[tx["task_id"]].last_submission.get(key)
        if last is not None and last >= current - WITHDRAW_COOLDOWN_ROUNDS:
            raise TransactionError(
                f"withdraw refused: submitted for round {last}, within "
                f"{WITHDRAW_COOLDOWN_ROUNDS} rounds of round {current}"
            )
        del state["stake_list"][key]
        state["ip_address_list"].pop(key, None)
        state["total_stake_amount"] -= stake
        self._world.balances[key] = self._world.balances.get(key, 0) + stake
        return {"withdrawn": stake}

    def _require_stake(self, state: dict[str, Any], key: str) -> None:
        stake = state["stake_list"].get(key, 0)
        if stake <= 0 or stake < state["minimum_stake_amount"]:
            raise TransactionError(f"{key} is not staked on this task")

    def _require_participant(self, state: dict[str, Any], key: str, rkey: str) -> None:
        """Staked, or a submitter of the round: a node selected for a round's distribution
        stays able to submit and pay it out after being slashed below the minimum."""
        if key in state["submissions"].get(rkey, {}):
            return
        self._require_stake(state, key)

    def _round_arg(self, args: dict[str, Any]) -> tuple[int, str]:
        round_ = _int_arg(args, "round", 0)
        return round_, str(round_)

    def _check_window(self, window: Any, slot: int, what: str, round_: int) -> None:
        if slot not in window:
            raise TransactionError(
                f"{what} for round {round_} is accepted in slots "
                f"[{window.start}, {window.end}), now {slot}"
            )

    def _ix_submit_task(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        key = tx["signer"]
        if not state["is_active"]:
            raise TransactionError("task is not active")
        self._require_stake(state, key)
        value = args.get("submission")
        if not isinstance(value, str):
            raise TransactionError("submission must be a string")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_SUBMISSION_BYTES:
            raise TransactionError(
                f"submission is {size} bytes, the limit is {MAX_SUBMISSION_BYTES}"
            )
        round_, rkey = self._round_arg(args)
        schedule = Schedule.of(state)
        self._check_window(schedule.submission_of(round_), slot, "submission", round_)
        entries = state["submissions"].setdefault(rkey, {})
        if key in entries:
            raise TransactionError(f"already submitted for round {round_}")
        entries[key] = {"submission_value": value, "slot": slot, "round": round_}
        self._world.private[tx["task_id"]].last_submission[key] = round_
        state["current_round"] = schedule.round_of(slot)
        self._prune(state, schedule.round_of(slot))
        return {"round": round_, "slot": slot}

    def _vote(
        self,
        tx: dict[str, Any],
        args: dict[str, Any],
        entries_section: str,
        trigger_section: str,
        window: Any,
        slot: int,
    ) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        voter = tx["signer"]
        self._require_stake(state, voter)
        round_, rkey = self._round_arg(args)
        candidate = _pubkey_arg(args, "candidate")
        is_valid = args.get("is_valid")
        if not isinstance(is_valid, bool):
            raise TransactionError("is_valid must be a boolean")
        self._check_window(window(round_), slot, "audit", round_)
        if candidate not in state[entries_section].get(rkey, {}):
            raise TransactionError(f"{candidate} has no entry to audit in round {round_}")
        if candidate == voter:
            raise TransactionError("a key cannot audit itself")
        triggers = state[trigger_section].setdefault(rkey, {})
        trigger = triggers.get(candidate)
        if trigger is None:
            if is_valid:
                raise TransactionError("no audit trigger to vote on")
            triggers[candidate] = {"trigger_by": voter, "slot": slot, "votes": []}
            return {"trigger": "raised"}
        if voter == trigger["trigger_by"] or any(v["voter"] == voter for v in trigger["votes"]):
            raise TransactionError(f"already voted on {candidate} for round {round_}")
        trigger["votes"].append({"is_valid": is_valid, "voter": voter, "slot": slot})
        return {"trigger": "voted"}

    def _ix_audit_submissions(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        schedule = Schedule.of(self._task(tx["task_id"]))
        return self._vote(
            tx, args, "submissions", "submissions_audit_trigger", schedule.audit_of, slot
        )

    def _attempt(self, task_id: str, round_: int) -> int:
        attempt = self._world.private[task_id].attempts.get(str(round_), 0)
        allowed = min(MAX_DISTRIBUTION_RETRIES, self._task(task_id)["allowed_failed_distributions"])
        if attempt > allowed:
            raise TransactionError(f"round {round_} has no distribution attempts left")
        return attempt

    def _ix_audit_distribution(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        task_id = tx["task_id"]
        schedule = Schedule.of(self._task(task_id))
        round_, _ = self._round_arg(args)
        attempt = self._attempt(task_id, round_)
        return self._vote(
            tx,
            args,
            "distribution_rewards_submission",
            "distributions_audit_trigger",
            lambda r: schedule.distribution_audit_of(r, attempt),
            slot,
        )

    def _ix_upload_distribution_list(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        task_id = tx["task_id"]
        state = self._task(task_id)
        key = tx["signer"]
        round_, rkey = self._round_arg(args)
        self._require_participant(state, key, rkey)
        attempt = self._attempt(task_id, round_)
        window = Schedule.of(state).distribution_of(round_, attempt)
        self._check_window(window, slot, "distribution list", round_)
        dist = args.get("list")
        if not isinstance(dist, dict) or len(dist) > MAX_DISTRIBUTION_ENTRIES:
            raise TransactionError(
                f"list must be an object of at most {MAX_DISTRIBUTION_ENTRIES} entries"
            )
        for node, amount in dist.items():
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise TransactionError(f"amount for {node[:60]} is not an integer")
            try:
                decode_pubkey(node)
            except ValueError as exc:
                raise TransactionError(f"list key: {exc}") from None
        if key in state["distribution_rewards_submission"].get(rkey, {}):
            raise TransactionError(f"already submitted a distribution list for round {round_}")
        self._world.private[task_id].lists.setdefault(rkey, {})[key] = dict(dist)
        return {"entries": len(dist)}

    def _ix_submit_distribution_list(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        task_id = tx["task_id"]
        state = self._task(task_id)
        private = self._world.private[task_id]
        key = tx["signer"]
        round_, rkey = self._round_arg(args)
        self._require_participant(state, key, rkey)
        attempt = self._attempt(task_id, round_)
        window = Schedule.of(state).distribution_of(round_, attempt)
        self._check_window(window, slot, "distribution submission", round_)
        if key not in private.lists.get(rkey, {}):
            raise TransactionError(f"no distribution list uploaded for round {round_}")
        submitters = private.attempt_submitters.setdefault(rkey, {})
        if str(attempt) in submitters:
            raise TransactionError(f"round {round_} already has a distribution list")
        submitters[str(attempt)] = key
        state["distribution_rewards_submission"].setdefault(rkey, {})[key] = {
            "submission_value": key,
            "slot": slot,
            "round": round_,
        }
        return {"round": round_, "attempt": attempt}

    def _ix_payout(self, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
        task_id = tx["task_id"]
        state = self._task(task_id)
        private = self._world.private[task_id]
        round_, rkey = self._round_arg(args)
        self._require_participant(state, tx["signer"], rkey)
        records = state["distributions_audit_record"]
        attempt = private.attempts.get(rkey, 0)
        submitter = private.attempt_submitters.get(rkey, {}).get(str(attempt))
        if records.get(rkey) == "PayoutSuccessful" or (rkey in records and submitter is None):
            return {"changed": False, "record": records[rkey]}
        if submitter is None:
            raise TransactionError(f"no distribution list submitted for round {round_}")
        opens = Schedule.of(state).payout_opens(round_, attempt)
        if slot < opens:
            raise TransactionError(f"payout of round {round_} opens at slot {opens}, now {slot}")
        trigger = state["distributions_audit_trigger"].get(rkey, {}).get(submitter)
        dist = private.lists[rkey][submitter]
        paid = sum(v for v in dist.values() if v > 0)
        if count_votes(trigger) < 0 or paid > state["total_bounty_amount"]:
            records[rkey] = "PayoutFailed"
            private.attempts[rkey] = attempt + 1
            return {"changed": True, "record": "PayoutFailed", "submitter": submitter}
        for node, amount in dist.items():
            if amount > 0:
                balances = state["available_balances"]
                balances[node] = balances.get(node, 0) + amount
            elif amount < 0 and node in state["stake_list"]:
                cut = min(-amount, state["stake_list"][node])
                state["stake_list"][node] -= cut
                state["total_stake_amount"] -= cut
        state["total_bounty_amount"] -= paid
        records[rkey] = "PayoutSuccessful"
        return {"changed": True, "record": "PayoutSuccessful", "submitter": submitter}

    def _ix_claim_reward(
        self, tx: dict[str, Any], args: dict[str, Any], slot: int
    ) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        to = _pubkey_arg(args, "to")
        amount = state["available_balances"].get(tx["signer"], 0)
        if amount <= 0:
            raise TransactionError("nothing to claim")
        state["available_balances"][tx["signer"]] = 0
        self._world.balances[to] = self._world.balances.get(to, 0) + amount
        return {"claimed": amount}

    def _ix_set_active(self, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
        state = self._task(tx["task_id"])
        if tx["signer"] != state["task_manager"]:
            raise TransactionError("only the task manager can change is_active")
        active = args.get("is_active")
        if not isinstance(active, bool):
            raise TransactionError("is_active must be a boolean")
        state["is_active"] = active
        return {"is_active": active}

    def _prune(self, state: dict[str, Any], current_round: int) -> None:
        oldest = current_round - KEEP_ROUNDS
        private = self._world.private[state["task_id"]]
        for section in ROUND_SECTIONS:
            for rkey in [k for k in state[section] if int(k) < oldest]:
                del state[section][rkey]
        for table in (private.lists, private.attempts, private.attempt_submitters):
            for rkey in [k for k in table if int(k) < oldest]:
                del table[rkey]


_Handler = Callable[[LocalK2, dict[str, Any], dict[str, Any], int], dict[str, Any]]
_INSTRUCTIONS: dict[str, _Handler] = {
    "Airdrop": LocalK2._ix_airdrop,
    "CreateTask": LocalK2._ix_create_task,
    "FundTask": LocalK2._ix_fund_task,
    "Stake": LocalK2._ix_stake,
    "Withdraw": LocalK2._ix_withdraw,
    "SubmitTask": LocalK2._ix_submit_task,
    "AuditSubmissions": LocalK2._ix_audit_submissions,
    "AuditDistribution": LocalK2._ix_audit_distribution,
    "UploadDistributionList": LocalK2._ix_upload_distribution_list,
    "SubmitDistributionList": LocalK2._ix_submit_distribution_list,
    "Payout": LocalK2._ix_payout,
    "ClaimReward": LocalK2._ix_claim_reward,
    "SetActive": LocalK2._ix_set_active,
}
