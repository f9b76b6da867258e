"""The node's own record of what it owes K2, so each action happens once per round.

An action is written `pending` with its signed transaction (its signature and wire bytes)
before it is sent and `confirmed` after K2 accepts it. On restart a pending action is checked
against K2 by its signature: applied means confirmed; not applied means it is still owed,
and when asked its same bytes are sent again (they cannot land twice), or, once their
blockhash has expired, it is signed afresh.

A write the disk refuses (a full disk) raises as it would, and is the ledger's `disk`
outage: one `disk_write_failed` line until a write goes through again (`disk_writable`).
An action whose pending entry could not be written never leaves: it stays owed.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from k2node.logs import get_logger
from k2node.settlement.base import (
    BlockhashExpired,
    DuplicateTransaction,
    Settlement,
    TransactionError,
)
from k2node.settlement.outage import Outage
from k2node.settlement.wire import Signed
from k2node.store import Store

log = get_logger("k2node.ledger")

PENDING, CONFIRMED, FAILED = "pending", "confirmed", "failed"
PROBE_KEY = "disk-probe"  # deleted (a write that leaves nothing) to see if the disk is back


class Action(StrEnum):
    """The actions recorded per round; keys are ledger/<task>/<action>/<round>[/<detail>]."""

    SUBMIT = "submit"
    AUDIT = "audit"
    DISTRIBUTION_AUDIT = "distribution-audit"
    DISTRIBUTION_UPLOAD = "distribution-upload"
    DISTRIBUTION_SUBMIT = "distribution-submit"
    PAYOUT = "payout"


class Ledger:
    def __init__(self, store: Store, settlement: Settlement, durable: bool = True) -> None:
        self.store = store
        self._durable = durable  # sync what must survive a power cut (off in simulations)
        self._settlement = settlement
        self._locks: dict[str, asyncio.Lock] = {}
        self._pruned: dict[str, int] = {}  # task -> every round below it pruned already
        # task -> the keys of its finished phases: read once, then kept as they are written
        # (this node is their only writer), so a phase about to be sent costs no read
        self._done: dict[str, set[str]] = {}
        self.disk = Outage(
            "disk_write_failed", "disk_writable", self._probe_disk, path=str(store.path)
        )

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:  # plyvel's IOError is one
            self.disk.failed(str(exc))
            raise
        self.disk.succeeded()

    def _put_now(self, key: str, value: Any) -> None:
        self._write(lambda: self.store.put(key, value))

    def writable(self) -> bool:
        """Whether the disk takes a write now (one that leaves nothing behind)."""
        try:
            self._write(lambda: self.store.delete(PROBE_KEY))
        except OSError:
            return False
        return True

    async def _probe_disk(self) -> bool:
        return self.writable()

    @staticmethod
    def key(task_id: str, action: Action, round_: int, detail: str = "") -> str:
        suffix = f"/{detail}" if detail else ""
        return f"ledger/{task_id}/{action}/{round_:010d}{suffix}"

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self.store.get(key)
        return entry if isinstance(entry, dict) else None

    async def send_once(self, key: str, make_tx: Callable[[], Awaitable[Signed]]) -> dict[str, Any]:
        """Send the transaction `make_tx` builds unless this action is already done. One
        caller at a time per action: a second waits and finds it done."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            return await self._send_once(key, make_tx)

    async def _send_once(
        self, key: str, make_tx: Callable[[], Awaitable[Signed]]
    ) -> dict[str, Any]:
        entry = self.get(key)
        if entry and entry["status"] == CONFIRMED:
            return {"signature": entry.get("signature"), "already": True}
        if entry and entry["status"] == PENDING:
            # the same bytes again: if they landed meanwhile K2 says so, and they cannot
            # land twice; signed afresh only once their blockhash has expired
            if await self._settlement.transaction_applied(entry["signature"]):
                return await self._confirm(key, entry["signature"], already=True)
            try:
                return await self._send(key, entry["signature"], base64.b64decode(entry["wire"]))
            except BlockhashExpired:
                pass
        tx = await make_tx()
        wire_b64 = base64.b64encode(tx.wire).decode()
        # on disk before it leaves: after a power cut the node finds it pending and asks K2,
        # rather than signing the action afresh (a second transaction for it)
        entry = {"status": PENDING, "signature": tx.signature, "wire": wire_b64}
        await self._put(key, entry)
        return await self._send(key, tx.signature, tx.wire)

    async def _send(self, key: str, signature: str, raw: bytes) -> dict[str, Any]:
        try:
            await self._settlement.send(raw)
        except DuplicateTransaction:
            pass  # applied before this answer: the action is done
        except BlockhashExpired:
            raise  # still owed: the caller signs it afresh
        except TransactionError as exc:
            self._put_now(key, {"status": FAILED, "error": str(exc)})
            raise
        return await self._confirm(key, signature)

    async def _put(self, key: str, entry: dict[str, Any]) -> None:
        """A write that must survive a power cut: synced, on a thread (an fsync must not
        hold up the timers of the node's other tasks)."""
        try:
            if self._durable:
                await asyncio.to_thread(self.store.put, key, entry, True)
            else:
                self.store.put(key, entry)
        except OSError as exc:
            self.disk.failed(str(exc), key=key)
            raise
        self.disk.succeeded()

    async def _confirm(self, key: str, signature: str, already: bool = False) -> dict[str, Any]:
        # on disk before the phase that asked for it can be marked done
        await self._put(key, {"status": CONFIRMED, "signature": signature})
        return {"signature": signature, "already": True} if already else {"signature": signature}

    async def reconcile(self, task_id: str) -> tuple[int, int]:
        """Settle pending entries left by a stop: (confirmed now, still owed)."""
        confirmed = owed = 0
        for key, entry in list(self.store.items(f"ledger/{task_id}/")):
            if entry.get("status") != PENDING:
                continue
            if await self._settlement.transaction_applied(entry["signature"]):
                self._put_now(key, {"status": CONFIRMED, "signature": entry["signature"]})
                confirmed += 1
            else:
                owed += 1
        if confirmed or owed:
            log.info("ledger_reconciled", task_id=task_id, confirmed=confirmed, owed=owed)
        return confirmed, owed

    # Phases dispatched to the task process, so a restart re-sends only unfinished ones.
    @staticmethod
    def phase_key(task_id: str, phase: str, round_: int) -> str:
        return f"phase/{task_id}/{round_:010d}/{phase}"

    def _phases_done(self, task_id: str) -> set[str]:
        done = self._done.get(task_id)
        if done is None:
            marks = self.store.items(f"phase/{task_id}/")
            done = self._done[task_id] = {key for key, status in marks if status == "done"}
        return done

    def phase_done(self, task_id: str, phase: str, round_: int) -> bool:
        return self.phase_key(task_id, phase, round_) in self._phases_done(task_id)

    def mark_phase(self, task_id: str, phase: str, round_: int, status: str) -> None:
        key = self.phase_key(task_id, phase, round_)
        done = self._phases_done(task_id)
        self._put_now(key, status)
        if status == "done":
            done.add(key)
        else:
            done.discard(key)

    def once(self, key: str) -> bool:
        """True the first time `key` is seen (for events logged once)."""
        if self.store.get(key) is not None:
            return False
        self._put_now(key, True)
        return True

    def prune(self, task_id: str, before_round: int) -> None:
        """Forget what is older than `before_round`: a range per kind of key, so each call
        reads only the keys it deletes."""
        start = self._pruned.get(task_id, 0)
        if before_round <= start:
            return
        # from where the last pruning stopped: LevelDB keeps what it deleted as markers
        # for a while, and a range from the first round would step over them all again
        begin, stop = f"{start:010d}", f"{before_round:010d}"
        prefixes = [f"ledger/{task_id}/{action}/" for action in Action]
        prefixes += [f"phase/{task_id}/", f"logged/{task_id}/"]
        stale = [k for p in prefixes for k in self.store.keys_between(p + begin, p + stop)]
        if stale:
            self._write(lambda: self.store.put_many({}, delete=stale))
            self._done.get(task_id, set()).difference_update(stale)
        self._pruned[task_id] = before_round
        for key in [k for k, lock in self._locks.items() if not lock.locked()]:
            del self._locks[key]

    def latest_confirmed_round(self, task_id: str, action: Action) -> int | None:
        """The newest round for which `action` is confirmed, read from the newest end."""
        prefix = f"ledger/{task_id}/{action}/"
        for key, entry in self.store.items(prefix, reverse=True):
            if entry.get("status") == CONFIRMED:
                return int(key[len(prefix) :].split("/")[0])
        return None
