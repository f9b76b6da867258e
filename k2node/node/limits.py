"""A task process's limits as the node watches them: the CPU time each phase burns, and the
processes its group refused.

The task's code is not trusted to count: the node reads the kernel's accounting in /proc
(the task's main process with the children it has reaped, and, with a pids cgroup, every
process in its group). A phase's CPU time is the task's from its message to its reply; a
JavaScript task does not reply, so its phase counts until the next message of its kind. A
phase past K2NODE_TASK_PHASE_CPU_S is reported once, and its process is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from k2node.logs import get_logger
from k2node.node.processlimit import TaskGroup, members

log = get_logger("k2node.process")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1
IDLE_S = 1.0  # how often a task with no phase running is looked at (processes refused)
SOONEST_S = 0.05
SETTLE_S = 0.02  # a phase's start is read this late: the messages due with it go first
_ON_LOOP = 8  # processes read on the event loop; more, on a thread


def cpu_seconds(stat: bytes) -> float:
    """utime + stime + cutime + cstime of a /proc/<pid>/stat (the command may hold spaces)."""
    fields = stat[stat.rindex(b")") + 2 :].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def _others(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                total += cpu_seconds(file.read())
        except (OSError, ValueError):
            continue  # gone since the group was read
    return total


@dataclass(frozen=True)
class Overrun:
    phase: str
    round_: int
    cpu_s: float


class LimitWatch:
    """One task process watched: the phases in flight with the CPU time at their start."""

    def __init__(
        self,
        task_id: str,
        pid: int,
        limit_s: float | None,
        group: TaskGroup | None = None,
        until_next: bool = False,  # a phase ends at the next message of its kind (JavaScript)
    ) -> None:
        self.task_id = task_id
        self._pid = pid
        self._limit_s = limit_s
        self._group = group
        self._until_next = until_next
        self._stat = os.open(f"/proc/{pid}/stat", os.O_RDONLY)  # the process, never a reuse
        self._flight: dict[tuple[str, int], float | None] = {}  # CPU at start, once read
        self._woken = asyncio.Event()
        self._used = 0.0  # by the phase longest in flight, at the last look

    def phase_sent(self, label: str, round_: int) -> None:
        if self._limit_s is None:
            return
        if self._until_next:
            for key in [k for k in self._flight if k[0] == label]:
                del self._flight[key]
        self._flight[(label, round_)] = None  # its start is read next, off the send path
        self._woken.set()

    def phase_done(self, label: str, round_: int) -> None:
        self._flight.pop((label, round_), None)

    def close(self) -> None:
        os.close(self._stat)

    async def cpu(self) -> float | None:
        """The task's CPU seconds so far; None once its main process is gone."""
        try:
            own = cpu_seconds(os.pread(self._stat, 4096, 0))
        except (OSError, ValueError):
            return None
        if self._group is None:
            return own
        others = [pid for pid in members(self._group.path) if pid != self._pid]
        if len(others) > _ON_LOOP:  # a fork bomb's worth of files: not on the loop
            return own + await asyncio.to_thread(_others, others)
        return own + _others(others)

    def _pause(self) -> float:
        if self._limit_s is None or not any(v is not None for v in self._flight.values()):
            return IDLE_S
        # the soonest a phase could pass its limit, every CPU busy on it
        return min(IDLE_S, max(SOONEST_S, (self._limit_s - self._used) / CPUS))

    async def run(self, on_overrun: Callable[[Overrun], None]) -> None:
        """Look every so often until the process is gone, or a phase passes the limit."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._pause()):
                    await self._woken.wait()
            if self._woken.is_set():  # a phase was sent
                await asyncio.sleep(SETTLE_S)
            self._woken.clear()
            if self._group is not None:
                self._group.report_refused(self.task_id)
            now = await self.cpu()
            if now is None:
                return
            over = self._look(now)
            if over is not None:
                log.warning(
                    "task_phase_cpu_exceeded",
                    task_id=self.task_id,
                    round=over.round_,
                    phase=over.phase,
                    cpu_s=round(over.cpu_s, 2),
                    limit_s=self._limit_s,
                    setting="K2NODE_TASK_PHASE_CPU_S",
                )
                on_overrun(over)
                return

    def _look(self, now: float) -> Overrun | None:
        for key, start in self._flight.items():
            if start is None:
                self._flight[key] = now
        started = [(start, key) for key, start in self._flight.items() if start is not None]
        if not started or self._limit_s is None:
            self._used = 0.0
            return None
        start, (label, round_) = min(started)
        self._used = now - start
        return Overrun(label, round_, self._used) if self._used > self._limit_s else None
