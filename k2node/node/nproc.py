"""What a task's launcher does, in the task's process before it becomes the task, to hold
it to its process count (processlimit.py chose how): join the pids cgroup the node made for
it, or cap RLIMIT_NPROC at its user's current count plus the limit.

Only the standard library: this runs before the task's runtime has loaded anything else.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def join(group: str) -> None:
    """Move this process into `group` (the task's launcher, before it becomes the task)."""
    with (Path(group) / "cgroup.procs").open("w") as procs:
        procs.write(str(os.getpid()))


def limit_processes(headroom: int) -> int:
    """RLIMIT_NPROC for this process and what it starts: its user's processes and threads
    now, plus `headroom`. Returns the limit set."""
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    top = hard if hard != resource.RLIM_INFINITY else 1 << 22
    limit = min(_count_by_fork(_threads_of(os.getuid()), hard, top) + headroom, top)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return limit


def _threads_of(uid: int) -> int:
    """The threads of processes this user runs, as far as this PID namespace shows them."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        found = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(found.get("Uid", "-1").split()[0]) == uid:
            count += int(found.get("Threads", "1"))
    return count


def _count_by_fork(seen: int, hard: int, top: int) -> int:
    """The user's count as the kernel keeps it, which includes processes in other PID
    namespaces (other containers of the same uid) that /proc does not show: a fork passes
    while the count is under the soft limit, so the lowest limit it passes is the count + 1."""

    def passes(limit: int) -> bool:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, hard))
        try:
            pid = os.fork()
        except BlockingIOError:
            return False
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return True

    low, high, step = seen, seen + 1, 1  # passes(high) is what is looked for
    while not passes(high):
        if high >= top:
            return top
        low, step = high, step * 2
        high = min(seen + step, top)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle, high)
    return high - 1
