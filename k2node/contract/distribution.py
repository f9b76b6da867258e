"""The template's distribution rules: who submits the list, what it holds, how to check it.

Every node computes these on its own and must reach the same answer as every other node,
JavaScript ones included, so hashing uses byte-exact `JSON.stringify` and walks keep the
task state's key order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from k2node.contract.jsjson import sha256_hex, stringify
from k2node.contract.task_state import PAYOUT_FAILED
from k2node.contract.values import is_int
from k2node.contract.votes import count_votes

SLASH_NUMERATOR, SLASH_DENOMINATOR = 7, 10  # the template slashes 70% of stake


def _char_score(hex_digest: str) -> int:
    """Sum of the character codes of a hex digest (ASCII, so its bytes are its codes)."""
    return sum(hex_digest.encode("ascii"))


def select_distribution_submitter(
    submissions: Mapping[str, Mapping[str, Any]],
    distribution_rewards_submission: Mapping[str, Mapping[str, Any]],
    distributions_audit_record: Mapping[str, str],
    round_: int,
    is_previous_round_failed: bool,
) -> str | None:
    """The key that submits round `round_`'s distribution list, or None for nobody."""
    current = submissions.get(str(round_)) or {}
    earlier = [submissions.get(str(r)) or {} for r in (round_ - 1, round_ - 2) if r >= 0]
    candidates = [k for k in current if all(k in rnd for rnd in earlier)] or list(current)
    if distributions_audit_record.get(str(round_)) == PAYOUT_FAILED:
        failed = distribution_rewards_submission.get(str(round_)) or {}
        candidates = [k for k in candidates if k not in failed]
    # What the answer depends on, as bytes (at C speed): the nodes of a simulation, all in
    # one process, compute the same selection once.
    key = orjson.dumps([[[k, current[k]] for k in candidates], is_previous_round_failed])
    if key not in _RECENT:
        _RECENT[key] = _select(candidates, current, is_previous_round_failed)
        if len(_RECENT) > RECENT_SELECTIONS:
            _RECENT.popitem(last=False)
    return _RECENT[key]


RECENT_SELECTIONS = 8
_RECENT: OrderedDict[bytes, str | None] = OrderedDict()


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
            slash = int(stake_list.get(key, 0)) * SLASH_NUMERATOR // SLASH_DENOMINATOR
            out[key] = -slash
        elif v == 0:
            out[key] = 0
        else:
            out[key] = share
    return out


def safety_check(
    distribution: Mapping[str, Any], submissions: Mapping[str, Any], bounty_per_round: int
) -> dict[str, int]:
    """The template's last check before upload: anything off makes the list all zeros."""
    zeros = dict.fromkeys(submissions, 0)
    if any(key not in distribution for key in submissions):
        return zeros
    values = list(distribution.values())
    if not all(is_int(v) for v in values):
        return zeros
    if sum(values) > bounty_per_round:
        return zeros
    return {str(k): int(v) for k, v in distribution.items()}


def distribution_matches(expected: Mapping[str, int], uploaded: Any) -> bool:
    """Key-by-key comparison of a regenerated list with an uploaded one."""
    if not isinstance(uploaded, dict) or set(uploaded) != set(expected):
        return False
    return all(is_int(uploaded[k]) and uploaded[k] == v for k, v in expected.items())
