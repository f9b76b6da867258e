"""Audits: which peers a node samples, and how a submitter's votes are counted."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from k2node.contract.shared import remembered

AUDIT_SAMPLE_SIZE = 5


def count_votes(trigger: Mapping[str, Any] | None) -> int:
    """1 with no audit trigger, else the sum of +1/-1 over its votes."""
    if not trigger:
        return 1
    return sum(1 if vote.get("is_valid") else -1 for vote in trigger.get("votes", []))


def audit_sample(
    submissions: Mapping[str, Any], own_key: str, rng: random.Random | None = None
) -> list[str]:
    """min(5, n) distinct submitters drawn at random, the node's own key skipped."""
    keys = _keys(submissions)
    chosen = (rng or random.SystemRandom()).sample(keys, min(AUDIT_SAMPLE_SIZE, len(keys)))
    return [k for k in chosen if k != own_key]


@remembered()
def _keys(submissions: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(submissions)
