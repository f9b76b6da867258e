"""The LevelDB calls a Store makes, answered from memory: the stores of a simulation, whose
nodes all run in one process and whose data ends with the run.

A LevelDB write goes through its log (a system call) and its memtable: some 5 us, a dozen
times per node and round. Here a write is a dict's. Keys in order, which a range or a
prefix walk needs, are kept once first asked for (a block store is never walked, and never
sorts its many keys). Iterators read the keys and values they cover when made, as
LevelDB's read a snapshot. tests/test_memory_db.py checks every call against plyvel.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from types import TracebackType
from typing import Any


class MemoryDatabase:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._order: list[bytes] | None = None  # every key, sorted; None until asked for

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        return self._data.get(key, default)

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        if self._order is not None and key not in self._data:
            bisect.insort(self._order, key)
        # a copy of its own size: orjson's output keeps a 4 KiB buffer behind a few bytes
        self._data[key] = bytes(memoryview(value))

    def delete(self, key: bytes, sync: bool = False) -> None:
        if key in self._data:
            del self._data[key]
            if self._order is not None:
                del self._order[bisect.bisect_left(self._order, key)]

    def write_batch(self, transaction: bool = False, sync: bool = False) -> MemoryBatch:
        return MemoryBatch(self)

    def iterator(
        self,
        prefix: bytes | None = None,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
        include_value: bool = True,
    ) -> Iterator[Any]:
        if prefix is not None:
            start, stop = prefix, _after_prefix(prefix)
        order = self._sorted()
        low = 0 if start is None else bisect.bisect_left(order, start)
        high = len(order) if stop is None else bisect.bisect_left(order, stop)
        keys = order[low:high]
        if reverse:
            keys.reverse()
        if not include_value:
            return iter(keys)
        data = self._data
        return iter([(key, data[key]) for key in keys])

    def _sorted(self) -> list[bytes]:
        if self._order is None:
            self._order = sorted(self._data)
        return self._order

    def close(self) -> None:
        self._data.clear()
        self._order = None


class MemoryBatch:
    """A write batch: applied whole when its `with` ends without an error, else not at all."""

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db
        self._writes: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._writes.append((key, value))

    def delete(self, key: bytes) -> None:
        self._writes.append((key, None))

    def __enter__(self) -> MemoryBatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is not None:
            return
        for key, value in self._writes:
            if value is None:
                self._db.delete(key)
            else:
                self._db.put(key, value)


def _after_prefix(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with `prefix` (None: there is none)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
