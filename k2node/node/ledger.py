"""The node's own record of what it owes K2, so each action happens once per round.

An action is written `pending` with its signed transaction before it is sent and
`confirmed` after K2 accepts it. On restart a pending action is checked against K2: applied
means confirmed; not applied means it is still owed and is sent again when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from k2node.settlement.base import DuplicateTransaction, Settlement, TransactionError
from k2node.store import Store

log = structlog.get_logger("k2node.ledger")

PENDING, CONFIRMED, FAILED = "pending", "confirmed", "failed"


class Ledger:
    def __init__(self, store: Store, settlement: Settlement) -> None:
        self._store = store
        self._settlement = settlement

    @property
    def store(self) -> Store:
        return self._store

    @staticmethod
    def key(task_id: str, action: str, round_: int, detail: str = "") -> str:
        suffix = f"/{detail}" if detail else ""
        return f"ledger/{task_id}/{action}/{round_:010d}{suffix}"

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._store.get(key)
        return entry if isinstance(entry, dict) else None

    async def send_once(self, key: str, make_tx: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Send the transaction `make_tx` builds unless this action is already done."""
        entry = self.get(key)
        if entry and entry["status"] == CONFIRMED:
            return {**entry.get("result", {}), "already": True}
        if (
            entry
            and entry["status"] == PENDING
            and await self._settlement.transaction_applied(entry["tx"]["signature"])
        ):
            self._store.put(key, {"status": CONFIRMED, "result": {}})
            return {"already": True}
        tx = make_tx()
        self._store.put(key, {"status": PENDING, "tx": tx})
        try:
            result = await self._settlement.send(tx)
        except DuplicateTransaction:
            result = {}
        except TransactionError as exc:
            self._store.put(key, {"status": FAILED, "error": str(exc)})
            raise
        self._store.put(key, {"status": CONFIRMED, "result": result})
        return result

    async def reconcile(self, task_id: str) -> tuple[int, int]:
        """Settle pending entries left by a stop: (confirmed now, still owed)."""
        confirmed = owed = 0
        for key, entry in list(self._store.items(f"ledger/{task_id}/")):
            if entry.get("status") != PENDING:
                continue
            if await self._settlement.transaction_applied(entry["tx"]["signature"]):
                self._store.put(key, {"status": CONFIRMED, "result": {}})
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

    def phase_done(self, task_id: str, phase: str, round_: int) -> bool:
        return bool(self._store.get(self.phase_key(task_id, phase, round_)) == "done")

    def mark_phase(self, task_id: str, phase: str, round_: int, status: str) -> None:
        self._store.put(self.phase_key(task_id, phase, round_), status)

    def once(self, key: str) -> bool:
        """True the first time `key` is seen (for events logged once)."""
        if self._store.get(key) is not None:
            return False
        self._store.put(key, True)
        return True

    def prune(self, task_id: str, before_round: int) -> None:
        stale = [
            k
            for prefix in (f"ledger/{task_id}/", f"phase/{task_id}/", f"logged/{task_id}/")
            for k in self._store.keys(prefix)
            if _round_in(k, prefix) < before_round
        ]
        if stale:
            self._store.put_many({}, delete=stale)


def _round_in(key: str, prefix: str) -> int:
    parts = key[len(prefix) :].split("/")
    for part in parts:
        if len(part) == 10 and part.isdigit():
            return int(part)
    return 1 << 62


def latest_confirmed_round(store: Store, task_id: str, action: str) -> int | None:
    """The newest round for which `action` is confirmed (keys sort by padded round)."""
    prefix = f"ledger/{task_id}/{action}/"
    for key, entry in reversed(list(store.items(prefix))):
        if entry.get("status") == CONFIRMED:
            return _round_in(key, prefix)
    return None
