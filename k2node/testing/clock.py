"""Virtual time for the node's timers and the local K2: it moves only when a test (or a
simulation) advances it, and then only once every timer waits on it and no phase is running.

The node's own scheduler runs on it unchanged: its sleeps park on this clock, and advancing
wakes them in deadline order, so a round of many nodes takes as long as their work, not
as long as the round.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
from dataclasses import dataclass

from k2node.contract.units import SlotClock
from k2node.node.clock import SlotTimer
from k2node.settlement.base import SlotClocked

# Where virtual time starts; any value works, a round one reads well in logs.
EPOCH = 1_000_000.0
# A sleep until a slot wakes this far into it, so that the slot has begun.
INTO_SLOT_S = 1e-6
# A test is told, not hung, when something keeps running this long in real time.
SETTLE_TIMEOUT_S = 60.0


@dataclass
class _Turn:
    held: bool = False


# The running phase's turn (see VirtualClock.turn).
_TURN: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("turn", default=None)


class StuckError(RuntimeError):
    """Virtual time cannot move: something has kept running too long in real time."""


@dataclass
class _Waiter:
    deadline: float
    future: asyncio.Future[None]
    timer: bool  # a timer's sleep (else a running phase's)
    woken: bool = False


class VirtualClock:
    """Wall time (seconds) for a simulated network; call it for the time."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start
        # (deadline, order of parking, waiter): a heap of plain tuples compares in C
        self._waiters: list[tuple[float, int, _Waiter]] = []
        self._seq = 0
        self._timers = 0  # timers alive
        self._parked = 0  # of them, waiting on the clock
        self._busy = 0  # phases running
        self._changed = asyncio.Event()
        self._turn = asyncio.Lock()  # FIFO: phases run one at a time, in the order sent
        self.settle_timeout_s = SETTLE_TIMEOUT_S

    def __call__(self) -> float:
        return self.now

    def timer(self, slots: SlotClock) -> SimTimer:
        """A timer for one scheduler: it counts as running until it first sleeps."""
        self._timers += 1
        return SimTimer(slots, self)

    @property
    def quiet(self) -> bool:
        return self._busy == 0 and self._parked == self._timers

    def _poke(self) -> None:
        if self.quiet:  # what settle waits for (a wake-up per park of many would cost)
            self._changed.set()

    # -- what runs on the clock ------------------------------------------------------------
    async def park(self, deadline: float, timer: bool) -> None:
        """Wait until virtual time reaches `deadline`."""
        self._seq += 1
        waiter = _Waiter(max(deadline, self.now), asyncio.get_running_loop().create_future(), timer)
        heapq.heappush(self._waiters, (waiter.deadline, self._seq, waiter))
        if timer:
            self._parked += 1
        else:
            self._busy -= 1
        self._poke()
        turn = _TURN.get() if not timer else None
        if turn is not None and turn.held:
            self._turn.release()
            turn.held = False
        try:
            await waiter.future
            if turn is not None:
                await self._turn.acquire()
                turn.held = True
        except asyncio.CancelledError:
            if not waiter.woken:  # the advance did not count it back: do it here
                waiter.future.cancel()
                if timer:
                    self._parked -= 1
                else:
                    self._busy += 1
            if timer:
                self._timers -= 1  # a timer is cancelled when its task stops: it is gone
                self._poke()
            raise

    async def take_turn(self) -> _Turn:
        """Wait for a phase's turn: phases due at the same time run one after another in the
        order they were sent, so the same seed gives the same run whatever threads the
        phases wait on. A phase waiting on the clock gives its turn up meanwhile. (Methods,
        not a context manager: this runs for every phase of every node.)"""
        turn = _Turn()
        _TURN.set(turn)
        await self._turn.acquire()
        turn.held = True
        return turn

    def end_turn(self, turn: _Turn) -> None:
        if turn.held:
            turn.held = False
            self._turn.release()

    def job_started(self) -> None:
        self._busy += 1

    def job_ended(self) -> None:
        self._busy -= 1
        self._poke()

    # -- what moves it -------------------------------------------------------------------
    async def settle(self) -> None:
        """Return once every timer waits on the clock and no phase runs."""
        timeout_s = self.settle_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while not self.quiet:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise StuckError(
                f"virtual time is stuck: after {timeout_s:g} s of real time {self._busy} "
                f"phase(s) still run and {self._timers - self._parked} timer(s) are not waiting"
            ) from None

    async def advance_to(self, when: float) -> None:
        """Move time to `when`, waking every sleep due on the way, in deadline order."""
        while True:
            await self.settle()
            waiters = self._waiters
            while waiters and waiters[0][2].future.done():
                heapq.heappop(waiters)  # cancelled
            if not waiters or waiters[0][0] > when:
                break
            due = waiters[0][0]
            self.now = max(self.now, due)
            while waiters and waiters[0][0] <= due:
                waiter = heapq.heappop(waiters)[2]
                if waiter.future.done():
                    continue
                waiter.woken = True
                if waiter.timer:
                    self._parked -= 1
                else:
                    self._busy += 1
                waiter.future.set_result(None)
        self.now = max(self.now, when)

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self.now + seconds)


class SimTimer(SlotTimer):
    """The scheduler's clock in virtual time: its sleeps park on the VirtualClock."""

    def __init__(self, slots: SlotClock, clock: VirtualClock) -> None:
        super().__init__(SlotClocked(slots, clock))
        self._clock = clock

    async def sleep(self, seconds: float) -> None:
        await self._clock.park(self._clock.now + max(0.0, seconds), timer=True)

    async def sleep_until_slot(self, slot: int) -> bool:
        if self.current_slot() >= slot:
            return False
        await self._clock.park(self.wall_time_of_slot(slot) + INTO_SLOT_S, timer=True)
        return True


async def sleep_in_phase(clock: VirtualClock, until: float) -> None:
    """For code running in a phase (a simulated adversary): let virtual time move on to
    `until` while this phase waits."""
    await clock.park(until, timer=False)
