"""Where this node stands: each task as it stands in it, and its wallets, as data. What
`k2node status` prints and the status page (`GET /standing`) shows."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from k2node.config import Settings
from k2node.contract.rounds import Schedule
from k2node.contract.task_state import OPTION_SECTIONS, PAYOUT_SUCCESSFUL
from k2node.node.executables import ExecutableError, declared_for
from k2node.settlement import transactions
from k2node.settlement.base import Settlement, TransactionError
from k2node.settlement.task_ix import WITHDRAW_COOLDOWN_ROUNDS

RECENT_ROUNDS = 5  # rewards and votes are shown for this many settled rounds
ALL_SECTIONS = dict.fromkeys(OPTION_SECTIONS, True)


@dataclass
class TaskStatus:
    task_id: str
    name: str
    state: str  # running, not running here, waiting for bounty, stopped: why, unknown
    round: int
    phase: str  # submission, audit, or work (between the windows)
    seconds_to_next_round: float
    round_seconds: float
    stake: int
    minimum_stake: int
    last_submission_round: int | None
    votes_against: int  # over the recent rounds
    rewards: dict[str, int] = field(default_factory=dict)  # settled round -> ROE (- slashed)
    claimable: int = 0
    unstake_opens_round: int | None = None  # None: it is open (or there is no stake)
    bounty_left: int = 0
    bounty_per_round: int = 0
    variables: dict[str, str] = field(default_factory=dict)  # name -> set or missing


@dataclass
class Status:
    node_running: bool
    main_wallet: dict[str, Any]
    staking_wallet: dict[str, Any] | None
    tasks: list[TaskStatus]
    slot_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def phase_of(schedule: Schedule, slot: int) -> tuple[int, str, float]:
    """The round now, the window it is in, and the slots left in the round."""
    r = max(0, schedule.round_of(slot))
    if slot in schedule.submission_window_in(r):
        phase = "submission"
    elif slot in schedule.audit_window_in(r):
        phase = "audit"
    else:
        phase = "work"
    return r, phase, schedule.round_start(r + 1) - slot


def last_submission(state: dict[str, Any], key: str) -> int | None:
    rounds = [int(r) for r, subs in state["submissions"].items() if key in subs]
    return max(rounds) if rounds else None


def unstake_opens(last: int | None, now: int) -> int | None:
    """The round from which Withdraw is taken again, or None if it is now."""
    if last is None or last < now - WITHDRAW_COOLDOWN_ROUNDS:
        return None
    return last + WITHDRAW_COOLDOWN_ROUNDS + 1


async def _rewards(k2: Settlement, task_id: str, state: dict[str, Any], me: str) -> dict[str, int]:
    records = state["distributions_audit_record"]
    settled = sorted((int(r) for r, rec in records.items() if rec == PAYOUT_SUCCESSFUL))
    found = {}
    for n in settled[-RECENT_ROUNDS:]:
        submitters = list(state["distribution_rewards_submission"].get(str(n), {}))
        if submitters:
            paid = await k2.get_distribution_list(task_id, submitters[-1], n) or {}
            found[str(n)] = int(paid.get(me, 0))
    return found


def _votes_against(state: dict[str, Any], me: str, now: int) -> int:
    count = 0
    for r, triggers in state["submissions_audit_trigger"].items():
        trigger = triggers.get(me)
        if trigger and int(r) >= now - RECENT_ROUNDS:
            count += 1 + sum(not v["is_valid"] for v in trigger["votes"])
    return count


def _state_word(task_id: str, state: dict[str, Any], here: list[str] | None) -> str:
    if state.get("is_migrated"):
        return f"stopped: updated to {state.get('migrated_to')}"
    if not state.get("is_active", True):
        return "stopped: its manager deactivated it"
    if int(state["total_bounty_amount"]) < int(state["bounty_amount_per_round"]):
        return "waiting for bounty"
    if here is None:
        return "node not running"
    return "running" if task_id in here else "not run by this node"


def _variables(state: dict[str, Any], settings: Settings) -> dict[str, str]:
    """The task's declared variables, each set or missing here (never their values)."""
    entry = settings.task_entry
    if state["task_executable_network"] == "IPFS":
        kept = settings.data_dir / "executables" / f"{state['task_audit_program']}.zip"
        if not kept.is_file():
            return {}
        entry = str(kept)
    try:
        names = declared_for(entry, state, settings.task_config)
    except ExecutableError:
        return {}
    return {name: "set" if name in settings.variables else "missing" for name in names}


async def task_status(
    k2: Settlement, me: str, here: list[str] | None, task_id: str, settings: Settings
) -> TaskStatus:
    try:
        state = await k2.get_task_state(task_id, ALL_SECTIONS)
    except TransactionError:
        return TaskStatus(task_id, "", "unknown to K2", 0, "", 0.0, 0.0, 0, 0, None, 0)
    schedule = Schedule.of(state)
    round_, phase, slots_left = phase_of(schedule, k2.current_slot())
    last = last_submission(state, me)
    return TaskStatus(
        task_id=task_id,
        name=state["task_name"],
        state=_state_word(task_id, state, here),
        round=round_,
        phase=phase,
        seconds_to_next_round=round(slots_left * k2.slot_ms / 1000, 1),
        round_seconds=round(schedule.round_time * k2.slot_ms / 1000, 3),
        stake=int(state["stake_list"].get(me, 0)),
        minimum_stake=int(state["minimum_stake_amount"]),
        last_submission_round=last,
        votes_against=_votes_against(state, me, round_),
        rewards=await _rewards(k2, task_id, state, me) if me else {},
        claimable=int(state["available_balances"].get(me, 0)),
        unstake_opens_round=unstake_opens(last, round_),
        bounty_left=int(state["total_bounty_amount"]),
        bounty_per_round=int(state["bounty_amount_per_round"]),
        variables=await asyncio.to_thread(_variables, state, settings),  # reads files
    )


async def standing(
    k2: Settlement,
    main: str,
    staking: str | None,
    here: list[str] | None,
    task_ids: list[str],
    settings: Settings,
) -> Status:
    """`here`: the tasks the node runs; None when no node runs."""
    main_wallet = {"pubkey": main, "balance": await k2.get_balance(main)}
    staking_wallet = None
    if staking is not None:
        held = await transactions.staking_lamports(k2, staking)
        staking_wallet = {
            "pubkey": staking,
            "balance": held if held is not None else await k2.get_balance(staking),
            # stakes withdrawn earlier, which the next stake draws on before the main wallet
            "unstaked": 0 if held is None else transactions.staking_spare(held),
        }
    me = staking or ""
    tasks = [await task_status(k2, me, here, t, settings) for t in task_ids]
    return Status(here is not None, main_wallet, staking_wallet, tasks, k2.slot_ms)
