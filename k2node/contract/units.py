"""Amounts and time as K2 counts them: ROE, and slots of about 400 ms."""

from __future__ import annotations

from dataclasses import dataclass

ROE_PER_KOII = 1_000_000_000
# The slot time to assume when it cannot be measured.
DEFAULT_SLOT_MS = 400.0


@dataclass(frozen=True)
class SlotClock:
    """Slots since a genesis wall time, `slot_ms` each."""

    genesis: float
    slot_ms: float

    def slot_at(self, now: float) -> int:
        return max(0, int((now - self.genesis) * 1000 // self.slot_ms))

    def time_of(self, slot: int) -> float:
        return self.genesis + slot * self.slot_ms / 1000
