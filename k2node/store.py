"""LevelDB (plyvel) key/value stores with JSON values.

plyvel is synchronous; single gets and puts are a few microseconds, so they run on the loop.
Keys are laid out so that a scan reads only what it needs: a range between two keys, or a
prefix walked from its newest end, never a whole prefix to pick a few entries from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import plyvel

from k2node.codec import dumps
from k2node.memory_db import MemoryDatabase


class StoreError(Exception):
    pass


# What opens a LevelDB: plyvel's, or in the power-cut test a recorder that can drop the
# writes not yet synced (tests/powercut.py).
open_database: Callable[..., Any] = plyvel.DB


class Store:
    def __init__(self, db: Any, path: Path, owned: bool = True) -> None:
        self._db = db
        self.path = path
        self._owned = owned  # a view's database is its parent's to close

    @classmethod
    def open(cls, path: Path, **options: Any) -> Store:
        """Open (creating) the database at `path`; `options` go to plyvel.DB."""
        path.mkdir(parents=True, exist_ok=True)
        try:
            db = open_database(str(path), create_if_missing=True, **options)
        except plyvel.IOError as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        return cls(db, path)

    @classmethod
    def memory(cls, path: Path) -> Store:
        """A store in memory only, for a simulation (memory_db.py); `path` names it."""
        return cls(MemoryDatabase(), path)

    def view(self, prefix: str) -> Store:
        """The keys under `prefix` as a store of their own, in this database: many small
        stores without a database, and its open files, each."""
        return Store(self._db.prefixed_db(prefix.encode()), self.path, owned=False)

    def close(self) -> None:
        if self._db is not None:
            if self._owned:
                self._db.close()
            # Drop it now: a plyvel DB freed during interpreter shutdown reports an error.
            self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    def get(self, key: str) -> Any:
        raw = self._db.get(key.encode())
        if raw is None:
            return None
        try:
            return orjson.loads(raw)  # the codec's fast path, without a call around it
        except orjson.JSONDecodeError:
            return json.loads(raw)  # as `_lenient` falls back

    def put(self, key: str, value: Any, sync: bool = False) -> None:
        """`sync`: on disk (fsync'd) before this returns, with every write before it."""
        self._db.put(key.encode(), dumps(value), sync=sync)

    def put_many(
        self, items: dict[str, Any], delete: list[str] | None = None, sync: bool = False
    ) -> None:
        with self._db.write_batch(transaction=True, sync=sync) as batch:
            for key, value in items.items():
                batch.put(key.encode(), dumps(value))
            for key in delete or []:
                batch.delete(key.encode())

    # Raw bytes, for content-addressed blocks.
    def get_bytes(self, key: bytes) -> bytes | None:
        found = self._db.get(key)
        return None if found is None else bytes(found)

    def put_bytes(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)

    def has_bytes(self, key: bytes) -> bool:
        return self._db.get(key) is not None

    def put_many_bytes(self, items: dict[bytes, bytes], sync: bool = False) -> None:
        with self._db.write_batch(transaction=True, sync=sync) as batch:
            for key, value in items.items():
                batch.put(key, value)

    def delete_bytes(self, key: bytes) -> None:
        self._db.delete(key)

    def delete(self, key: str) -> None:
        self._db.delete(key.encode())

    def items(self, prefix: str, reverse: bool = False) -> Iterator[tuple[str, Any]]:
        for key, raw in self._db.iterator(prefix=prefix.encode(), reverse=reverse):
            yield key.decode(), _lenient(raw)

    def keys(self, prefix: str) -> list[str]:
        return [k.decode() for k in self._db.iterator(prefix=prefix.encode(), include_value=False)]

    def keys_between(self, start: str, stop: str) -> list[str]:
        """Keys from `start` (included) to `stop` (excluded), in order."""
        found = self._db.iterator(start=start.encode(), stop=stop.encode(), include_value=False)
        return [k.decode() for k in found]


def _lenient(raw: bytes) -> Any:
    """What this store wrote: through the codec, or (before it) stdlib json, which wrote NaN
    and Infinity; those read back as they were written."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
