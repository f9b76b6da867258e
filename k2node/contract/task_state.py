"""The task state's sections: which hold per-round entries, and which options ask for which.

`getTaskState(options)` leaves a heavy section out (as `{}`) unless its option asks for it;
K2's `getTaskAccountInfo` names the same options more briefly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUBMISSION_SECTIONS = ("submissions", "submissions_audit_trigger")
DISTRIBUTION_SECTIONS = ("distribution_rewards_submission", "distributions_audit_trigger")
# Sections keyed by round (as a string), pruned as rounds age.
ROUND_SECTIONS = (*SUBMISSION_SECTIONS, *DISTRIBUTION_SECTIONS, "distributions_audit_record")

OPTION_SECTIONS: dict[str, tuple[str, ...]] = {
    "is_submission_required": SUBMISSION_SECTIONS,
    "is_distribution_required": (*DISTRIBUTION_SECTIONS, "distributions_audit_record"),
    "is_available_balances_required": ("available_balances",),
    "is_stake_list_required": ("stake_list",),
}
HEAVY_SECTIONS = frozenset(s for group in OPTION_SECTIONS.values() for s in group)

# getTaskAccountInfo(pubkey, {submission, distribution, balance, stake}) on K2's JSON-RPC
ACCOUNT_OPTIONS = {
    "submission": "is_submission_required",
    "distribution": "is_distribution_required",
    "balance": "is_available_balances_required",
    "stake": "is_stake_list_required",
}

PAYOUT_SUCCESSFUL, PAYOUT_FAILED = "PayoutSuccessful", "PayoutFailed"


def in_round(info: Mapping[str, Any], section: str, round_: int) -> dict[str, Any]:
    """`section`'s entries for `round_` (round keys are strings), or {} when it has none."""
    found: dict[str, Any] = info.get(section, {}).get(str(round_), {})
    return found
