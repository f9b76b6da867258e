"""The phase messages the timers send a task process over IPC (K2-CONTRACT: "The phase
schedule", "IPC between node and task process")."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from k2node.contract.rounds import Schedule, distribution_retries
from k2node.contract.task_state import PAYOUT_FAILED


class Phase(StrEnum):
    EXECUTE_TASK = "executeTask"
    SUBMIT_PAYLOAD = "submitPayload"
    AUDIT_PAYLOAD = "auditPayload"
    GENERATE_DISTRIBUTION = "generateAndSubmitDistributionList"
    DISTRIBUTION_AUDIT = "distributionListAudit"


PHASE_NAMES = frozenset(p.value for p in Phase)
# Not a message to the task: the node triggers the payout itself (a manual call with timers off).
PAYOUT = "payout"


def phase_label(kind: str, retry: bool) -> str:
    """The name a phase is remembered and logged by; a distribution retry has its own."""
    return f"{kind}-retry" if retry else kind


def phase_message(kind: Phase, round_: int, retry: bool = False) -> dict[str, Any]:
    # phaseLabel is a k2node extension echoed back in the reply; JavaScript tasks ignore it.
    message: dict[str, Any] = {
        "functionCall": kind.value,
        "roundNumber": round_,
        "phaseLabel": phase_label(kind, retry),
    }
    if kind is Phase.GENERATE_DISTRIBUTION:
        message["isPreviousRoundFailed"] = retry
    return message


@dataclass(frozen=True)
class TimedPhase:
    """One entry of a round's phase schedule: what is due, from when, until when."""

    slot: int  # when it may start
    deadline: int  # first slot at which it is too late
    kind: str  # a Phase value, or PAYOUT
    round_: int
    retry: bool = False

    @property
    def label(self) -> str:
        return phase_label(self.kind, self.retry)


def phases_of_round(r: int, state: dict[str, Any]) -> tuple[TimedPhase, ...]:
    """What the timers send in round `r` (K2-CONTRACT: "The phase schedule"), in start order."""
    records = state.get("distributions_audit_record", {})
    retry = r >= 3 and distribution_retries(state) >= 1 and records.get(str(r - 3)) == PAYOUT_FAILED
    return _phases_of_round(r, Schedule.of(state), retry)


@functools.lru_cache(maxsize=256)
def _phases_of_round(r: int, s: Schedule, retry: bool) -> tuple[TimedPhase, ...]:
    # the same for every node of a task: the nodes of one process (a simulation) share it
    start = s.round_start(r)
    sub_end = start + s.submission_window
    audit_end = sub_end + s.audit_window
    next_round = s.round_start(r + 1)
    due = [TimedPhase(start, next_round, Phase.EXECUTE_TASK, r)]
    if r >= 1:
        due.append(TimedPhase(start, sub_end, Phase.SUBMIT_PAYLOAD, r - 1))
        due.append(TimedPhase(sub_end, audit_end, Phase.AUDIT_PAYLOAD, r - 1))
    if r >= 2:
        due.append(TimedPhase(start, sub_end, Phase.GENERATE_DISTRIBUTION, r - 2))
        due.append(TimedPhase(sub_end, audit_end, Phase.DISTRIBUTION_AUDIT, r - 2))
        due.append(TimedPhase(audit_end, next_round, PAYOUT, r - 2))
    if retry:
        due.append(TimedPhase(start, sub_end, Phase.GENERATE_DISTRIBUTION, r - 3, True))
        due.append(TimedPhase(sub_end, audit_end, Phase.DISTRIBUTION_AUDIT, r - 3, True))
        due.append(TimedPhase(audit_end, next_round, PAYOUT, r - 3, True))
    return tuple(sorted(due, key=lambda e: e.slot))
