"""The task proxy's tests (tests/test_task_proxy.py, a Python task's Unix socket) once more on
uvloop, the node's default loop: its transports are not asyncio's (their flow control and
write paths differ), and the proxy works at that level."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

import tests.test_task_proxy as proxy_tests
from k2node.node.http.proxy import ProxyLimits

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency on Linux and macOS only")

NAMES = [name for name in dir(proxy_tests) if name.startswith("test_")]


@pytest.mark.parametrize("name", NAMES)
def test_on_uvloop(name: str, tmp_path: Path) -> None:
    test = getattr(proxy_tests, name)
    marks = getattr(test, "pytestmark", [])
    params = [m.args for m in marks if m.name == "parametrize"]
    runs = [{params[0][0]: value} for value in params[0][1]] if params else [{}]

    async def scenario() -> None:
        limits = ProxyLimits(max_body=300 << 20, ws_connections=3, ws_message=1 << 20)
        for extra in runs:
            made = proxy_tests._env(tmp_path, True, limits)
            env = await anext(made)
            try:
                async with asyncio.timeout(60):
                    await test(env, **extra)
            finally:
                with contextlib.suppress(StopAsyncIteration):
                    await anext(made)

    uvloop.run(scenario())
