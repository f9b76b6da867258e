"""What the node needs from a K2 settlement layer: its slot clock, reads, wire transactions."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from k2node.contract.units import SlotClock

# Solana's JSON-RPC code for a transaction refused before it lands (preflight), and the
# `err` names of one applied before and of one whose blockhash has expired.
TRANSACTION_REFUSED = -32002
ALREADY_PROCESSED = "AlreadyProcessed"
BLOCKHASH_NOT_FOUND = "BlockhashNotFound"


class TransactionError(Exception):
    """K2 refused a transaction; the message says why."""


class DuplicateTransaction(TransactionError):
    """This exact signed transaction was applied before."""


class LogNotDurable(OSError):
    """K2 applied the transaction but could not get its log to disk: not a refusal (it may
    stand once the disk recovers); ask again by its signature."""


class BlockhashExpired(TransactionError):
    """The transaction's blockhash is too old (or unknown): it was not applied."""


@dataclass(frozen=True)
class Account:
    """An account as K2 shows it."""

    lamports: int
    owner: str
    data: bytes
    executable: bool = False

    def to_rpc(self) -> dict[str, Any]:
        """As Solana's JSON-RPC answers it, data in base64."""
        return {
            "lamports": self.lamports,
            "owner": self.owner,
            "data": [base64.b64encode(self.data).decode(), "base64"],
            "executable": self.executable,
            "rentEpoch": 0,
            "space": len(self.data),
        }


class SlotClocked:
    """The slot clock of a settlement layer: its slots, read against a wall-time function."""

    def __init__(self, slots: SlotClock, now: Callable[[], float] = time.time) -> None:
        self._slots = slots
        self._now = now
        self._last: tuple[float, SlotClock | None, int] = (float("nan"), None, 0)

    @property
    def slots(self) -> SlotClock:
        return self._slots

    def time(self) -> float:
        """Wall time, as this clock reads it."""
        return self._now()

    @property
    def slot_ms(self) -> float:
        return self._slots.slot_ms

    def current_slot(self) -> int:
        # the last answer again for the same time on the same clock: a virtual clock stands
        # still while many ask (a re-synced clock is another SlotClock)
        now, slots = self._now(), self._slots
        if now != self._last[0] or slots is not self._last[1]:
            self._last = (now, slots, slots.slot_at(now))
        return self._last[2]

    def wall_time_of_slot(self, slot: int) -> float:
        return self._slots.time_of(slot)


class Settlement(Protocol):
    """The K2 calls the node makes; `LocalK2` implements them in-process."""

    # False only for a simulation's K2, which trusts the nodes in its own process: their
    # transactions then carry stand-in signatures (wire.sign)
    @property
    def checks_signatures(self) -> bool: ...

    @property
    def slots(self) -> SlotClock: ...

    @property
    def slot_ms(self) -> float: ...

    def time(self) -> float: ...

    def current_slot(self) -> int: ...

    def wall_time_of_slot(self, slot: int) -> float: ...

    async def get_task_state(
        self, task_id: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def get_round_sections(
        self, task_id: str, round_: int, sections: tuple[str, ...]
    ) -> dict[str, Any]: ...

    async def get_section(self, task_id: str, section: str) -> Any:
        """One whole section of the task's state (a round section: every round it keeps)."""
        ...

    async def get_distribution_list(
        self, task_id: str, submitter: str, round_: int
    ) -> dict[str, int] | None: ...

    async def latest_blockhash(self) -> tuple[str, int]:
        """A recent blockhash, and the last slot a transaction signed with it is taken."""
        ...

    async def send(self, raw: bytes) -> str:
        """Send a signed wire transaction; its signature once K2 has applied it."""
        ...

    async def transaction_applied(self, signature: str) -> bool: ...

    async def get_account(self, pubkey: str) -> Account | None: ...

    async def get_program_accounts(
        self, program: str, filters: list[dict[str, Any]]
    ) -> list[tuple[str, Account]]: ...

    async def get_balance(self, pubkey: str) -> int: ...

    async def airdrop(self, pubkey: str, amount: int) -> None: ...
