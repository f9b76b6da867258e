"""Contract rules shared by the settlement layer and the task SDK."""

from __future__ import annotations

from typing import Any

MAX_SUBMISSION_BYTES = 512
SLASH_NUMERATOR, SLASH_DENOMINATOR = 7, 10  # the template slashes 70% of stake


def count_votes(trigger: dict[str, Any] | None) -> int:
    """1 with no audit trigger, else the sum of +1/-1 over its votes."""
    if not trigger:
        return 1
    return sum(1 if vote.get("is_valid") else -1 for vote in trigger.get("votes", []))
