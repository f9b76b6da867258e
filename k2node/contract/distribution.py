"""The template's distribution rules: who submits the list, what it holds, how to check it.

Every node computes these on its own and must reach the same answer as every other node,
JavaScript ones included, so hashing uses byte-exact `JSON.stringify` and walks keep the
task state's key order. They are pure: called again with the same shared K2 reads (a
simulation's nodes, all in one process), each answers from memory (contract/shared.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from k2node.contract.jsjson import sha256_hex, stringify
from k2node.contract.shared import FrozenDict, remembered
from k2node.contract.task_state import PAYOUT_FAILED
from k2node.contract.values import is_int
from k2node.contract.votes import count_votes

# The template slashes floor(stake * 0.7), in JavaScript's doubles (which Python's floats
# are): 90 ROE loses 62, not the 63 that integer arithmetic gives.
SLASH_SHARE = 0.7


def _char_score(hex_digest: str) -> int:
    """Sum of the character codes of a hex digest (ASCII, so its bytes are its codes)."""
    return sum(hex_digest.encode("ascii"))


@remembered()
def select_distribution_submitter(
    submissions: Mapping[str, Mapping[str, Any]],
    distribution_rewards_submission: Mapping[str, Mapping[str, Any]],
    distributions_audit_record: Mapping[str, str],
    round_: int,
    is_previous_round_failed: bool,
) -> str | None:
    """The key that submits round `round_`'s distribution list, or None for nobody."""
    current = submissions.get(str(round_)) or {}
    candidates = list(current)
    for r in (round_ - 1, round_ - 2):  # (one pass each: a million keys are looked up twice)
        if r >= 0:
            earlier = submissions.get(str(r)) or {}
            candidates = [k for k in candidates if k in earlier]
    candidates = candidates or list(current)
    if distributions_audit_record.get(str(round_)) == PAYOUT_FAILED:
        failed = distribution_rewards_submission.get(str(round_)) or {}
        candidates = [k for k in candidates if k not in failed]
    return _select(candidates, current, is_previous_round_failed)


def _select(
    candidates: list[str], current: Mapping[str, Any], is_previous_round_failed: bool
) -> str | None:
    # JSON.stringify(values) and JSON.stringify({key: value}) share each value's text
    texts = [stringify(current[k]) for k in candidates]
    digest_score = _char_score(sha256_hex("[" + ",".join(texts) + "]"))
    scores = [
        abs(digest_score - _char_score(sha256_hex(f"{{{stringify(k)}:{text}}}")))
        for k, text in zip(candidates, texts, strict=True)
    ]
    selected: str | None = None
    if not is_previous_round_failed:
        best = 0
        for key, score in zip(candidates, scores, strict=True):
            if score > best:
                best, selected = score, key
        return selected
    # The template's retry walk: a new best only demotes the old one; a runner-up is chosen.
    best_f = second = float("-inf")
    for key, score in zip(candidates, scores, strict=True):
        if score > best_f:
            second, best_f = best_f, score
        elif score > second:
            second, selected = score, key
    return selected


@remembered()
def default_distribution(
    submissions: Mapping[str, Any],
    audit_triggers: Mapping[str, Any],
    stake_list: Mapping[str, int],
    bounty_per_round: int,
) -> dict[str, int]:
    """Net-negative votes lose 70% of stake; zero gets 0; the rest share the bounty equally."""
    votes = {key: count_votes(audit_triggers.get(key)) for key in submissions}
    approved = [key for key, v in votes.items() if v > 0]
    share = bounty_per_round // len(approved) if approved else 0
    out: dict[str, int] = {}
    for key, v in votes.items():
        if v < 0:
            slash = math.floor(int(stake_list.get(key, 0)) * SLASH_SHARE)
            out[key] = -slash
        elif v == 0:
            out[key] = 0
        else:
            out[key] = share
    return FrozenDict(out)


@remembered()
def safety_check(
    distribution: Mapping[str, Any], submissions: Mapping[str, Any], bounty_per_round: int
) -> dict[str, int]:
    """The template's last check before upload: anything off makes the list all zeros."""
    zeros = FrozenDict(dict.fromkeys(submissions, 0))
    if any(key not in distribution for key in submissions):
        return zeros
    values = list(distribution.values())
    if not all(is_int(v) for v in values):
        return zeros
    if sum(values) > bounty_per_round:
        return zeros
    return FrozenDict({str(k): int(v) for k, v in distribution.items()})


@remembered()
def distribution_matches(expected: Mapping[str, int], uploaded: Any) -> bool:
    """Key-by-key comparison of a regenerated list with an uploaded one."""
    if not isinstance(uploaded, dict) or set(uploaded) != set(expected):
        return False
    return all(is_int(uploaded[k]) and uploaded[k] == v for k, v in expected.items())
