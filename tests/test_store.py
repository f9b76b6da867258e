"""The LevelDB store: JSON values, atomic batches, ranges and prefixes read in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from k2node.store import Store, StoreError


def test_json_values_round_trip(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    values = [None, True, 0, -7, 2**60, 1.5, "ünï", [1, [2]], {"a": {"b": [None]}}]
    for i, value in enumerate(values):
        store.put(f"v/{i}", value)
    assert [store.get(f"v/{i}") for i in range(len(values))] == values
    assert store.get("v/missing") is None
    store.delete("v/0")
    assert store.keys("v/") == [f"v/{i}" for i in range(1, len(values))]
    store.close()


def test_a_batch_writes_and_deletes_together(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    store.put_many({"a": 1, "b": 2})
    store.put_many({"c": 3}, delete=["a"])
    assert (store.get("a"), store.get("b"), store.get("c")) == (None, 2, 3)
    with pytest.raises(TypeError):  # a value JSON cannot hold: nothing of the batch lands
        store.put_many({"d": 4, "e": object()}, delete=["b"])
    assert store.get("d") is None and store.get("b") == 2
    store.close()


def test_prefixes_and_ranges_read_in_key_order(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    for r in (12, 3, 7):
        store.put(f"x/{r:010d}", r)
    store.put("x0", "beside the prefix")
    assert [v for _, v in store.items("x/")] == [3, 7, 12]
    assert [v for _, v in store.items("x/", reverse=True)] == [12, 7, 3]
    assert store.keys_between("x/", f"x/{7:010d}") == [f"x/{3:010d}"]
    assert store.keys_between("x/", "x/~") == store.keys("x/")
    store.close()


def test_raw_bytes_and_a_second_opener(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db")
    store.put_bytes(b"\x00\xff", b"\x01" * 3)
    assert store.get_bytes(b"\x00\xff") == b"\x01\x01\x01" and store.has_bytes(b"\x00\xff")
    assert store.get_bytes(b"nope") is None and not store.has_bytes(b"nope")
    with pytest.raises(StoreError, match="cannot open database"):
        Store.open(tmp_path / "db")  # LevelDB allows one process, one handle
    store.close()
    store.close()  # twice is harmless
    assert store.closed
    again = Store.open(tmp_path / "db")
    assert again.get_bytes(b"\x00\xff") == b"\x01\x01\x01"
    again.close()
