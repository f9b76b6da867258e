"""What the local K2 hands its readers: frozen copies of task-state parts, shared by every
reader until a transaction changes them (k2node/contract/shared.py).

A part is one round of a round section (`submissions["7"]`) or a whole other container
(`stake_list`). The world changes them in place, so each applied instruction says what it
touched (`touched_by`): a part with touched entries is copied again entry by entry (a new
object: readers holding the old one keep it unchanged), a part touched all over is copied
again whole. A part the world replaced (a round pruned, a task restored after a refused
transaction) is recognised by its identity and copied again too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from k2node.contract.shared import EMPTY, FrozenDict, freeze
from k2node.contract.task_state import HEAVY_SECTIONS, ROUND_SECTIONS

ALL = None  # every entry of a part
# Parts copied between two sweeps for parts the world no longer has.
SWEEP_EVERY = 2_000
# Frozen distribution lists kept (a few rounds of a few tasks).
KEPT_LISTS = 64
# (section, round key or None for a whole container, entry key or ALL)
Touch = tuple[str, str | None, str | None]
EVERYTHING: list[Touch] = [("*", None, ALL)]


@dataclass
class _Part:
    source: Any  # the world's own object this copies
    frozen: Any
    touched: set[str] = field(default_factory=set)
    whole: bool = False  # touched all over


def touched_by(ix: str, tx: dict[str, Any], fields: dict[str, Any]) -> list[Touch]:
    """The parts of a task's state an applied instruction may have changed in place."""
    rkey = str(fields.get("round"))
    signer = tx["signer"]
    if ix == "SubmitTask":
        return [("submissions", rkey, signer)]  # (its pruning replaces whole rounds)
    if ix == "AuditSubmissions":
        return [("submissions_audit_trigger", rkey, tx["candidate"])]
    if ix == "AuditDistribution":
        return [("distributions_audit_trigger", rkey, tx["candidate"])]
    if ix == "SubmitDistributionList":
        return [("distribution_rewards_submission", rkey, signer)]
    if ix in ("Stake", "Withdraw"):
        return [("stake_list", None, signer), ("ip_address_list", None, signer)]
    if ix == "ClaimReward":
        return [("available_balances", None, signer)]
    if ix in ("UploadDistributionList", "SetActive", "FundTask"):
        return []  # what they change is not a shared part
    return EVERYTHING  # a payout, a task created or updated: many entries of many parts


class SharedReads:
    """The frozen parts of every task of a world, per task and (section, round key or None)."""

    # Tests set this: every read is compared with the world (a touch left out shows).
    check = False

    def __init__(self, tasks: dict[str, dict[str, Any]]) -> None:
        self._tasks = tasks  # the world's task states
        self._parts: dict[str, dict[tuple[str, str | None], _Part]] = {}
        # a whole section as last handed out, with what it was made from: the touches of
        # the section and of the whole task so far, the world's section and its rounds
        self._sections: dict[tuple[str, str], tuple[tuple[int, int], Any, Any, Any]] = {}
        self._versions: dict[tuple[str, str], int] = {}  # per (task, section or "*")
        # per task: how many instructions have changed it (any field, scalars too)
        self._generation: dict[str, int] = {}
        # a whole state as last handed out, per (task, heavy sections wanted): made from
        # which generation of which world object
        self._states: dict[tuple[str, frozenset[str]], tuple[int, Any, dict[str, Any]]] = {}
        self._copied = 0  # parts copied since the last sweep
        # submitted lists never change: (the world's list, its frozen copy), newest last
        self._lists: OrderedDict[int, tuple[dict[str, Any], FrozenDict]] = OrderedDict()

    def touch(self, task_id: str, touches: list[Touch]) -> None:
        """An instruction changed the task (`touches`: the shared parts it changed)."""
        self._generation[task_id] = self._generation.get(task_id, 0) + 1
        for section, _, _ in touches:
            index = (task_id, section)  # ("*": every section of the task)
            self._versions[index] = self._versions.get(index, 0) + 1
        parts = self._parts.get(task_id)
        if not parts:
            return
        for section, rkey, key in touches:
            if section == "*":
                for each in parts.values():
                    each.whole = True
                return
            part = parts.get((section, rkey))
            if part is None:
                continue
            if key is ALL:
                part.whole = True
            else:
                part.touched.add(key)

    def part(self, state: dict[str, Any], section: str, rkey: str | None) -> Any:
        """The frozen copy of `state[section][rkey]` (or of `state[section]`)."""
        live = state[section] if rkey is None else state[section].get(rkey)
        if not isinstance(live, dict):
            return EMPTY if live is None else freeze(live)  # a round's record is a string
        parts = self._parts.setdefault(state["task_id"], {})
        part = parts.get((section, rkey))
        if part is None or part.source is not live or part.whole:
            part = parts[section, rkey] = _Part(live, freeze(live))
            self._copied += 1
            if self._copied > SWEEP_EVERY:
                self._sweep()
        elif part.touched:
            fresh = dict(part.frozen)
            for key in part.touched:
                if key in live:
                    fresh[key] = freeze(live[key])
                else:
                    fresh.pop(key, None)
            part.frozen, part.touched = FrozenDict(fresh), set()
        if self.check and part.frozen != live:
            raise AssertionError(f"shared read of {section}[{rkey}] differs from the world")
        return part.frozen

    def task_state(self, state: dict[str, Any], wanted: frozenset[str]) -> dict[str, Any]:
        """The task's state with its containers frozen, the heavy sections only if
        `wanted`: a new dict (the caller's to add to), its values shared. Made again only
        once an instruction has changed the task; until then every reader of the same
        sections gets the same values (a simulation's nodes all read at one instant)."""
        task_id = state["task_id"]
        index = (task_id, wanted)
        generation = self._generation.get(task_id, 0)
        cached = self._states.get(index)
        if cached is not None and cached[0] == generation and cached[1] is state:
            if self.check and cached[2] != self._made_state(state, wanted):
                raise AssertionError(f"shared read of task {task_id} differs from the world")
            return dict(cached[2])
        made = self._made_state(state, wanted)
        self._states[index] = (generation, state, made)
        return dict(made)

    def _made_state(self, state: dict[str, Any], wanted: frozenset[str]) -> dict[str, Any]:
        return {
            k: (v if not isinstance(v, dict | list) else self.section(state, k))
            if k not in HEAVY_SECTIONS or k in wanted
            else {}
            for k, v in state.items()
        }

    def section(self, state: dict[str, Any], section: str) -> Any:
        """A whole section: a round section as the frozen copies of its rounds."""
        task_id = state["task_id"]
        index = (task_id, section)
        version = (self._versions.get(index, 0), self._versions.get((task_id, "*"), 0))
        live = state[section]
        rounds = tuple(live) if section in ROUND_SECTIONS else None  # pruning drops rounds
        cached = self._sections.get(index)
        if (
            cached is not None
            and cached[0] == version
            and cached[1] is live
            and cached[2] == rounds
        ):
            if self.check and cached[3] != live:
                raise AssertionError(f"shared read of {section} differs from the world")
            return cached[3]
        if rounds is not None:
            frozen: Any = FrozenDict({rkey: self.part(state, section, rkey) for rkey in rounds})
        else:
            frozen = self.part(state, section, None)
        self._sections[index] = (version, live, rounds, frozen)
        return frozen

    def distribution_list(self, found: dict[str, Any]) -> FrozenDict:
        """The frozen copy of a submitted distribution list."""
        kept = self._lists.get(id(found))
        if kept is None or kept[0] is not found:
            kept = self._lists[id(found)] = (found, freeze(found))
            if len(self._lists) > KEPT_LISTS:
                self._lists.popitem(last=False)
        return kept[1]

    def _sweep(self) -> None:
        """Forget the parts whose source the world no longer has (pruned rounds, gone
        tasks): memory only, a stale part is never handed out."""
        self._copied = 0
        for task_id in list(self._parts):
            state = self._tasks.get(task_id)
            if state is None:
                del self._parts[task_id]
                continue
            parts = self._parts[task_id]
            for (section, rkey), part in list(parts.items()):
                live = state[section] if rkey is None else state[section].get(rkey)
                if live is not part.source:
                    del parts[section, rkey]
        self._sections = {i: c for i, c in self._sections.items() if i[0] in self._tasks}
        self._states = {i: c for i, c in self._states.items() if i[0] in self._tasks}
