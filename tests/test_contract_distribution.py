"""Distribution rules: submitter selection (JavaScript vectors + hand cases), list, checks."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest

from k2node.contract.distribution import (
    default_distribution,
    distribution_matches,
    safety_check,
    select_distribution_submitter,
)
from k2node.contract.votes import audit_sample, count_votes
from tests.conftest import SHARED_VECTORS, VECTORS

SELECTION = "distribution-selection.json"
CASES = json.loads((VECTORS / SELECTION).read_text())["cases"]


@pytest.mark.skipif(not (SHARED_VECTORS / SELECTION).exists(), reason="no shared/ beside")
def test_vector_copy_matches_the_shared_one() -> None:
    assert (VECTORS / SELECTION).read_bytes() == (SHARED_VECTORS / SELECTION).read_bytes()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"r{c['round']}-failed{c['failed']}")
def test_selection_matches_javascript(case: dict[str, Any]) -> None:
    state = case["state"]
    selected = select_distribution_submitter(
        state["submissions"],
        state["distribution_rewards_submission"],
        state["distributions_audit_record"],
        case["round"],
        case["failed"],
    )
    assert (selected or "") == case["selected"]


# Hand computations for ASCII-only entries, written out without the module under test.
def _entry(value: str) -> dict[str, Any]:
    return {"submission_value": value, "slot": 1, "round": 0}


def _entry_json(value: str) -> str:
    return f'{{"submission_value":"{value}","slot":1,"round":0}}'


def _char_sum(text: str) -> int:
    return sum(map(ord, text))


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _scores(entries: dict[str, str]) -> dict[str, int]:
    digest = _hex("[" + ",".join(_entry_json(v) for v in entries.values()) + "]")
    return {
        k: abs(_char_sum(digest) - _char_sum(_hex(f'{{"{k}":{_entry_json(v)}}}')))
        for k, v in entries.items()
    }


def _tied_pair() -> dict[str, str]:
    first = _char_sum(_hex(f'{{"keyA":{_entry_json("a")}}}'))
    for i in range(100_000):
        if _char_sum(_hex(f'{{"keyB":{_entry_json(f"b{i}")}}}')) == first:
            return {"keyA": "a", "keyB": f"b{i}"}
    raise AssertionError("no tie found")


def test_a_tie_goes_to_the_earliest_and_the_retry_walk_to_the_later() -> None:
    entries = _tied_pair()
    scores = _scores(entries)
    assert scores["keyA"] == scores["keyB"] > 0
    submissions = {"0": {k: _entry(v) for k, v in entries.items()}}
    assert select_distribution_submitter(submissions, {}, {}, 0, False) == "keyA"
    # the retry walk: keyA becomes best without being chosen; the equal keyB is chosen
    assert select_distribution_submitter(submissions, {}, {}, 0, True) == "keyB"


def test_failed_submitters_are_dropped_after_payout_failed() -> None:
    entries = {"k1": "one", "k2": "two", "k3": "three", "k4": "four"}
    submissions = {"0": {k: _entry(v) for k, v in entries.items()}}
    normal = select_distribution_submitter(submissions, {}, {}, 0, False)
    scores = _scores(entries)
    assert normal == max(entries, key=lambda k: (scores[k], -list(entries).index(k)))
    failed_by = {"0": {normal: {"submission_value": normal, "slot": 2, "round": 0}}}
    rest = {k: v for k, v in entries.items() if k != normal}
    rest_scores = _scores(rest)
    expected: str | None = None
    best = second = float("-inf")
    for key in rest:
        if rest_scores[key] > best:
            second, best = best, rest_scores[key]
        elif rest_scores[key] > second:
            second, expected = rest_scores[key], key
    got = select_distribution_submitter(submissions, failed_by, {"0": "PayoutFailed"}, 0, True)
    assert got == expected and got != normal
    # without the PayoutFailed record nobody is dropped
    assert select_distribution_submitter(submissions, failed_by, {}, 0, False) == normal


def test_candidates_are_keys_present_in_the_last_three_rounds() -> None:
    subs = {
        "3": {"old": _entry("x"), "both": _entry("y")},
        "4": {"both": _entry("y")},
        "5": {"new": _entry("z"), "both": _entry("y")},
    }
    assert select_distribution_submitter(subs, {}, {}, 5, False) == "both"
    assert select_distribution_submitter({}, {}, {}, 5, False) is None


def test_vote_counting() -> None:
    assert count_votes(None) == 1
    assert count_votes({"trigger_by": "x", "votes": []}) == 0
    votes = [{"is_valid": False}, {"is_valid": False}, {"is_valid": True}]
    assert count_votes({"trigger_by": "x", "votes": votes}) == -1


def test_default_distribution_rule() -> None:
    subs = {k: _entry("v") for k in ("good1", "good2", "good3", "zero", "bad")}
    triggers = {
        "zero": {"trigger_by": "good1", "votes": []},
        "bad": {"trigger_by": "good1", "votes": [{"is_valid": False}]},
        "good3": {"trigger_by": "bad", "votes": [{"is_valid": True}, {"is_valid": True}]},
    }
    stakes = {"bad": 1_000_000_001, "good1": 5}
    dist = default_distribution(subs, triggers, stakes, 1000)
    assert dist == {"good1": 333, "good2": 333, "good3": 333, "zero": 0, "bad": -700_000_000}
    assert default_distribution({}, {}, {}, 1000) == {}


def test_safety_check_zeroes_a_bad_list() -> None:
    subs = {"a": {}, "b": {}}
    assert safety_check({"a": 5, "b": 5}, subs, 10) == {"a": 5, "b": 5}
    assert safety_check({"a": 5, "b": -50}, subs, 10) == {"a": 5, "b": -50}
    assert safety_check({"a": 5}, subs, 10) == {"a": 0, "b": 0}  # b missing
    assert safety_check({"a": 5, "b": 1.5}, subs, 10) == {"a": 0, "b": 0}  # not an integer
    assert safety_check({"a": 6, "b": 5}, subs, 10) == {"a": 0, "b": 0}  # over the bounty


def test_distribution_comparison_is_key_by_key() -> None:
    assert distribution_matches({"a": 1, "b": 0}, {"b": 0, "a": 1})
    assert not distribution_matches({"a": 1, "b": 0}, {"a": 1})
    assert not distribution_matches({"a": 1}, {"a": 2})
    assert not distribution_matches({"a": 1}, {"a": True})
    assert not distribution_matches({"a": 1}, None)


def test_audit_sample_takes_at_most_five_and_skips_itself() -> None:
    subs = {f"k{i}": {} for i in range(12)}
    rng = random.Random(7)
    for _ in range(50):
        picked = audit_sample(subs, "k3", rng)
        assert "k3" not in picked
        assert len(set(picked)) == len(picked) and 4 <= len(picked) <= 5
    assert sorted(audit_sample({"me": {}, "x": {}}, "me", rng)) == ["x"]
    assert audit_sample({}, "me", rng) == []
