"""eager_gather: gather's results and failures, each coroutine started at once, no task for
one that never waits, and the waiting ones concurrent, cancellable, each in its own context."""

from __future__ import annotations

import asyncio
import contextvars
import gc
from typing import Any

import pytest

from k2node.task.eager import eager_gather

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="caller")


async def _now(value: int) -> int:
    return value


async def _after_a_turn(value: int) -> int:
    await asyncio.sleep(0)
    return value


def _counting_tasks(loop: asyncio.AbstractEventLoop) -> list[Any]:
    made: list[Any] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return made


async def test_results_in_order_and_no_task_for_a_coroutine_that_never_waits() -> None:
    loop = asyncio.get_running_loop()
    made = _counting_tasks(loop)
    try:
        assert await eager_gather(_now(1), _now(2), _now(3)) == [1, 2, 3]
        assert made == []
        assert await eager_gather(_now(1), _after_a_turn(2), _now(3)) == [1, 2, 3]
        assert len(made) == 1  # only the one that waited
        assert await eager_gather() == []
    finally:
        loop.set_task_factory(None)


async def test_waiting_coroutines_run_concurrently() -> None:
    started, answered = asyncio.Event(), asyncio.Event()

    async def waits_for_the_other() -> str:
        started.set()
        await answered.wait()  # set only by the one started after it
        return "first"

    async def answers() -> str:
        await started.wait()
        answered.set()
        return "second"

    got = await asyncio.wait_for(eager_gather(waits_for_the_other(), answers()), timeout=5)
    assert got == ["first", "second"]


async def test_each_runs_in_a_copy_of_the_callers_context() -> None:
    where.set("audit")

    async def sets_its_own(value: str, wait: bool) -> str:
        seen = where.get()
        where.set(value)
        if wait:
            await asyncio.sleep(0)
        assert where.get() == value  # kept across its own waits
        return seen

    assert await eager_gather(sets_its_own("a", False), sets_its_own("b", True)) == [
        "audit",
        "audit",
    ]
    assert where.get() == "audit"


async def test_the_first_failure_is_raised_and_the_others_run_on() -> None:
    finished: list[str] = []

    async def fails_at_once() -> str:
        raise ValueError("bad peer")

    async def fails_later() -> str:
        await asyncio.sleep(0)
        raise KeyError("later")

    async def slow() -> str:
        await asyncio.sleep(0.01)
        finished.append("slow")
        return "slow"

    with pytest.raises(ValueError, match="bad peer"):
        await eager_gather(fails_at_once(), slow())
    await asyncio.sleep(0.05)
    assert finished == ["slow"]
    with pytest.raises(KeyError):
        await eager_gather(_now(1), fails_later())
    with pytest.raises(ValueError):
        await eager_gather(fails_at_once(), fails_at_once())  # all done: the first in order


async def test_cancelling_reaches_a_waiting_coroutine_which_may_clean_up() -> None:
    cleaned: list[str] = []
    waiting = asyncio.Event()

    async def waits_forever() -> None:
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    outer = asyncio.create_task(eager_gather(waits_forever()))
    await waiting.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert cleaned == ["cancelled"]


async def test_a_coroutine_that_catches_a_cancellation_goes_on() -> None:
    waiting = asyncio.Event()

    async def shrugs() -> str:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # it waits again after the throw, and finishes
            return "went on"
        return "unreachable"

    inner = asyncio.ensure_future(eager_gather(shrugs()))
    await waiting.wait()
    (task,) = asyncio.all_tasks() - {inner, asyncio.current_task()}  # the one that waits
    task.cancel()
    assert await inner == ["went on"]


async def test_no_failure_is_left_unretrieved(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        await eager_gather(fails(), fails(), fails())
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
