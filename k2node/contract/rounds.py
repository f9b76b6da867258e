"""Round and window arithmetic, in slots (K2-CONTRACT: "Units and time", "The phase schedule").

Round N's work is submitted and audited in round N+1's windows; its distribution list is
submitted and audited in round N+2's windows (N+3 for the one retry after a failed payout).
The settlement layer enforces exactly these windows, and the scheduler sends the phase
messages in them, so both sides use this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

# The k2node model retries a failed distribution once, in the following round's windows.
MAX_DISTRIBUTION_RETRIES = 1


@dataclass(frozen=True)
class Window:
    start: int  # first slot inside
    end: int  # first slot after

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and self.start <= slot < self.end


@dataclass(frozen=True)
class Schedule:
    starting_slot: int
    round_time: int
    submission_window: int
    audit_window: int

    @classmethod
    def of(cls, state: dict[str, Any]) -> Schedule:
        return _schedule(
            state["starting_slot"],
            state["round_time"],
            state["submission_window"],
            state["audit_window"],
        )

    def round_of(self, slot: int) -> int:
        return (slot - self.starting_slot) // self.round_time

    def round_start(self, round_: int) -> int:
        return self.starting_slot + round_ * self.round_time

    def submission_window_in(self, round_: int) -> Window:
        start = self.round_start(round_)
        return Window(start, start + self.submission_window)

    def audit_window_in(self, round_: int) -> Window:
        start = self.round_start(round_) + self.submission_window
        return Window(start, start + self.audit_window)

    # Windows for the transactions about round N.
    def submission_of(self, n: int) -> Window:
        return self.submission_window_in(n + 1)

    def audit_of(self, n: int) -> Window:
        return self.audit_window_in(n + 1)

    def distribution_of(self, n: int, attempt: int = 0) -> Window:
        return self.submission_window_in(n + 2 + attempt)

    def distribution_audit_of(self, n: int, attempt: int = 0) -> Window:
        return self.audit_window_in(n + 2 + attempt)

    def payout_opens(self, n: int, attempt: int = 0) -> int:
        return self.distribution_audit_of(n, attempt).end


@functools.lru_cache(maxsize=64)
def _schedule(
    starting_slot: Any, round_time: Any, submission_window: Any, audit_window: Any
) -> Schedule:
    # read for every phase of every node from a handful of tasks' states
    return Schedule(int(starting_slot), int(round_time), int(submission_window), int(audit_window))


def distribution_retries(state: dict[str, Any]) -> int:
    """How many times a failed distribution of this task may be retried."""
    return min(MAX_DISTRIBUTION_RETRIES, int(state["allowed_failed_distributions"]))
