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
    that wake on time.

    Every task of a node sleeps on this one timer, and many wait for the same slot (a
    window opening): one waker per slot watches for its first instant, then releases the
    waiters all at once, in the order they began to wait. (A spinning waiter each would
    cost the loop a turn per waiter per spin, delaying the boundary's last phase the most.)
    """

    def __init__(self, source: SlotSource) -> None:
        self._source = source
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}

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
        loop = asyncio.get_running_loop()
        waiters = self._waiting.get(slot)
        if waiters is None:
            waiters = self._waiting[slot] = []
            early = self.wall_time_of_slot(slot) - self.time() - TIMER_SLACK_S
            loop.call_later(max(0.0, early), self._watch, loop, slot)
        woken = loop.create_future()
        waiters.append(woken)
        await woken  # (a cancelled waiter's future is cancelled with it: skipped below)
        return True

    def _watch(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        """From just before `slot` (the loop's timers are only as fine as a millisecond),
        look again at every turn of the loop until it has begun."""
        if self.current_slot() < slot:
            # (a re-sync may have moved the slot later: sleep again rather than spin)
            early = self.wall_time_of_slot(slot) - self.time() - TIMER_SLACK_S
            if early > 0:
                loop.call_later(early, self._watch, loop, slot)
            else:
                loop.call_soon(self._watch, loop, slot)
            return
        for woken in self._waiting.pop(slot):
            if not woken.done():
                woken.set_result(None)
