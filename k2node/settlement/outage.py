"""A fault that comes and goes (a K2 that does not answer, a disk that refuses writes): one
line when it begins and one when it clears, however many calls meet it meanwhile, and a wait
for it to clear that probes at a growing interval instead of spinning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from k2node.logs import get_logger

log = get_logger("k2node.faults")

# A wait for a fault to clear probes after this long, doubling up to the most.
PROBE_FIRST_S, PROBE_MAX_S = 0.2, 1.0

Probe = Callable[[], Awaitable[bool]]


class Outage:
    def __init__(
        self, began: str, cleared: str, probe: Probe, lasted: str = "down_s", **where: Any
    ) -> None:
        self._began, self._cleared = began, cleared  # the two events logged
        self._lasted = lasted  # the cleared line's field saying how long the fault held
        self._probe = probe  # True once the fault has cleared; it may call succeeded()
        self._where = where  # fields of both lines (the URL, the path)
        self._since: float | None = None
        self._probing = asyncio.Lock()
        self.count = 0  # faults begun so far

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, error: str, **fields: Any) -> None:
        """A call met the fault: the first since it was last clear logs it."""
        if self._since is None:
            self._since = time.monotonic()
            self.count += 1
            log.warning(self._began, **self._where, **fields, error=error[:300])

    def succeeded(self) -> None:
        """A call went through: a fault that was there has cleared."""
        if self._since is not None:
            down_s = round(time.monotonic() - self._since, 3)
            self._since = None
            log.info(self._cleared, **self._where, **{self._lasted: down_s})

    async def cleared(self, within_s: float) -> bool:
        """True once the fault has cleared (at once when there is none), probing for it
        meanwhile; False if it still holds after `within_s`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + within_s
        delay = PROBE_FIRST_S
        while self.active:
            left = until - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, PROBE_MAX_S)
            if self.active and not self._probing.locked():  # one probe at a time
                async with self._probing:
                    if await self._probe():
                        self.succeeded()
        return True
