"""The tasks a node runs: each one's job started and owned here, stopped together; and the
tasks whose executable could not be had at start, tried again until they can run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from k2node.logs import get_logger
from k2node.node.executables import ExecutableError, TaskVariablesMissing
from k2node.node.running import RunningTask

log = get_logger("k2node.node")

# How often a task whose executable could not be fetched is tried again.
RETRY_UNAVAILABLE_S = 60.0

Start = Callable[[str, int], Awaitable[RunningTask]]


def report_failure(job: asyncio.Task[Any]) -> None:
    """A job that died on its own says so (cancellation at stop is expected)."""
    if not job.cancelled() and job.exception() is not None:
        log.error("background_job_failed", job=job.get_name(), error=repr(job.exception()))


class Fleet:
    def __init__(self, tasks: dict[str, RunningTask], timers: bool) -> None:
        self.tasks = tasks  # shared with the HTTP surface, which serves what runs
        self._timers = timers
        self._jobs: list[asyncio.Task[None]] = []

    def add(self, task: RunningTask) -> None:
        self.tasks[task.task_id] = task
        job = asyncio.create_task(task.run(self._timers), name=f"task-{task.task_id}")
        job.add_done_callback(report_failure)
        self._jobs.append(job)

    async def start_all(self, wanted: list[tuple[str, int]], start: Start) -> None:
        """Start every task that can be had now; keep trying the others in the background."""
        unavailable = []
        for task_id, stake in wanted:
            try:
                self.add(await start(task_id, stake))
            except TaskVariablesMissing as exc:  # the operator's to set: no point retrying
                log.error("task_not_started", task_id=task_id, error=str(exc))
            except ExecutableError as exc:  # the others run all the same
                log.error("task_unavailable", task_id=task_id, error=str(exc))
                unavailable.append((task_id, stake))
        if unavailable:
            retry = asyncio.create_task(self._retry(unavailable, start), name="task-retries")
            retry.add_done_callback(report_failure)
            self._jobs.append(retry)

    async def _retry(self, unavailable: list[tuple[str, int]], start: Start) -> None:
        while unavailable:
            await asyncio.sleep(RETRY_UNAVAILABLE_S)
            for task_id, stake in list(unavailable):
                try:
                    self.add(await start(task_id, stake))
                except ExecutableError as exc:
                    log.warning("task_still_unavailable", task_id=task_id, error=str(exc))
                    continue
                unavailable.remove((task_id, stake))
                log.info("task_available", task_id=task_id)

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.stop()
        for job in self._jobs:
            if job.get_name() == "task-retries":
                job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
