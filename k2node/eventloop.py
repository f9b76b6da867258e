"""The event loop every k2node process runs on.

uvloop where it is installed (it is a dependency on Linux and macOS): the node, the local K2
and task processes spend much of their time in the loop's own I/O paths, which uvloop runs
in C. `K2NODE_EVENT_LOOP=asyncio` picks the standard loop instead; `uvloop` insists on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

EVENT_LOOP_ENV = "K2NODE_EVENT_LOOP"
_KINDS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


class EventLoopError(ValueError):
    """The setting names no loop, or one that is not installed."""


def loop_kind() -> str:
    """The running loop's kind, as the setting names it (the node logs it at start)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def run_main(main: Coroutine[Any, Any, T], kind: str | None = None) -> T:
    """Run `main` to completion on the chosen loop, as `asyncio.run` does."""
    kind = kind if kind is not None else os.environ.get(EVENT_LOOP_ENV, "auto")
    if kind not in _KINDS:
        main.close()
        raise EventLoopError(f"{EVENT_LOOP_ENV} must be auto, uvloop or asyncio, got {kind!r}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                main.close()
                raise EventLoopError(
                    f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed"
                ) from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)
