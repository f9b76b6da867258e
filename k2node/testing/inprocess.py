"""A task's code run inside the test's own process: its namespace calls go straight to the
node's method handlers (the very code `/namespace-wrapper` serves), and its phases run as
the task process runs them (`run_phase`), each one counted by the virtual clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from k2node.contract.methods import Method
from k2node.logs import get_logger
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http.namespace_rpc import MethodRefused, call_method
from k2node.node.process import OnReply
from k2node.store import Store
from k2node.task.core import CoreLogic
from k2node.task.namespace import NamespaceError, NamespaceWrapper
from k2node.task.peers import Peer
from k2node.task.runner import run_phase
from k2node.testing.clock import VirtualClock

log = get_logger("k2node.testing")


class LocalNamespace(NamespaceWrapper):
    """A NamespaceWrapper whose calls are handled in this process by the node's own methods,
    with the task's store in memory."""

    def __init__(
        self,
        context: TaskContext,
        events: EventHub,
        store: Store,
        session: aiohttp.ClientSession,
    ) -> None:
        super().__init__(context.task_id, context.secret, "http://in-process", session)
        self.context = context
        self._events = events
        self._task_store = store

    async def call(self, method: Method, *params: Any) -> Any:
        try:
            return await call_method(self.context, method, list(params), self._events)
        except MethodRefused as exc:
            raise NamespaceError(f"{exc} (HTTP {exc.status})") from None

    async def open_store(self) -> None:
        self._store = self._task_store

    async def peers(self) -> list[Peer]:
        """None: the nodes of a simulation have no HTTP servers to reach (a devnet has)."""
        return []


class InProcessTask:
    """The task channel of one node in a simulation: the task's CoreLogic, in-process."""

    def __init__(
        self, core: CoreLogic, namespace: LocalNamespace, on_reply: OnReply, clock: VirtualClock
    ) -> None:
        self.core = core
        self.namespace = namespace
        self._on_reply = on_reply
        self._clock = clock
        self._stop = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        self.started = asyncio.Event()
        self.restarts_requested: list[str] = []

    @property
    def running(self) -> bool:
        return self.started.is_set() and not self._stop.is_set()

    async def run(self) -> None:
        ns = self.namespace
        self.core.namespace = ns
        await ns.open_store()
        await ns.call(Method.DEFAULT_TASK_SETUP)
        await self.core.setup()
        self.started.set()
        try:
            await self._stop.wait()
        finally:
            for job in list(self._jobs):
                job.cancel()
            await asyncio.gather(*self._jobs, return_exceptions=True)

    async def send(self, message: dict[str, Any]) -> bool:
        if not self.running:
            return False
        self._clock.job_started()  # before this returns: time must not move past it
        job = asyncio.create_task(self._phase(message), name=f"phase-{message.get('functionCall')}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return True

    async def _phase(self, message: dict[str, Any]) -> None:
        try:
            structlog.contextvars.bind_contextvars(task_id=self.namespace.task_id)
            await asyncio.sleep(0)  # the node logs the phase as sent first, as with a process
            turn = await self._clock.take_turn()
            try:
                await self.run_now(message)
            finally:
                self._clock.end_turn(turn)
        finally:
            self._clock.job_ended()

    async def run_now(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one phase to its end and return the task's reply (timers off)."""
        reply = await run_phase(self.core, message, logged=False)
        self._on_reply(reply)
        return reply

    def request_restart(self, reason: str) -> None:
        # the code of an in-process task cannot be restarted; the request is recorded
        log.warning("task_restart_requested", task_id=self.namespace.task_id, reason=reason)
        self.restarts_requested.append(reason)

    async def restart(self, reason: str) -> bool:
        self.request_restart(reason)
        return self.running

    def stop(self) -> None:
        self._stop.set()


def task_folder(root: Path, index: int) -> Path:
    return root / f"node{index}"
