"""What the node needs from a K2 settlement layer, and signed transactions."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import base58

from k2node.contract.units import SlotClock
from k2node.crypto import Keypair, verify_detached

_TX_FIELDS = ("ix", "task_id", "args", "signer", "slot", "nonce")
# JSON-RPC error codes of a refused transaction, between `k2node k2` and its clients.
TRANSACTION_REFUSED, DUPLICATE_TRANSACTION = -32000, -32001


class TransactionError(Exception):
    """K2 refused a transaction; the message says why."""


class DuplicateTransaction(TransactionError):
    """This exact signed transaction was applied before."""


def _tx_message(tx: dict[str, Any]) -> bytes:
    body = {k: tx.get(k) for k in _TX_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_tx(
    keypair: Keypair, ix: str, task_id: str, args: dict[str, Any], slot: int
) -> dict[str, Any]:
    """A transaction `ix(args)` on task `task_id`, signed by `keypair` at `slot`."""
    tx: dict[str, Any] = {
        "ix": ix,
        "task_id": task_id,
        "args": args,
        "signer": keypair.pubkey,
        "slot": slot,
        "nonce": secrets.token_hex(8),
    }
    tx["signature"] = base58.b58encode(keypair.sign(_tx_message(tx))).decode()
    return tx


def check_tx_signature(tx: Any) -> None:
    if not isinstance(tx, dict) or not all(k in tx for k in (*_TX_FIELDS, "signature")):
        raise TransactionError("malformed transaction")
    if not isinstance(tx["signer"], str) or not isinstance(tx["signature"], str):
        raise TransactionError("malformed transaction")
    try:
        signature = base58.b58decode(tx["signature"])
    except ValueError:
        raise TransactionError("malformed signature") from None
    if not verify_detached(tx["signer"], _tx_message(tx), signature):
        raise TransactionError("invalid signature")


class SlotClocked:
    """The slot clock of a settlement layer: its slots, read against a wall-time function."""

    def __init__(self, slots: SlotClock, now: Callable[[], float] = time.time) -> None:
        self._slots = slots
        self._now = now

    @property
    def slots(self) -> SlotClock:
        return self._slots

    @property
    def slot_ms(self) -> float:
        return self._slots.slot_ms

    def current_slot(self) -> int:
        return self._slots.slot_at(self._now())

    def wall_time_of_slot(self, slot: int) -> float:
        return self._slots.time_of(slot)


class Settlement(Protocol):
    """The K2 calls the node makes; `LocalK2` implements them in-process."""

    @property
    def slots(self) -> SlotClock: ...

    @property
    def slot_ms(self) -> float: ...

    def current_slot(self) -> int: ...

    def wall_time_of_slot(self, slot: int) -> float: ...

    async def get_task_state(
        self, task_id: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def get_round_sections(
        self, task_id: str, round_: int, sections: tuple[str, ...]
    ) -> dict[str, Any]: ...

    async def get_distribution_list(
        self, task_id: str, submitter: str, round_: int
    ) -> dict[str, int] | None: ...

    async def send(self, tx: dict[str, Any]) -> dict[str, Any]: ...

    async def transaction_applied(self, signature: str) -> bool: ...

    async def get_balance(self, pubkey: str) -> int: ...

    async def airdrop(self, pubkey: str, amount: int) -> None: ...
