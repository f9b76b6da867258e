"""The clock the timers run on: K2's slots against wall time, and sleeps that wake on time.

Production uses `SlotTimer` over the settlement layer's slot clock; a test gives the
scheduler a clock whose time moves only when the test (or a sleep) moves it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# The loop's timers wake up to a millisecond late (epoll's resolution): sleep to this much
# before a deadline, then yield until it has passed.
TIMER_SLACK_S = 0.0015


class SlotSource(Protocol):
    """Where slots come from: a settlement layer (SlotClocked, which may re-sync)."""

    @property
    def slot_ms(self) -> float: ...

    def time(self) -> float: ...

    def current_slot(self) -> int: ...

    def wall_time_of_slot(self, slot: int) -> float: ...


class Clock(SlotSource, Protocol):
    """What the timers run on: slots, and sleeps measured in them."""

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until_slot(self, slot: int) -> bool:
        """Sleep until `slot` begins; False when it had already begun."""
        ...


class SlotTimer:
    """K2's slot clock, read from its settlement layer (which may re-sync it), with sleeps
    that wake on time."""

    def __init__(self, source: SlotSource) -> None:
        self._source = source

    @property
    def slot_ms(self) -> float:
        return self._source.slot_ms

    def time(self) -> float:
        return self._source.time()

    def current_slot(self) -> int:
        return self._source.current_slot()

    def wall_time_of_slot(self, slot: int) -> float:
        return self._source.wall_time_of_slot(slot)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until_slot(self, slot: int) -> bool:
        if self.current_slot() >= slot:
            return False
        early = self.wall_time_of_slot(slot) - self.time() - TIMER_SLACK_S
        if early > 0:
            await asyncio.sleep(early)
        while self.current_slot() < slot:  # noqa: ASYNC110 - a deadline, not a flag
            await asyncio.sleep(0)
        return True
