"""Task processes confined by the kernel (Landlock): a task reads only its runtime, its code
and k2node's package, and writes only its own namespace folder, so code downloaded from
strangers cannot open the wallets, another task's folder or the rest of the machine.

`python -m k2node.node.confine RULES_JSON -- COMMAND...` sets the task's resource limits
(memory, open files, processes: nproc.py), confines itself, and then becomes COMMAND
(exec keeps them all).
Where the kernel has no Landlock it says so and runs COMMAND unconfined, unless the rules
ask for it to be required.
"""

from __future__ import annotations

import json
import mimetypes
import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import k2node
from k2node.node.nproc import join, limit_processes

# What a process needs from the system to start Python or Node.js and resolve names.
SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/proc",
    "/sys/devices/system/cpu",
    *mimetypes.knownfiles,  # aiohttp reads them at import
)
# Where SCHED_IDLE is missing (not Linux), how much less of the CPU than the node a busy
# task gets (nice 10: a tenth of its weight).
TASK_NICENESS = 10
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


@dataclass(frozen=True)
class Rules:
    read: list[str] = field(default_factory=list)  # files and folders, beneath included
    list_only: list[str] = field(default_factory=list)  # folders listed, their files not read
    write: list[str] = field(default_factory=list)  # everything beneath
    required: bool = False  # no Landlock: refuse to run rather than run unconfined
    landlock: bool = True  # False: the resource limits only (K2NODE_TASK_SANDBOX=off)
    memory_mb: int = 1024  # its data segment and anonymous memory (RLIMIT_DATA)
    open_files: int = 1024  # RLIMIT_NOFILE
    processes: int = 128  # processes and threads
    cgroup: str | None = None  # the pids cgroup to join, made by the node
    nproc_rlimit: bool = False  # no cgroup: RLIMIT_NPROC at the user's count plus `processes`

    def command(self, command: list[str]) -> list[str]:
        rules = json.dumps(asdict(self))
        return [sys.executable, "-m", "k2node.node.confine", rules, "--", *command]


def rules_for(
    entry: str,
    writable: list[Path],
    mode: str,
    memory_mb: int,
    open_files: int,
    processes: int = 128,
    cgroup: str | None = None,
    nproc_rlimit: bool = False,
) -> Rules:
    """Rules for a task whose code is `entry` (a file, or `module:Class` in the package)."""
    package = Path(k2node.__file__).resolve().parent
    runtime = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    runtime.add(str(Path(sys.executable).resolve().parent.parent))
    read = [*map(str, SYSTEM_READ), *sorted(runtime), str(package)]
    target = entry.rpartition(":")[0] if not Path(entry).exists() else entry
    code = Path(target)
    if code.suffix in (".py", ".js") and code.exists():
        read.append(str(code.resolve().parent))  # the author's project beside it
        modules = code.resolve().parent / "node_modules"
        if modules.exists():
            read.append(str(modules.resolve()))
    elif code.exists():  # a built artifact
        read.append(str(code.resolve()))
    # the package's parent is on the task's import path: listed, its files not readable
    # (an editable install's parent is the repository, whose data/ holds the wallets)
    written = [str(p) for p in writable]
    landlock, required = mode != "off", mode == "required"
    return Rules(
        read,
        [str(package.parent)],
        written,
        required,
        landlock,
        memory_mb,
        open_files,
        processes,
        cgroup,
        nproc_rlimit,
    )


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (or no module for it)."""
    try:
        import landlock

        return int(landlock.landlock_abi_version())
    except Exception:  # no module, no syscall, an old kernel
        return 0


def _confine(rules: Rules) -> str | None:
    """Confine this process; None when done, else why it could not be."""
    if landlock_abi() < 1:
        return "the kernel has no Landlock"
    import landlock
    from landlock import FSAccess

    ruleset = landlock.Ruleset()
    reading = FSAccess.READ_FILE | FSAccess.READ_DIR | FSAccess.EXECUTE
    for paths, rights in (
        (rules.read, reading),
        (rules.list_only, FSAccess.READ_DIR),
        (rules.write, FSAccess.all()),
        (list(DEVICES), FSAccess.READ_FILE | FSAccess.WRITE_FILE),
    ):
        for path in paths:
            if not os.path.exists(path):
                continue
            on_file = not os.path.isdir(path)
            allowed = rights & FSAccess.all_file() if on_file else rights
            if allowed:
                ruleset.allow(path, rules=allowed)
    ruleset.apply()
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m k2node.node.confine RULES_JSON -- COMMAND...", file=sys.stderr)
        return 1
    rules = Rules(**json.loads(argv[0]))
    memory = rules.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NOFILE, (rules.open_files, rules.open_files))
    try:  # before any of the task's code runs, and before Landlock (cgroupfs is a file system)
        if rules.cgroup is not None:
            join(rules.cgroup)
        elif rules.nproc_rlimit:
            limit_processes(rules.processes)
    except OSError as exc:
        print(f"k2node: task not started: no process limit: {exc}", file=sys.stderr, flush=True)
        return 3  # restarted with backoff
    why = _confine(rules) if rules.landlock else None
    if why is not None:
        print(f"k2node: task not confined: {why}", file=sys.stderr, flush=True)
        if rules.required:
            return 1
    # A task runs on what the node leaves of the CPU: SCHED_IDLE (no privilege asked,
    # inherited by its threads and children). A task woken by its phase message otherwise
    # took the node's CPU before the other messages due at that instant had left: as
    # SCHED_BATCH at nice 10, ten example tasks woken at once still held the node back up
    # to 15-20 ms (bench: dispatch beside real task processes); as SCHED_IDLE, the node
    # runs the moment it wakes. A task still has every CPU the node and the machine's
    # other programs are not using; on a machine busy with other work it waits for them.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # (not Linux)
        os.nice(TASK_NICENESS)
    command = argv[2:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
