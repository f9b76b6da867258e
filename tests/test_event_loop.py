"""The node and its task on the standard asyncio loop (the fallback where uvloop is not
installed, or `K2NODE_EVENT_LOOP=asyncio`): rounds run and pay as they do on uvloop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k2node.node.provision import free_port
from tests.conftest import log_events


@pytest.mark.timeout(120)
def test_rounds_pay_on_the_standard_loop(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "node.log"
    env = os.environ | {
        "K2NODE_EVENT_LOOP": "asyncio",
        "K2NODE_SLOT_MS": "100",
        "K2NODE_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "k2node", "run", "--data-dir", str(data)]
    with log.open("ab") as out:
        node = subprocess.Popen(
            [*command, "--port", str(free_port())], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        paid: list[dict[str, object]] = []
        while not paid and time.monotonic() < deadline and node.poll() is None:
            time.sleep(0.5)
            events = log_events(log)
            paid = [e for e in events if e.get("event") == "payout_settled"]
    finally:
        node.terminate()
        assert node.wait(timeout=30) == 0
    events = log_events(log)
    started = [e for e in events if e.get("event") == "node_started"]
    assert started and started[0]["event_loop"] == "asyncio"
    assert paid and paid[0]["outcome"] == "PayoutSuccessful", paid
    task_logs = [e for p in data.rglob("task.log") for e in log_events(p)]
    task_started = [e for e in task_logs if e.get("event") == "task_started"]
    assert task_started and {e["event_loop"] for e in task_started} == {"asyncio"}
    assert not [e for e in events if e.get("level") in ("error", "critical")]
