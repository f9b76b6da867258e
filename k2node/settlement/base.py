"""What the node needs from a K2 settlement layer, and signed transactions."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

import base58

from k2node.crypto import Keypair, verify_detached

ROE_PER_KOII = 1_000_000_000
DEFAULT_SLOT_MS = 400.0
_TX_FIELDS = ("ix", "task_id", "args", "signer", "slot", "nonce")


@dataclass(frozen=True)
class SlotClock:
    """Slots since a genesis wall time, `slot_ms` each: what the settlement layer counts in."""

    genesis: float
    slot_ms: float

    def slot_at(self, now: float) -> int:
        return max(0, int((now - self.genesis) * 1000 // self.slot_ms))

    def time_of(self, slot: int) -> float:
        return self.genesis + slot * self.slot_ms / 1000


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


class Settlement(Protocol):
    """The K2 calls the node makes; `LocalK2` implements them in-process."""

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
