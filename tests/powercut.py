"""A power cut for LevelDB: every database opened through k2node's Store goes through a
recorder that knows which writes were synced, and a cut at a chosen write keeps only what a
power cut would leave on disk; each database then starts again from exactly that.

What LevelDB guarantees, and so what is modelled:

- a write or batch made with sync=True is on disk, whole, when it returns (its log record
  is appended and the log file fsync'd);
- a batch is one log record: after a cut it is there whole or not at all;
- a write without sync is only in the OS's page cache: a power cut may lose it;
- a synced write also takes the earlier writes of the same log file to disk, but LevelDB
  switches to a new log file whenever its memtable fills, and does not fsync the one it
  leaves (its writes are safe only once that memtable has been compacted to a table).
  Where the switch falls is not the program's to know, so it may not count on a later
  sync: in the worst case only the synced writes are left;
- each database has its own log: what one keeps says nothing about another.

`Survival` says which of the writes since the last cut a cut keeps. Files outside LevelDB
(wallets, the IPFS store's pack files) are not recorded.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

import plyvel

Op = tuple[bytes, bytes | None]  # a put, or a delete (None)


class PowerCut(BaseException):
    """The machine lost power: nothing of it runs on past this point.

    A BaseException, so that the node's own `except Exception` handlers do not carry on
    (they would log errors and retry writes on a machine that is off)."""


class Survival(StrEnum):
    SYNCED = "synced"  # the synced writes alone: the worst case
    LOGGED = "logged"  # all up to each database's last synced write (no log switch since)
    SOME = "some"  # the synced ones and any of the others (pages written back in any order)
    ALL = "all"  # every write made (what kill -9 leaves)


@dataclass(frozen=True)
class Write:
    ops: tuple[Op, ...]
    synced: bool


def survivors(writes: list[Write], mode: Survival, rng: random.Random) -> list[Write]:
    """The writes of one database, in order, that a cut in `mode` leaves on disk."""
    if mode is Survival.ALL:
        return list(writes)
    if mode is Survival.SYNCED:
        return [w for w in writes if w.synced]
    if mode is Survival.LOGGED:
        last = max((i for i, w in enumerate(writes) if w.synced), default=-1)
        return writes[: last + 1]
    return [w for w in writes if w.synced or rng.random() < 0.5]


@dataclass
class Machine:
    """The power supply of every database opened while installed as the Store's opener.

    `cut_at`: the write (counted over the machine's whole life, from 1) that does not
    happen: it and every write after it raise PowerCut, and `on_cut` is called once.

    Each database's LevelDB is opened once and kept open from life to life: after a cut
    the keys written since the last one are set back to what the cut left of them, so
    the next life reads exactly what a restart would find, without LevelDB's recovery
    (and its fsyncs) at every start."""

    cut_at: int | None = None
    on_cut: Callable[[], None] | None = None
    writes: int = 0
    down: bool = False
    cut_write: str = ""  # the write the last cut fell on, for messages
    _real: dict[str, Any] = field(default_factory=dict)  # path -> its plyvel.DB
    _life: dict[str, list[Write]] = field(default_factory=dict)  # written since the last cut
    _before: dict[str, dict[bytes, bytes | None]] = field(default_factory=dict)  # as it was
    _saved: dict[str, dict[bytes, bytes | None]] | None = None  # as at the checkpoint
    _saved_writes: int = 0
    # One write at a time, whatever thread makes it, so that a cut is one instant.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, name: str, **options: Any) -> RecordedDB:
        """Store's opener (k2node.store.open_database)."""
        if self.down:
            raise PowerCut(f"the machine is off: cannot open {name}")
        if name not in self._real:
            self._real[name] = plyvel.DB(name, **options)
        return RecordedDB(self, name, self._real[name], b"")

    def write(
        self, path: str, ops: tuple[Op, ...], synced: bool, apply: Callable[[], None]
    ) -> None:
        with self._lock:
            if self.down:
                raise PowerCut(f"the machine is off: a write to {path} is lost")
            self.writes += 1
            if self.writes == self.cut_at:
                self.down = True
                where = "/".join(path.split("/")[-2:])
                key = ops[0][0][:80] if ops else b""
                how = "synced" if synced else "not synced"
                self.cut_write = f"write {self.writes}, to {where}: {key!r}... ({how})"
                if self.on_cut is not None:
                    self.on_cut()
                raise PowerCut(f"power cut at write {self.writes}, to {path}")
            for memo in (self._before, self._saved):
                if memo is not None:
                    before = memo.setdefault(path, {})
                    for key, _ in ops:
                        if key not in before:
                            before[key] = self._real[path].get(key)
            self._life.setdefault(path, []).append(Write(ops, synced))
            apply()  # (unsynced: what reaches the disk is this recorder's to say)

    def switch_off(self) -> None:
        """A cut now, between two writes."""
        with self._lock:
            self.down = True

    def restore(self, mode: Survival, rng: random.Random) -> dict[str, list[Write]]:
        """After a cut, once nothing of the machine runs: set each database to what `mode`
        leaves of it. Returns the writes kept, by database."""
        if not self.down:
            raise RuntimeError("restore() is for a machine that is off")
        kept: dict[str, list[Write]] = {}
        for path, writes in self._life.items():
            kept[path] = survivors(writes, mode, rng)
            if len(kept[path]) == len(writes):
                continue  # on disk already
            values = dict(self._before[path])
            for write in kept[path]:
                values.update(write.ops)
            self._set(path, values)
        self._life, self._before, self.down = {}, {}, False
        return kept

    def checkpoint(self) -> None:
        """Remember the databases as they are (the machine off, or between lives)."""
        self._saved, self._saved_writes = {}, self.writes

    def rollback(self) -> None:
        """Every database back to the checkpoint, to cut the same stretch elsewhere."""
        assert self._saved is not None, "rollback() needs a checkpoint()"
        for path, values in self._saved.items():
            self._set(path, values)
        self._saved, self.writes = {}, self._saved_writes
        self._life, self._before, self.down = {}, {}, False

    def _set(self, path: str, values: dict[bytes, bytes | None]) -> None:
        with self._real[path].write_batch() as batch:
            for key, value in values.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)

    def close(self) -> None:
        """Close every database for good (the test's end)."""
        for db in self._real.values():
            db.close()
        self._real = {}


class RecordedDB:
    """The part of plyvel.DB that Store uses; writes go through the machine, reads straight
    to LevelDB."""

    def __init__(self, machine: Machine, path: str, real: Any, prefix: bytes) -> None:
        self._machine = machine
        self._path = path
        self._real = real
        self._prefix = prefix  # a prefixed view's, recorded as full keys

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        found: bytes | None = self._real.get(key, default)
        return found

    def iterator(self, **options: Any) -> Iterator[Any]:
        found: Iterator[Any] = self._real.iterator(**options)
        return found

    def prefixed_db(self, prefix: bytes) -> RecordedDB:
        return RecordedDB(
            self._machine, self._path, self._real.prefixed_db(prefix), self._prefix + prefix
        )

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        op = ((self._prefix + key, bytes(value)),)
        self._machine.write(self._path, op, sync, lambda: self._real.put(key, value))

    def delete(self, key: bytes, sync: bool = False) -> None:
        op = ((self._prefix + key, None),)
        self._machine.write(self._path, op, sync, lambda: self._real.delete(key))

    def write_batch(self, transaction: bool = False, sync: bool = False) -> RecordedBatch:
        return RecordedBatch(self, sync)

    def record_batch(self, ops: list[Op], sync: bool) -> None:
        def apply() -> None:
            with self._real.write_batch() as batch:
                for key, value in ops:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)

        full = tuple((self._prefix + key, value) for key, value in ops)
        self._machine.write(self._path, full, sync, apply)

    def close(self) -> None:
        """Kept open for the next life: the machine closes it (Machine.close)."""


class RecordedBatch:
    """A write batch: one atomic write when its `with` block ends without an error."""

    def __init__(self, db: RecordedDB, sync: bool) -> None:
        self._db = db
        self._sync = sync
        self._ops: list[Op] = []

    def __enter__(self) -> RecordedBatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:  # (an empty synced batch still syncs the log)
            self._db.record_batch(self._ops, self._sync)

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self._ops.append((bytes(key), None))
