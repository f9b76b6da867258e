"""The node's HTTP surface under load: requests proxied to a task's server against a bare
aiohttp handler, and the JavaScript node's proxy against a bare Express server, with wrk.

The bare handler and the node run side by side and are measured in turns, ROUNDS times, so
that a change in what else the machine runs falls on both; the figures are the medians."""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from common import (  # bench/, beside this file
    cpu_seconds,
    free_port,
    load,
    load_tool,
    record,
    stop,
    wait_http,
)
from js_proxy import bench_js_proxy
from nodes import REPO, spawn_node

ROUNDS = 3
SECONDS = 4.0


def _family(pid: int) -> list[int]:
    """A process and its children (the node and its task processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


async def _turn(url: str, pids: list[int]) -> dict[str, float]:
    """One load run, with the CPU each of `pids` spent per request (us) meanwhile."""
    before = [cpu_seconds(pid) for pid in pids]
    result = await load(url, seconds=SECONDS)
    requests = result["rps"] * SECONDS
    for i, pid in enumerate(pids):
        result[f"cpu_us_{i}"] = (cpu_seconds(pid) - before[i]) / requests * 1e6
    return result


@asynccontextmanager
async def _bare_aiohttp() -> AsyncIterator[tuple[str, list[int]]]:
    port = free_port()
    bare = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "bare_server.py"), str(port)
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/", bare)
        yield f"http://127.0.0.1:{port}/", [bare.pid]
    finally:
        await stop(bare)


@asynccontextmanager
async def _proxied(tmp: Path) -> AsyncIterator[tuple[str, list[int]]]:
    port = free_port()
    node = await spawn_node(tmp / "api", port, asyncio.subprocess.DEVNULL)
    try:
        await wait_http(f"http://127.0.0.1:{port}/", node)
        task_id = await _first_task(f"http://127.0.0.1:{port}/tasks")
        url = f"http://127.0.0.1:{port}/task/{task_id}/"
        await wait_http(url, node)
        yield url, _family(node.pid)
    finally:
        await stop(node)


async def _first_task(url: str) -> str:
    """The node's first task's id, once it lists one (it serves before its tasks start)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(url) as resp:
                tasks = await resp.json()
            if tasks:
                return str(tasks[0]["TaskID"])
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} listed no task")


async def bench_api(tmp: Path) -> None:
    """Requests proxied by the node to a task's server vs a bare aiohttp handler."""
    bare: list[dict[str, float]] = []
    proxied: list[dict[str, float]] = []
    async with _bare_aiohttp() as (bare_url, server), _proxied(tmp) as (proxied_url, node):
        for _ in range(ROUNDS):
            bare.append(await _turn(bare_url, server))
            proxied.append(await _turn(proxied_url, node))
    ratios = [p["rps"] / b["rps"] for b, p in zip(bare, proxied, strict=True)]
    ratio = statistics.median(ratios)
    bare_rps, proxy_rps = (statistics.median(r["rps"] for r in runs) for runs in (bare, proxied))
    bare_p99, proxy_p99 = (statistics.median(r["p99_ms"] for r in runs) for runs in (bare, proxied))
    print(
        f"node API: 32 connections, {ROUNDS} turns of {SECONDS:g} s each, load from {load_tool()}"
    )
    print(f"  bare aiohttp handler {bare_rps:,.0f} req/s p99 {bare_p99:.1f} ms (medians)")
    print(
        f"  node -> task proxy   {proxy_rps:,.0f} req/s p99 {proxy_p99:.1f} ms"
        f"  (ratio {ratio:.2f}, turns {', '.join(f'{r:.2f}' for r in ratios)};"
        " target >= 0.5, p99 <= 5 ms)"
    )
    record("api", bare_rps=bare_rps, proxy_rps=proxy_rps, proxy_ratio=ratio)
    cpu = {
        name: statistics.median(r[key] for r in runs)
        for name, key, runs in (
            ("bare", "cpu_us_0", bare),
            ("node", "cpu_us_0", proxied),
            ("task", "cpu_us_1", proxied),
        )
    }
    print(
        f"  CPU per request: bare handler {cpu['bare']:.0f} us;"
        f" node {cpu['node']:.0f} us + task {cpu['task']:.0f} us (medians)"
    )
    record("api", proxy_p99_ms=proxy_p99, proxy_ratios=ratios, cpu_us_per_request=cpu)
    js = await bench_js_proxy(tmp, load)
    if js is not None:
        record("api", **js)
