"""How many processes a task may have (threads count too): a pids cgroup of its own where the
node may create one (cgroup v1's pids hierarchy, or a delegated cgroup v2 subtree), else
RLIMIT_NPROC at its user's current count plus the limit. The kernel does not hold root to
RLIMIT_NPROC: a node running as root with no writable pids cgroup has no limit, and says so.

A node's task groups live in `k2node-<pid>.<start time>.<n>` beside its own cgroup. A task's
group goes when its process stops (whatever is left in it killed), the node's folder when
the node stops, and a starting node removes the folders of nodes that are gone (after a
`kill -9`), their stray task processes with them: none pile up.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from k2node.logs import get_logger

log = get_logger("k2node.node")

CGROUP_V1, CGROUP_V2, RLIMIT, NONE = "cgroup-v1", "cgroup-v2", "rlimit", "none"
PREFIX = "k2node-"
KILL_WAIT_S = 2.0  # for a group's processes to be gone once killed
REFUSED_EVERY_S = 60.0  # a task that keeps forking past its limit: one line a minute
_POLL_S = 0.01
_serial = itertools.count()  # several nodes may run in one process (tests)


@dataclass(frozen=True)
class ProcessLimit:
    """What holds a node's task processes to `processes` each."""

    processes: int
    mechanism: str
    base: Path | None = None  # the folder of this node's task groups (cgroup mechanisms)

    def group(self, task_id: str) -> str | None:
        return None if self.base is None else str(self.base / task_id)

    @property
    def by_rlimit(self) -> bool:
        return self.mechanism == RLIMIT

    def close(self) -> None:
        """Remove the node's folder (its tasks have stopped: this is quick)."""
        if self.base is not None:
            remove_tree(self.base, wait_s=0.5)


def process_limit(processes: int) -> ProcessLimit:
    """The mechanism that holds here, said in the log; stale groups of gone nodes cleared."""
    tried = []
    for mechanism, parent in _cgroup_parents():
        try:
            base = _prepare(mechanism, parent, processes)
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"{mechanism} in {parent}: {getattr(exc, 'strerror', None) or exc}")
            continue
        log.info("task_process_limit", mechanism=mechanism, processes=processes, cgroup=str(base))
        return ProcessLimit(processes, mechanism, base)
    if os.getuid() != 0:
        log.info("task_process_limit", mechanism=RLIMIT, processes=processes, tried=tried)
        return ProcessLimit(processes, RLIMIT)
    log.warning(
        "task_process_limit_unavailable",
        processes=processes,
        reason="running as root (RLIMIT_NPROC does not hold) and no pids cgroup is writable",
        tried=tried,
    )
    return ProcessLimit(processes, NONE)


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def _inside(point: str, root: str, path: str) -> Path | None:
    """Where cgroup `path` is under a mount of the hierarchy's `root` at `point`."""
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        return None
    return Path(point) / path[len(root) :].lstrip("/")


def _cgroup_parents() -> list[tuple[str, Path]]:
    """Where this node could make task groups: beside itself in the v1 pids hierarchy; in
    its cgroup's parent on v2 (a cgroup with processes may not have children that limit)."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths: dict[str, str] = {}  # "pids" (v1) or "" (v2) -> this process's cgroup
    for line in own:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            paths[""] = path
        elif "pids" in controllers.split(","):
            paths["pids"] = path
    found = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        kind, options = tail[0], tail[2]  # after the separator: type, source, super options
        if kind == "cgroup" and "pids" in options.split(",") and "pids" in paths:
            where = _inside(point, root, paths["pids"])
            if where is not None:
                found.append((CGROUP_V1, where))
        elif kind == "cgroup2" and "" in paths:
            where = _inside(point, root, paths[""])
            if where is not None and where != Path(point):
                found.append((CGROUP_V2, where.parent))
    return found


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, text: str) -> None:
    with path.open("w") as file:  # one write: cgroupfs takes a value per write
        file.write(text)


def _prepare(mechanism: str, parent: Path, processes: int) -> Path:
    if mechanism == CGROUP_V2:
        if "pids" not in _read(parent / "cgroup.controllers").split():
            raise OSError(errno.ENOTSUP, "the pids controller is not delegated here")
        if "pids" not in _read(parent / "cgroup.subtree_control").split():
            _write(parent / "cgroup.subtree_control", "+pids")
    _sweep(parent)
    base = parent / f"{PREFIX}{os.getpid()}.{start_time(os.getpid())}.{next(_serial)}"
    base.mkdir()
    try:
        if mechanism == CGROUP_V2:
            _write(base / "cgroup.subtree_control", "+pids")
        probe = base / "probe"
        probe.mkdir()
        try:
            _write(probe / "pids.max", str(processes))
            if mechanism == CGROUP_V2:  # moving a process needs the common ancestor's leave
                script = 'echo $$ > "$1"'
                subprocess.run(
                    ["/bin/sh", "-c", script, "sh", str(probe / "cgroup.procs")],
                    check=True,
                    timeout=5,
                    capture_output=True,
                )
        finally:
            _kill_and_remove(probe, KILL_WAIT_S)
    except BaseException:
        remove_tree(base)
        raise
    return base


def start_time(pid: int) -> str:
    """When a process started (clock ticks since boot), telling a reused pid from its first
    owner; empty when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return ""
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def _sweep(parent: Path) -> None:
    """Remove the folders of nodes that are gone, killing what their tasks left running."""
    for folder in parent.glob(f"{PREFIX}*"):
        pid, _, rest = folder.name.removeprefix(PREFIX).partition(".")
        if not pid.isdigit():
            continue  # not a folder of ours
        started = start_time(int(pid))
        if started and started == rest.partition(".")[0]:
            continue  # a node alive now
        killed = remove_tree(folder)
        log.info("task_groups_cleared", cgroup=str(folder), killed=killed)


def members(group: Path) -> list[int]:
    try:
        text = _read(group / "cgroup.procs")
    except FileNotFoundError:
        return []
    return [pid for pid in map(int, text.split()) if pid > 0]  # 0: in another PID namespace


def _kill(group: Path, killed: set[int]) -> bool:
    """SIGKILL every process in `group` (added to `killed`); False when it was empty."""
    found = members(group)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.add(pid)
    return bool(found)


def _remove(group: Path) -> None:
    try:
        group.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:  # still busy: the next start of a node here removes it
        log.warning("task_group_left", cgroup=str(group), error=exc.strerror)


def _kill_and_remove(group: Path, wait_s: float) -> int:
    killed: set[int] = set()
    deadline = time.monotonic() + wait_s
    while _kill(group, killed) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    _remove(group)
    return len(killed)


def remove_tree(top: Path, wait_s: float = KILL_WAIT_S) -> int:
    """Kill every process in `top` and the groups beneath it, and remove them all."""
    killed = 0
    for folder, _, _ in os.walk(top, topdown=False):  # the deepest first
        killed += _kill_and_remove(Path(folder), wait_s)
    return killed


class TaskGroup:
    """One task process's pids cgroup: made before it starts, removed (whatever is left in
    it killed) once it has exited."""

    def __init__(self, path: Path, processes: int) -> None:
        self.path = path
        self.processes = processes
        self._refused = 0
        self._reported_at = -REFUSED_EVERY_S

    async def create(self) -> None:
        if self.path.exists():  # a predecessor's that could not be removed
            await self.remove()
        self.path.mkdir()
        _write(self.path / "pids.max", str(self.processes))

    def report_refused(self, task_id: str, last: bool = False) -> None:
        """Log the forks and threads the limit refused since the last report: the first at
        once, then at most one line a minute, and what is left when the process ends."""
        now = time.monotonic()
        if not last and now - self._reported_at < REFUSED_EVERY_S:
            return
        try:
            events = _read(self.path / "pids.events").split()
        except OSError:
            return
        refused = int(events[events.index("max") + 1]) if "max" in events else 0
        if refused > self._refused:
            self._reported_at = now
            log.warning(
                "task_processes_refused",
                task_id=task_id,
                refused=refused - self._refused,
                limit=self.processes,
                setting="K2NODE_TASK_PROCESSES",
            )
            self._refused = refused

    async def remove(self) -> int:
        """Kill what is left in the group and remove it; how many processes were killed."""
        killed: set[int] = set()
        for _ in range(int(KILL_WAIT_S / _POLL_S)):  # the kernel tells no one a group emptied
            if not _kill(self.path, killed):
                break
            await asyncio.sleep(_POLL_S)
        _remove(self.path)
        return len(killed)
