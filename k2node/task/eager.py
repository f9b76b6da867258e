"""`eager_gather`: asyncio.gather with each coroutine started at once, as Python 3.12's
eager tasks start (this runs on 3.11).

A coroutine that finishes without waiting on anything (an audit's validation of a
submission already in memory, say) costs no task and no turn of the event loop; one that
waits goes on in a task of its own from where it stopped, concurrently with the others, as
under gather. Each runs in a copy of the caller's context, as a task does.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


async def eager_gather(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """The results of `coros`, in their order; the first failure is raised, as by gather
    (the others run on)."""
    loop = asyncio.get_running_loop()
    futures = [_started(loop, coro) for coro in coros]
    if not all(f.done() for f in futures):
        return list(await asyncio.gather(*futures))
    for f in futures:  # each failure seen, as gather sees them (none is "never retrieved")
        if not f.cancelled():
            f.exception()
    return [f.result() for f in futures]


def _started(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    context = contextvars.copy_context()
    ended: asyncio.Future[T] = loop.create_future()
    try:
        awaiting = context.run(coro.send, None)
    except StopIteration as stop:
        ended.set_result(stop.value)
    except asyncio.CancelledError:
        ended.cancel()
    except Exception as exc:
        ended.set_exception(exc)
    else:  # it waits: a task of its own drives it on (`ended` goes unused)
        return loop.create_task(_GoingOn(coro, awaiting), context=context)
    return ended


class _GoingOn(Coroutine[Any, Any, T]):
    """A started coroutine as a task drives it: the task's first step is handed what the
    coroutine waits on; then what the task sends or throws in (a cancellation, even one
    before that first step) goes to the coroutine."""

    def __init__(self, coro: Coroutine[Any, Any, T], awaiting: Any) -> None:
        self._coro = coro
        self._awaiting: Any = awaiting
        self._handed = False

    def send(self, value: Any) -> Any:
        if not self._handed:
            self._handed = True
            return self._awaiting
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._handed = True
        if val is None and tb is None:  # how a task throws: the exception alone
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("a started coroutine is driven by its task, not awaited")
