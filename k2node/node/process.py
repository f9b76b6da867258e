"""A task's process: one OS process per task, driven over the Node.js fork channel.

Exit policy of the JavaScript node: exit code 1 stops the task for good; any other exit
restarts it after 2^(n+1) s (capped at 5 min, the count reset after 5 h of stable running).
A phase over its CPU time restarts it at once (limits.py); whatever the task leaves running
when its process ends (its group's processes, or its process group's) is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import k2node
from k2node.contract.ipc import TASK_SECRET, IpcChannel
from k2node.contract.launch import (
    CHANNEL_FD_ENV,
    CHANNEL_MODE_ENV,
    SECRET_ON_CHANNEL,
    TASK_ENTRY_ENV,
    TASK_SOCKET_ENV,
    TaskArgs,
)
from k2node.contract.values import is_round
from k2node.eventloop import EVENT_LOOP_ENV
from k2node.logs import get_logger
from k2node.node.confine import Rules
from k2node.node.limits import LimitWatch, Overrun
from k2node.node.processlimit import TaskGroup
from k2node.node.tasklog import TaskLog

log = get_logger("k2node.process")

STOP_TIMEOUT_S = 5.0
OVERRUN_GRACE_S = 1.0  # a task spinning past its CPU limit does not answer a SIGTERM anyway
OUTPUT_DRAIN_S = 1.0
BACKOFF_CAP_S = 300.0
STABLE_RESET_S = 5 * 3600.0
_PACKAGE_ROOT = str(Path(k2node.__file__).resolve().parent.parent)
# Starts a bundle as CommonJS wherever it lies (a template project's package.json says
# "type": "module"); the bundle sees the argv the contract gives it.
COMMONJS_LAUNCHER = Path(__file__).resolve().with_name("commonjs.cjs")

OnReply = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TaskSpec:
    args: TaskArgs
    entry: str  # module:Class, file.py:Class, or a webpacked JavaScript main.js
    log_path: Path
    task_vars: dict[str, str] = field(default_factory=dict)
    # where a Python task serves its routes; None: on its TCP port (JavaScript tasks)
    socket: Path | None = None
    confined: Rules | None = None  # what it may touch and use; None: started as is
    phase_cpu_s: float | None = None  # CPU seconds a phase may burn; None: no limit

    @property
    def task_id(self) -> str:
        return self.args.task_id

    @property
    def javascript(self) -> bool:
        return self.entry.endswith(".js")

    @property
    def server_socket(self) -> Path | None:
        """The Unix socket the task's HTTP server listens on, or None for its port."""
        return None if self.javascript else self.socket

    def command(self) -> list[str]:
        if self.javascript:  # a bundle reads its secret from argv, as the contract says
            command = ["node", str(COMMONJS_LAUNCHER), self.entry, *self.args.argv()]
        else:
            args = dataclasses.replace(self.args, secret=SECRET_ON_CHANNEL)  # on the channel
            command = [sys.executable, "-m", "k2node.task", *args.argv()]
        return command if self.confined is None else self.confined.command(command)

    def environment(self, channel_fd: int) -> dict[str, str]:
        # Only the task's own variables: never the node's secrets or settings.
        env = dict(self.task_vars)
        env.update(
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": _PACKAGE_ROOT,
                CHANNEL_FD_ENV: str(channel_fd),
                CHANNEL_MODE_ENV: "json",
                TASK_ENTRY_ENV: self.entry,
                "K2NODE_LOG_FORMAT": "json",
            }
        )
        if self.server_socket is not None:
            env[TASK_SOCKET_ENV] = str(self.server_socket)
        if EVENT_LOOP_ENV in os.environ:  # the node's choice of loop is its tasks' too
            env[EVENT_LOOP_ENV] = os.environ[EVENT_LOOP_ENV]
        return env


class TaskProcess:
    def __init__(self, spec: TaskSpec, on_reply: OnReply) -> None:
        self.spec = spec
        self._on_reply = on_reply
        self._proc: asyncio.subprocess.Process | None = None
        self._channel: IpcChannel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._output: asyncio.Task[None] | None = None
        rules = spec.confined
        self.group = (
            TaskGroup(Path(rules.cgroup), rules.processes)
            if rules is not None and rules.cgroup is not None
            else None
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.group is not None:  # the launcher joins it before it becomes the task
            await self.group.create()
        parent, child = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.spec.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,  # into task.log, bounded (tasklog.py)
                stderr=asyncio.subprocess.STDOUT,
                env=self.spec.environment(child.fileno()),
                pass_fds=(child.fileno(),),
                start_new_session=True,  # Ctrl-C on the node's terminal is the node's
            )
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        assert self._proc.stdout is not None
        self._output = asyncio.create_task(
            TaskLog(self.spec.log_path).pump(self._proc.stdout), name=f"log-{self.spec.task_id}"
        )
        self._channel = await IpcChannel.over(parent)
        if not self.spec.javascript:
            await self._channel.send({TASK_SECRET: self.spec.args.secret})
        self._reader = asyncio.create_task(self._read(), name=f"ipc-{self.spec.task_id}")
        log.info("task_process_started", task_id=self.spec.task_id, pid=self._proc.pid)

    async def _read(self) -> None:
        assert self._channel is not None
        while (message := await self._channel.receive()) is not None:
            self._on_reply(message)

    async def send(self, message: dict[str, Any]) -> bool:
        if not self.running or self._channel is None:
            return False
        try:
            await self._channel.send(message)
        except (ConnectionError, OSError):
            return False
        return True

    async def wait(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        await self._close_channel()
        return code

    async def _clear_leftovers(self) -> None:
        """Kill what the task left running: its group's processes, else its process group's
        (it leads one: started in a session of its own)."""
        assert self._proc is not None
        killed = 0
        if self.group is not None:
            self.group.report_refused(self.spec.task_id, last=True)
            killed = await self.group.remove()
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if killed:
            log.info("task_leftovers_killed", task_id=self.spec.task_id, processes=killed)

    async def _close_channel(self) -> None:
        await self._clear_leftovers()
        if self._output is not None:  # the rest of its output, unless a child holds the pipe
            done, _ = await asyncio.wait({self._output}, timeout=OUTPUT_DRAIN_S)
            if not done:
                self._output.cancel()
            await asyncio.gather(self._output, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    async def stop(self, grace_s: float = STOP_TIMEOUT_S) -> int | None:
        """Terminate, wait a bounded time, kill; return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                log.warning("task_process_killed", task_id=self.spec.task_id, pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await self._close_channel()
        log.info("task_process_stopped", task_id=self.spec.task_id, code=proc.returncode)
        return proc.returncode


class KeptProcess:
    """One task's process, kept alive by the exit policy until the node stops it."""

    def __init__(self, spec: TaskSpec, on_reply: OnReply, backoff_base_s: float = 1.0) -> None:
        self.spec = spec
        self._on_reply = on_reply
        self._backoff_base_s = backoff_base_s
        self._process: TaskProcess | None = None
        self._restart = asyncio.Event()
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()  # set once the first process is up
        self.starts = 0  # processes started so far
        self._started_another = asyncio.Event()
        self.stopped_for_good = False
        self._watch: LimitWatch | None = None  # the running process's
        self._grace_s = STOP_TIMEOUT_S  # of the next stop

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def send(self, message: dict[str, Any]) -> bool:
        if self._process is None or not await self._process.send(message):
            return False
        round_ = message.get("roundNumber")
        if self._watch is not None and "functionCall" in message and is_round(round_):
            self._watch.phase_sent(
                str(message.get("phaseLabel") or message["functionCall"]), round_
            )
        return True

    def _reply(self, message: dict[str, Any]) -> None:
        if self._watch is not None and "phaseDone" in message:
            label, round_ = (
                message.get("phaseLabel") or message["phaseDone"],
                message.get("roundNumber"),
            )
            if isinstance(label, str) and is_round(round_):
                self._watch.phase_done(label, round_)
        self._on_reply(message)

    def _overrun(self, over: Overrun) -> None:
        self._grace_s = OVERRUN_GRACE_S
        self.request_restart(f"{over.phase} of round {over.round_} over its CPU time")

    def request_restart(self, reason: str) -> None:
        log.warning("task_restart_requested", task_id=self.spec.task_id, reason=reason)
        self._restart.set()

    async def restart(self, reason: str, timeout_s: float = STOP_TIMEOUT_S + 30) -> bool:
        """Restart the process now; True once its successor is up."""
        before = self.starts
        self.request_restart(reason)
        return await self.started_after(before, timeout_s)

    async def started_after(self, before: int, timeout_s: float = STOP_TIMEOUT_S + 30) -> bool:
        """True once more than `before` processes have started; False if it stopped."""
        async with asyncio.timeout(timeout_s):
            while self.starts == before:
                if self.stopped_for_good or self._stopping.is_set():
                    return False
                self._started_another.clear()
                await self._started_another.wait()
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._started_another.set()

    async def run(self) -> None:
        """Run the task until `stop()` or until it exits with code 1."""
        spec = self.spec
        failures = 0
        while not self._stopping.is_set():
            proc = TaskProcess(spec, self._reply)
            self._process = proc
            self._restart.clear()  # a new process answers any restart asked for before it
            self._grace_s = STOP_TIMEOUT_S
            started = time.monotonic()
            try:
                await proc.start()
            except OSError as exc:  # e.g. `node` missing for a JavaScript task
                log.error("task_start_failed", task_id=spec.task_id, error=str(exc))
                self.stopped_for_good = True
                self._started_another.set()
                return
            self.started.set()
            self.starts += 1
            self._started_another.set()
            await self._until_exit_restart_or_stop(proc)
            if self._stopping.is_set():
                return
            if self._restart.is_set():
                self._restart.clear()
                continue
            code = proc.returncode
            if time.monotonic() - started > STABLE_RESET_S:
                failures = 0
            if code == 1:
                log.error(
                    "task_stopped_for_good",
                    task_id=spec.task_id,
                    code=code,
                    log_file=str(spec.log_path),
                )
                self.stopped_for_good = True
                self._started_another.set()
                return
            delay = min(self._backoff_base_s * 2 ** (failures + 1), BACKOFF_CAP_S)
            failures += 1
            log.warning("task_exited", task_id=spec.task_id, code=code, restart_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _watching(self, proc: TaskProcess) -> asyncio.Task[None] | None:
        """The watch of the process's limits; None if the process is gone already."""
        assert proc.pid is not None
        spec = self.spec
        try:
            self._watch = LimitWatch(
                spec.task_id, proc.pid, spec.phase_cpu_s, proc.group, spec.javascript
            )
        except OSError:
            self._watch = None
            return None
        return asyncio.create_task(self._watch.run(self._overrun), name=f"limits-{spec.task_id}")

    async def _until_exit_restart_or_stop(self, proc: TaskProcess) -> None:
        waiter = asyncio.ensure_future(proc.wait())
        restarter = asyncio.ensure_future(self._restart.wait())
        stopper = asyncio.ensure_future(self._stopping.wait())
        watcher = self._watching(proc)
        try:
            await asyncio.wait({waiter, restarter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (restarter, stopper):
                fut.cancel()
            if not waiter.done():
                await proc.stop(self._grace_s)
                waiter.cancel()
            await asyncio.gather(waiter, restarter, stopper, return_exceptions=True)
            await self._unwatch(watcher)

    async def _unwatch(self, watcher: asyncio.Task[None] | None) -> None:
        if watcher is not None:
            watcher.cancel()
            (watched,) = await asyncio.gather(watcher, return_exceptions=True)
            if isinstance(watched, Exception):  # a fault of the watch's, not the task's
                log.error("task_limits_unwatched", task_id=self.spec.task_id, error=repr(watched))
        if self._watch is not None:
            self._watch.close()
            self._watch = None
