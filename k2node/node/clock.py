"""The clock the timers run on: K2's slots against wall time, and sleeps that wake on time.

Production uses `SlotTimer` over the settlement layer's slot clock; a test gives the
scheduler a clock whose time moves only when the test (or a sleep) moves it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from k2node.settlement.base import SlotClocked

# The loop's timers wake up to a millisecond late (epoll's resolution): sleep to this much
# before a deadline, then yield until it has passed.
TIMER_SLACK_S = 0.0015


class Clock(Protocol):
    @property
    def slot_ms(self) -> float: ...

    def time(self) -> float: ...

    def current_slot(self) -> int: ...

    def wall_time_of_slot(self, slot: int) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until_slot(self, slot: int) -> bool:
        """Sleep until `slot` begins; False when it had already begun."""
        ...


class SlotTimer(SlotClocked):
    """K2's slot clock against the wall clock, with sleeps that wake on time."""

    def time(self) -> float:
        return self._now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until_slot(self, slot: int) -> bool:
        if self.current_slot() >= slot:
            return False
        early = self.wall_time_of_slot(slot) - self._now() - TIMER_SLACK_S
        if early > 0:
            await asyncio.sleep(early)
        while self.current_slot() < slot:  # noqa: ASYNC110 - a deadline, not a flag
            await asyncio.sleep(0)
        return True
