"""Shared reads: frozen K2 parts refuse changes, and pure rules remember their answers by the
identity of the shared reads they were given, and only by it."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import orjson
import pytest

from k2node.contract.shared import FrozenDict, FrozenList, freeze, remembered, thaw


def test_a_frozen_read_is_a_dict_to_readers_and_refuses_every_change() -> None:
    frozen = freeze({"a": {"votes": [{"is_valid": True}]}, "b": 2})
    assert isinstance(frozen, dict) and isinstance(frozen["a"]["votes"], list)
    assert frozen == {"a": {"votes": [{"is_valid": True}]}, "b": 2}
    assert orjson.loads(orjson.dumps(frozen)) == json.loads(json.dumps(frozen)) == frozen
    changes = [
        lambda: frozen.__setitem__("c", 1),
        lambda: frozen.pop("b"),
        lambda: frozen.update(c=1),
        lambda: frozen.setdefault("c", 1),
        lambda: frozen.clear(),
        lambda: frozen["a"]["votes"].append(1),
        lambda: frozen["a"]["votes"].__setitem__(0, 1),
        lambda: frozen["a"].__delitem__("votes"),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert frozen == {"a": {"votes": [{"is_valid": True}]}, "b": 2}


def test_copies_of_a_frozen_read_are_plain_and_ones_own() -> None:
    frozen = freeze({"a": {"votes": [1, 2]}})
    for mine in (thaw(frozen), copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen))):
        assert type(mine) is dict and type(mine["a"]) is dict and type(mine["a"]["votes"]) is list
        mine["a"]["votes"].append(3)
        assert mine != frozen and frozen["a"]["votes"] == [1, 2]
    assert type(dict(frozen)) is dict and type(copy.copy(frozen)) is dict


def test_a_pure_rule_answers_again_for_the_same_shared_reads_only() -> None:
    calls: list[Any] = []

    @remembered()
    def total(entries: dict[str, Any], bonus: int) -> int:
        calls.append(entries)
        return sum(entries.values()) + bonus

    shared = FrozenDict({"a": 1, "b": 2})
    assert total(shared, 1) == total(shared, 1) == 4 and len(calls) == 1
    assert total(shared, 2) == 5 and len(calls) == 2  # another scalar: another answer
    # the same content in another object is another read: computed again, not trusted
    assert total(FrozenDict({"a": 1, "b": 2}), 1) == 4 and len(calls) == 3
    # plain dicts are nobody's shared read: always computed, whatever they hold
    plain = {"a": 1, "b": 2}
    assert total(plain, 1) == 4 and total(plain, 1) == 4 and len(calls) == 5
    plain["a"] = 10
    assert total(plain, 1) == 13


def test_a_plain_dict_of_shared_parts_is_remembered_by_its_parts() -> None:
    calls: list[Any] = []

    @remembered()
    def rounds(parts: dict[str, Any]) -> int:
        calls.append(parts)
        return sum(len(p) for p in parts.values())

    first, second = FrozenDict({"k": 1}), FrozenDict({"k": 1, "j": 2})
    assert rounds({"1": first, "2": second}) == rounds({"1": first, "2": second}) == 3
    assert len(calls) == 1
    assert rounds({"1": first, "2": FrozenDict({"k": 1, "j": 2})}) == 3 and len(calls) == 2
    assert rounds({"1": first, "2": {"k": 1}}) == 2 and len(calls) == 3  # a plain part
    assert isinstance(FrozenList([1]), list)
