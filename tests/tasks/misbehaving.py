"""Tasks that fail in every way a task can: the node must stay up and say what happened."""

from __future__ import annotations

import os

from k2node.examples.hello_task import HelloTask
from k2node.task import CoreLogic


class RaisingTask(CoreLogic):
    async def task(self, round_: int) -> None:
        raise RuntimeError("task exploded")

    async def fetch_submission(self, round_: int) -> str | None:
        raise RuntimeError("fetch exploded")

    async def validate_node(self, submission_value: str, round_: int, submitter_key: str) -> bool:
        raise RuntimeError("validate exploded")

    async def submit_task(self, round_: int) -> None:
        raise RuntimeError("submit exploded")

    async def audit_task(self, round_: int) -> None:
        raise RuntimeError("audit exploded")

    async def submit_distribution_list(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> bool:
        raise RuntimeError("distribution exploded")

    async def audit_distribution(self, round_: int) -> None:
        raise RuntimeError("distribution audit exploded")


class ExitsWithOne(RaisingTask):
    async def setup(self) -> None:
        os._exit(1)  # "stop for good"


class ExitsWithZero(RaisingTask):
    async def setup(self) -> None:
        os._exit(0)  # "restart with backoff"


class DeafTask(CoreLogic):
    """Ignores SIGTERM: stopping it takes the node's whole grace period, then a kill."""

    async def setup(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def task(self, round_: int) -> None:
        return None


class FloodingTask(HelloTask):
    """Does its work, and writes half a million lines and a 5 MB line to its output."""

    async def setup(self) -> None:
        import sys

        sys.stdout.write("flood\n" * 500_000 + "y" * 5_000_000 + "\n")
        sys.stdout.flush()
