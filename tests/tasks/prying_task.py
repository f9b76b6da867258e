"""The example task, plus an attempt at everything a confined task must not do; each
outcome is printed to its output (task.log) as `PRY <what> allowed|denied`."""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

from k2node.examples.hello_task import HelloTask


def _try(what: str, action: object) -> None:
    try:
        action()  # type: ignore[operator]
        print(f"PRY {what} allowed", flush=True)
    except (OSError, MemoryError) as exc:  # (which limit: the error says)
        print(f"PRY {what} denied {type(exc).__name__}", flush=True)
    sys.stdout.flush()


class PryingTask(HelloTask):
    async def setup(self) -> None:
        base = Path(await self.namespace.get_base_path())  # data/namespace/<task id>
        data = base.parent.parent
        _try("wallet", lambda: (data / "wallets" / "id.json").read_bytes())
        _try("other-task", lambda: list((base.parent).iterdir()))
        _try("shadow", lambda: Path("/etc/shadow").read_bytes())
        _try("write-outside", lambda: (data / "planted.txt").write_text("x"))
        _try("write-inside", lambda: (base / "mine.txt").write_text("x"))
        _try("allocate-2gb", lambda: bytearray(2 * 1024**3))


FORKS_AT_MOST = 300  # the bomb stops by itself, limit or not
SPIN_CPU_S = 15.0  # so does the spin


def _fork_bomb() -> str:
    """Fork until refused (at most FORKS_AT_MOST); every child waits for the word to go (the
    pipe closing, also when this process dies) and dies in 10 s regardless."""
    ready, release = os.pipe()
    children: list[int] = []
    outcome = f"allowed {FORKS_AT_MOST}"
    try:
        for _ in range(FORKS_AT_MOST):
            pid = os.fork()
            if pid == 0:
                os.close(release)
                signal.alarm(10)
                os.read(ready, 1)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        outcome = f"denied {len(children)} {errno.errorcode.get(exc.errno or 0, exc.errno)}"
    finally:
        os.close(release)
        os.close(ready)
        for pid in children:
            os.waitpid(pid, 0)
    return outcome


class OverreachingTask(PryingTask):
    """Pries, then forks without end, and spins one phase on the CPU past its limit."""

    async def setup(self) -> None:
        await super().setup()
        print(f"PRY fork-bomb {_fork_bomb()}", flush=True)

    async def task(self, round_: int) -> None:
        marker = Path(await self.namespace.get_base_path()) / "spun"
        if not marker.exists():  # once: the process restarted after it does its work
            marker.write_text(str(round_))
            print(f"PRY cpu-spin started {round_}", flush=True)
            started = time.process_time()
            while time.process_time() - started < SPIN_CPU_S:
                pass
            print("PRY cpu-spin allowed", flush=True)  # (the limit did not stop it)
        await super().task(round_)
