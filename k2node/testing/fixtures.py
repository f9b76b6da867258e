"""pytest fixtures for a task's own tests: `pytest_plugins = ["k2node.testing.fixtures"]`.

async def test_rounds(task_harness):
    h = await task_harness(MyTask, nodes=3)
    await h.run_rounds(4)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest_asyncio

from k2node.testing.harness import TaskHarness
from k2node.testing.tasks import TaskSource


class HarnessFactory(Protocol):
    async def __call__(self, task: TaskSource, nodes: int = 3, **options: Any) -> TaskHarness: ...


@pytest_asyncio.fixture
async def task_harness(tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    """Start a TaskHarness (TaskHarness.start's arguments); all stop when the test ends."""
    async with AsyncExitStack() as stack:
        count = 0

        async def start(task: TaskSource, nodes: int = 3, **options: Any) -> TaskHarness:
            nonlocal count
            count += 1
            folder = tmp_path / f"harness{count}"
            return await stack.enter_async_context(
                TaskHarness.start(task, folder, nodes, **options)
            )

        yield start
