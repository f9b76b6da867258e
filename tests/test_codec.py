"""The JSON codec: orjson's speed without losing what stdlib json (or JavaScript) would keep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from k2node import codec
from k2node.store import Store

ODD_VALUES = [
    "ünï 漢字 🙂",
    "lone \ud800 surrogate",  # JavaScript strings may hold one
    {"1": 2**64 - 1, "nested": [[[]]], "neg": -(2**63)},
    2**70,  # past orjson's 64 bits: written by the fallback
    {1: "int key"},  # json makes it "1"
    1e-7,
    [None, True, False, 0.1 + 0.2],
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_what_it_writes_stdlib_json_reads_alike(value: object) -> None:
    written = codec.dumps(value)
    assert isinstance(written, bytes)
    assert json.loads(written) == json.loads(json.dumps(value))


def test_round_trips_keep_text_and_64_bit_integers() -> None:
    for value in (ODD_VALUES[0], ODD_VALUES[1], ODD_VALUES[2], ODD_VALUES[6]):
        assert codec.loads(codec.dumps(value)) == value
    assert codec.dumps({"a": [1, "b"]}) == b'{"a":[1,"b"]}'  # compact
    assert codec.dumps("é") == '"é"'.encode()  # non-ASCII kept, not escaped
    assert codec.loads(str(2**70)) == float(2**70)  # as JSON.parse reads it


@pytest.mark.parametrize(
    "text",
    ["NaN", "[Infinity]", "1e400", "[" * 5000 + "]" * 5000, '{"a":', "", "\x00", '"\\ud800" x'],
)
def test_what_is_not_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        codec.loads(text)


def test_what_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        codec.dumps(b"bytes")
    with pytest.raises(TypeError):
        codec.dumps({"set": {1}})
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError):
        codec.dumps(circular)
    assert codec.dumps(math.nan) in (b"null", b"NaN")


def test_the_store_keeps_every_value_the_codec_can_write(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    for i, value in enumerate(ODD_VALUES):
        store.put(f"v/{i}", value)
    assert store.get("v/1") == "lone \ud800 surrogate"
    assert store.get("v/2") == ODD_VALUES[2]
    assert store.get("v/4") == {"1": "int key"}
    store.close()


def test_the_fallback_refuses_what_the_fast_path_cannot_read_back() -> None:
    with pytest.raises(ValueError):  # NaN beside what sends it to the fallback
        codec.dumps([math.nan, 2**70])
    with pytest.raises(ValueError):
        codec.loads('["\\ud800", NaN]')  # the surrogate's fallback refuses NaN too


def test_the_store_still_reads_what_stdlib_json_wrote_before(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    store.put_bytes(b"old", b'{"x":Infinity,"y":[NaN]}')
    value = store.get("old")
    assert value["x"] == math.inf and math.isnan(value["y"][0])
    store.close()
