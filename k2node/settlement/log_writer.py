"""The local K2's log on disk: each applied change appended as an entry, and the entries
written in synced batches (group commit), so that an answer waits for the disk without an
fsync of its own.

A synced batch is on disk whole: a lone synced write would not do, as LevelDB does not
fsync a log file it has switched away from. Batches are written on a thread, the next one
gathering meanwhile, so an fsync never holds up the event loop.

A disk that refuses the batches (full, say) is one fault, logged when it begins and when it
clears: under load a batch fails on every turn of the loop, and a line for each would bury
the log.
"""

from __future__ import annotations

import asyncio
from typing import Any

from k2node.logs import get_logger
from k2node.settlement.base import LogNotDurable
from k2node.settlement.outage import Outage
from k2node.settlement.snapshot import log_key
from k2node.store import Store

log = get_logger("k2node.k2")


class LogWriter:
    def __init__(self, store: Store, seq: int, kept: bool = True) -> None:
        self.seq = seq  # the last entry appended
        self._store = store
        self._kept = kept  # off: entries are counted, not written (a simulation's K2)
        self._synced = seq
        self._pending: dict[str, Any] = {}  # appended, not yet on disk
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self.disk = Outage("k2_log_sync_failed", "k2_log_synced", self._probe, path=str(store.path))

    def replayed(self, seq: int) -> None:
        """An entry found on disk when the K2 opened."""
        self.seq = self._synced = seq

    def append(self, entry: dict[str, Any] | None) -> int:
        """Append a change (the caller holds the K2's lock); its number. (None: a change
        only counted, in a log that is not kept.)"""
        self.seq += 1
        if self._kept and entry is not None:
            self._pending[log_key(self.seq)] = {"seq": self.seq, **entry}
        return self.seq

    async def on_disk(self, seq: int) -> None:
        """Return once the log is on disk up to entry `seq`; LogNotDurable if it cannot be
        written now (the entries are kept for the next batch)."""
        if not self._kept or seq <= self._synced:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._sync(), name="k2-log-sync")
        await done

    async def _sync(self) -> None:
        await asyncio.sleep(0)  # this turn's transactions join the batch
        while self._waiters:
            upto, batch, waiters = self.seq, self._pending, self._waiters
            self._pending, self._waiters = {}, []
            try:
                if batch:
                    await asyncio.to_thread(self._store.put_many, batch, None, True)
            except Exception as exc:  # a full disk, say: kept for the next batch
                self._pending = batch | self._pending
                self.disk.failed(str(exc), unsynced=len(self._pending))
                _settle(waiters, LogNotDurable(f"K2 could not get its log to disk: {exc}"))
                continue
            self.disk.succeeded()
            self._synced = max(self._synced, upto)
            _settle(waiters)

    async def _probe(self) -> bool:
        """Whether the entries kept back can go to disk now (and they do)."""
        try:
            await self.flush()
        except Exception:
            return False
        return True

    async def flush(self) -> None:
        """Everything appended on disk now (a snapshot then deletes all it covers)."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
        if self._pending:
            await asyncio.to_thread(self.flush_now)

    def flush_now(self) -> None:
        """The same, on the caller's thread (a close, once the loop's work has stopped)."""
        if self._pending:
            upto = self.seq
            self._store.put_many(self._pending, sync=True)
            self._pending, self._synced = {}, upto

    async def close(self) -> None:
        """What was answered, or is waiting to be, goes to disk before the store closes."""
        failure: Exception | None = None
        try:
            await self.flush()
        except Exception as exc:
            log.error("k2_log_sync_failed", error=str(exc), unsynced=len(self._pending))
            failure = LogNotDurable(f"K2 could not get its log to disk: {exc}")
        _settle(self._waiters, failure)
        self._waiters = []


def _settle(waiters: list[asyncio.Future[None]], failure: Exception | None = None) -> None:
    for done in waiters:
        if done.done():
            continue
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(failure)
