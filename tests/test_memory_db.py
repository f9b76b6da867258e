"""The in-memory database answers every call a Store makes as LevelDB (plyvel) does: the
same random writes to both, then the same reads and walks of both."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import plyvel
import pytest

from k2node.memory_db import MemoryDatabase
from k2node.store import Store

KEYS = [b"", b"a", b"a/", b"a/1", b"a/2", b"a/\xff", b"a\xff", b"ab", b"b", b"\xff", b"\xff\xff"]


def _walks(db: Any, rng: random.Random) -> list[Any]:
    seen: list[Any] = []
    for _ in range(30):
        start, stop = rng.choice([None, *KEYS]), rng.choice([None, *KEYS])
        prefix = rng.choice([None, b"a", b"a/", b"\xff", b"b"])
        reverse, values = rng.random() < 0.5, rng.random() < 0.5
        if prefix is not None:
            found = db.iterator(prefix=prefix, reverse=reverse, include_value=values)
        else:
            found = db.iterator(start=start, stop=stop, reverse=reverse, include_value=values)
        seen.append(list(found))
    seen.append([db.get(k) for k in KEYS])
    return seen


@pytest.mark.parametrize("seed", range(12))
def test_random_writes_read_back_as_leveldb_reads_them(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    level = plyvel.DB(str(tmp_path / "level"), create_if_missing=True)
    memory = MemoryDatabase()
    try:
        for step in range(300):
            # never a walk's bound itself: plyvel 1.5 walks back over nothing when the one
            # key in range is its start (the Store's walks start at a prefix, never a key)
            key = rng.choice(KEYS) + bytes([rng.randrange(0x80, 0xFF)])
            kind = rng.random()
            for db in (level, memory):
                if kind < 0.5:
                    db.put(key, b"v%d" % step)
                elif kind < 0.7:
                    db.delete(key)
                else:  # a batch: applied whole, or (an error inside it) not at all
                    failed = kind > 0.9
                    try:
                        with db.write_batch(transaction=True) as batch:
                            batch.put(key + b"\x80", b"b%d" % step)
                            batch.delete(key)
                            if failed:
                                raise RuntimeError("the batch is given up")
                    except RuntimeError:
                        pass
            if step % 60 == 0:  # walked midway too: the kept order must follow later writes
                assert _walks(memory, random.Random(step)) == _walks(level, random.Random(step))
        assert _walks(memory, random.Random(seed)) == _walks(level, random.Random(seed))
    finally:
        level.close()


def test_an_iterator_reads_what_was_there_when_it_was_made() -> None:
    memory = MemoryDatabase()
    for key in (b"k1", b"k2", b"k3"):
        memory.put(key, b"x")
    walk = memory.iterator(prefix=b"k")
    memory.delete(b"k2")
    memory.put(b"k4", b"y")
    assert [k for k, _ in walk] == [b"k1", b"k2", b"k3"]


def test_a_memory_store_keeps_values_as_a_store_does(tmp_path: Path) -> None:
    store = Store.memory(tmp_path / "never-written")
    store.put("ledger/t/submit/0000000001", {"status": "confirmed"})
    store.put("ledger/t/submit/0000000002", {"status": "pending"})
    store.put_bytes(b"block/x", b"\x00\x01")
    assert store.get("ledger/t/submit/0000000001") == {"status": "confirmed"}
    assert [k for k, _ in store.items("ledger/t/submit/", reverse=True)] == [
        "ledger/t/submit/0000000002",
        "ledger/t/submit/0000000001",
    ]
    assert store.keys_between("ledger/t/", "ledger/t/submit/0000000002") == [
        "ledger/t/submit/0000000001"
    ]
    assert store.get_bytes(b"block/x") == b"\x00\x01" and store.has_bytes(b"block/x")
    store.put_many({"a": 1}, delete=["ledger/t/submit/0000000001"])
    assert store.get("a") == 1 and store.get("ledger/t/submit/0000000001") is None
    assert not (tmp_path / "never-written").exists()
