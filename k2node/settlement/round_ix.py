"""The task program's round instructions: submissions, audits and their votes, distribution
lists, and the payout; plus the pruning of rounds that have aged out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k2node import codec
from k2node.contract.rounds import Schedule, Window, distribution_retries
from k2node.contract.task_state import PAYOUT_FAILED, PAYOUT_SUCCESSFUL, ROUND_SECTIONS
from k2node.contract.values import is_int, submission_problem
from k2node.contract.votes import count_votes
from k2node.crypto import decode_pubkey
from k2node.settlement.base import TransactionError
from k2node.settlement.checks import (
    check_window,
    flag_arg,
    require_participant,
    require_stake,
    require_stake_pot,
    round_arg,
)
from k2node.settlement.wire import CHUNK_BYTES, WireError, unchunk
from k2node.settlement.world import World

MAX_DISTRIBUTION_ENTRIES = 200_000
MAX_LIST_CHUNKS = 16 * 1024 * 1024 // CHUNK_BYTES
# a list entry's most bytes in JSON: a quoted base58 key (at most 44), a colon, an integer
LIST_BYTES_PER_ENTRY = 80
# Rounds older than this are pruned from task states, so state stays bounded.
KEEP_ROUNDS = 12


def submit_task(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    state = world.task(tx["task_id"])
    key = tx["signer"]
    if not state["is_active"]:
        raise TransactionError("task is not active")
    require_stake(state, key)
    value = args.get("submission")
    problem = submission_problem(value)
    if problem is not None:
        raise TransactionError(problem)
    round_, rkey = round_arg(args)
    schedule = Schedule.of(state)
    check_window(schedule.submission_of(round_), slot, "submission", round_)
    entries = state["submissions"].setdefault(rkey, {})
    if key in entries:
        raise TransactionError(f"already submitted for round {round_}")
    entries[key] = {"submission_value": value, "slot": slot, "round": round_}
    world.private[tx["task_id"]].last_submission[key] = round_
    state["current_round"] = schedule.round_of(slot)
    _prune(world, state, schedule.round_of(slot))
    return {"round": round_, "slot": slot}


def _vote(
    world: World,
    tx: dict[str, Any],
    args: dict[str, Any],
    sections: tuple[str, str],
    window: Callable[[int], Window],
    slot: int,
) -> dict[str, Any]:
    """A vote on an entry of `sections[0]`, recorded in its trigger in `sections[1]`."""
    entries_section, trigger_section = sections
    state = world.task(tx["task_id"])
    voter = tx["signer"]
    require_stake(state, voter)
    round_, rkey = round_arg(args)
    candidate = tx["candidate"]
    is_valid = flag_arg(args, "is_valid")
    check_window(window(round_), slot, "audit", round_)
    if candidate not in state[entries_section].get(rkey, {}):
        raise TransactionError(f"{candidate} has no entry to audit in round {round_}")
    if candidate == voter:
        raise TransactionError("a key cannot audit itself")
    trigger = state[trigger_section].get(rkey, {}).get(candidate)
    if trigger is None:
        if is_valid:
            raise TransactionError("no audit trigger to vote on")
        # a negative vote with no trigger raises one, and counts as the trigger, not a vote
        raised = {"trigger_by": voter, "slot": slot, "votes": []}
        state[trigger_section].setdefault(rkey, {})[candidate] = raised
        return {"trigger": "raised"}
    if voter == trigger["trigger_by"] or any(v["voter"] == voter for v in trigger["votes"]):
        raise TransactionError(f"already voted on {candidate} for round {round_}")
    trigger["votes"].append({"is_valid": is_valid, "voter": voter, "slot": slot})
    return {"trigger": "voted"}


def audit_submissions(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    schedule = Schedule.of(world.task(tx["task_id"]))
    sections = ("submissions", "submissions_audit_trigger")
    return _vote(world, tx, args, sections, schedule.audit_of, slot)


def _attempt(world: World, task_id: str, round_: int) -> int:
    """The distribution attempt a round is at; refused once its retries are spent."""
    attempt = world.private[task_id].attempts.get(str(round_), 0)
    if attempt > distribution_retries(world.task(task_id)):
        raise TransactionError(f"round {round_} has no distribution attempts left")
    return attempt


def audit_distribution(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    task_id = tx["task_id"]
    schedule = Schedule.of(world.task(task_id))
    round_, _ = round_arg(args)
    attempt = _attempt(world, task_id, round_)
    return _vote(
        world,
        tx,
        args,
        ("distribution_rewards_submission", "distributions_audit_trigger"),
        lambda r: schedule.distribution_audit_of(r, attempt),
        slot,
    )


def _distribution_step(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int, what: str
) -> tuple[dict[str, Any], str, int, str, int]:
    """What both distribution steps check: a participant of the round, an attempt left, and
    that attempt's window. Answers (state, signer, round, round key, attempt)."""
    state = world.task(tx["task_id"])
    key = tx["signer"]
    round_, rkey = round_arg(args)
    require_participant(state, key, rkey)
    attempt = _attempt(world, tx["task_id"], round_)
    check_window(Schedule.of(state).distribution_of(round_, attempt), slot, what, round_)
    return state, key, round_, rkey, attempt


def upload_distribution_list(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    """One chunk of the list's JSON; chunk 0 starts the upload over."""
    state, key, round_, rkey, attempt = _distribution_step(
        world, tx, args, slot, "distribution list"
    )
    if key in state["distribution_rewards_submission"].get(rkey, {}):
        raise TransactionError(f"already submitted a distribution list for round {round_}")
    try:
        index, payload = unchunk(args["chunk"])
    except WireError as exc:
        raise TransactionError(str(exc)) from None
    # a list names the round's submitters, each in well under LIST_BYTES_PER_ENTRY bytes
    most = min(
        MAX_LIST_CHUNKS,
        len(state["submissions"].get(rkey, {})) * LIST_BYTES_PER_ENTRY // CHUNK_BYTES + 1,
    )
    if index >= most:
        raise TransactionError(f"this round's distribution list has at most {most} chunks")
    uploads = world.private[tx["task_id"]].uploads.setdefault(rkey, {})
    upload = {} if index == 0 else uploads.get(f"{key}/{attempt}", {})
    upload[str(index)] = payload.hex()
    uploads[f"{key}/{attempt}"] = upload
    return {"chunk": index}


def _uploaded_list(chunks: dict[str, str] | None, round_: int) -> dict[str, int]:
    """The list the chunks of one upload spell, checked entry by entry."""
    if not chunks:
        raise TransactionError(f"no distribution list uploaded for round {round_}")
    missing = [i for i in range(len(chunks)) if str(i) not in chunks]
    if missing:
        raise TransactionError(f"the uploaded list lacks chunk {missing[0]}")
    text = b"".join(bytes.fromhex(chunks[str(i)]) for i in range(len(chunks)))
    try:
        dist = codec.loads(text)
    except ValueError:
        raise TransactionError("the uploaded list is not JSON") from None
    if not isinstance(dist, dict) or len(dist) > MAX_DISTRIBUTION_ENTRIES:
        raise TransactionError(
            f"list must be an object of at most {MAX_DISTRIBUTION_ENTRIES} entries"
        )
    for node, amount in dist.items():
        if not is_int(amount):
            raise TransactionError(f"amount for {node[:60]} is not an integer")
        try:
            decode_pubkey(node)
        except ValueError as exc:
            raise TransactionError(f"list key: {exc}") from None
    return dist


def submit_distribution_list(
    world: World, tx: dict[str, Any], args: dict[str, Any], slot: int
) -> dict[str, Any]:
    state, key, round_, rkey, attempt = _distribution_step(
        world, tx, args, slot, "distribution submission"
    )
    private = world.private[tx["task_id"]]
    if key in state["distribution_rewards_submission"].get(rkey, {}):
        raise TransactionError(f"already submitted a distribution list for round {round_}")
    if str(attempt) in private.attempt_submitters.get(rkey, {}):
        raise TransactionError(f"round {round_} already has a distribution list")
    uploads = private.uploads.get(rkey, {})
    dist = _uploaded_list(uploads.get(f"{key}/{attempt}"), round_)
    del uploads[f"{key}/{attempt}"]
    private.lists.setdefault(rkey, {})[key] = dist
    private.attempt_submitters.setdefault(rkey, {})[str(attempt)] = key
    state["distribution_rewards_submission"].setdefault(rkey, {})[key] = {
        "submission_value": key,
        "slot": slot,
        "round": round_,
    }
    return {"round": round_, "attempt": attempt}


def payout(world: World, tx: dict[str, Any], args: dict[str, Any], slot: int) -> dict[str, Any]:
    task_id = tx["task_id"]
    state = world.task(task_id)
    private = world.private[task_id]
    round_, rkey = round_arg(args)
    require_participant(state, tx["signer"], rkey)
    require_stake_pot(state, tx)
    records = state["distributions_audit_record"]
    attempt = private.attempts.get(rkey, 0)
    submitter = private.attempt_submitters.get(rkey, {}).get(str(attempt))
    if records.get(rkey) == PAYOUT_SUCCESSFUL or (rkey in records and submitter is None):
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
        records[rkey] = PAYOUT_FAILED
        private.attempts[rkey] = attempt + 1
        return {"changed": True, "record": PAYOUT_FAILED, "submitter": submitter}
    for node, amount in dist.items():
        if amount > 0:
            balances = state["available_balances"]
            balances[node] = balances.get(node, 0) + amount
        elif amount < 0 and node in state["stake_list"]:
            cut = min(-amount, state["stake_list"][node])
            state["stake_list"][node] -= cut
            state["total_stake_amount"] -= cut
    state["total_bounty_amount"] -= paid
    records[rkey] = PAYOUT_SUCCESSFUL
    return {"changed": True, "record": PAYOUT_SUCCESSFUL, "submitter": submitter}


def _prune(world: World, state: dict[str, Any], current_round: int) -> None:
    """Drop the rounds older than KEEP_ROUNDS, once a round (every submission asks, and no
    instruction writes a round that old)."""
    private = world.private[state["task_id"]]
    if private.pruned_in == current_round:
        return
    private.pruned_in = current_round
    oldest = current_round - KEEP_ROUNDS
    for section in ROUND_SECTIONS:
        for rkey in [k for k in state[section] if int(k) < oldest]:
            del state[section][rkey]
    for table in (private.lists, private.attempts, private.attempt_submitters, private.uploads):
        for rkey in [k for k in table if int(k) < oldest]:
            del table[rkey]
