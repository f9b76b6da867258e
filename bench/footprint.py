"""The node's footprint: `k2node run` from nothing to its first finished phase with node and
task RSS, and the node's RSS running 100 tasks (a `k2node k2` service, 100 copies of the
example deployed on it, one node running them all; each task is a process of its own, whose
memory is not the node's)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path

from common import record, stop  # bench/, beside this file
from nodes import rss_mb, spawn_node

from k2node.config import DEFAULT_TASK_CONFIG
from k2node.devnet import Devnet

IDLE_TASKS = 100
START_TIMEOUT_S = 300.0
SLOT_MS = 5000  # rounds of 100 s: once started, the tasks sit idle between phases


async def bench_footprint(tmp: Path) -> None:
    """`k2node run` from nothing: time to the first finished phase; node and task RSS."""
    started = time.perf_counter()
    proc = await spawn_node(tmp / "footprint", 0, asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    task_pid = first_phase = None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while first_phase is None:
                line = await proc.stdout.readline()
                if not line:
                    raise RuntimeError("the node stopped before its first phase")
                event = json.loads(line)
                if event["event"] == "task_process_started":
                    task_pid = event["pid"]
                if event["event"] == "phase_done":
                    first_phase = time.perf_counter() - started
        await asyncio.sleep(2)
        node_rss = await asyncio.to_thread(rss_mb, proc.pid)
        task_rss = await asyncio.to_thread(rss_mb, task_pid) if task_pid else float("nan")
    finally:
        await stop(proc)
    print("footprint: k2node run on an empty data directory")
    print(f"  start to first finished phase {first_phase:.2f} s (target < 2 s)")
    print(f"  node RSS {node_rss:.0f} MB (target <= 80)  task RSS {task_rss:.0f} MB (target <= 50)")
    record("footprint", first_phase_s=first_phase, node_rss_mb=node_rss, task_rss_mb=task_rss)


async def bench_many_tasks(tmp: Path, tasks: int = IDLE_TASKS) -> None:
    """One node running `tasks` tasks: its RSS once every task process has started."""
    folder = tmp / "many-tasks"
    folder.mkdir()
    net = Devnet(folder, io.StringIO())  # its lines are not figures
    try:
        k2_url = await net.start_k2(SLOT_MS)
        ids = [await net.deploy(k2_url, DEFAULT_TASK_CONFIG) for _ in range(tasks)]
        node_rss, took = await _node_with(folder, k2_url, ids)
    finally:
        await net.stop()
    print(f"footprint: one node running {tasks} tasks (their processes apart)")
    print(f"  all started in {took:.0f} s; node RSS {node_rss:.0f} MB (target <= 80)")
    record("footprint", **{f"node_rss_{tasks}_tasks_mb": node_rss})


async def _node_with(folder: Path, k2_url: str, ids: list[str]) -> tuple[float, float]:
    env = {"K2_NODE_URL": k2_url, "TASKS": ",".join(ids), "K2NODE_LOG_FORMAT": "json"}
    started = time.perf_counter()
    node = await spawn_node(folder / "node", 0, asyncio.subprocess.PIPE, env)
    assert node.stdout is not None
    seen: set[str] = set()
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while len(seen) < len(ids):
                line = await node.stdout.readline()
                if not line:
                    raise RuntimeError("the node stopped before all its tasks started")
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "task_process_started":
                        seen.add(event["task_id"])
        took = time.perf_counter() - started
        drain = asyncio.create_task(_drain(node.stdout))
        await asyncio.sleep(5)  # settled: the first phases sent, the tasks idle
        node_rss = await asyncio.to_thread(rss_mb, node.pid)
        drain.cancel()
    finally:
        await stop(node)
    return node_rss, took


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
