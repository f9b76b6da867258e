"""The node's HTTP surface under load: requests proxied to a task's server against a bare
aiohttp handler, and the JavaScript node's proxy against a bare Express server, with wrk."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from common import free_port, load, load_tool, record, stop, wait_http  # bench/, beside this file
from js_proxy import bench_js_proxy
from nodes import REPO, spawn_node


async def _bare_aiohttp() -> dict[str, float]:
    port = free_port()
    bare = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "bare_server.py"), str(port)
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/")
        return await load(f"http://127.0.0.1:{port}/")
    finally:
        await stop(bare)


async def _proxied(tmp: Path) -> dict[str, float]:
    port = free_port()
    node = await spawn_node(tmp / "api", port, asyncio.subprocess.DEVNULL)
    try:
        await wait_http(f"http://127.0.0.1:{port}/")
        task_id = await _first_task(f"http://127.0.0.1:{port}/tasks")
        url = f"http://127.0.0.1:{port}/task/{task_id}/"
        await wait_http(url)
        return await load(url)
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
    baseline = await _bare_aiohttp()
    proxied = await _proxied(tmp)
    ratio = proxied["rps"] / baseline["rps"]
    print(f"node API: 32 connections, 5 s each, load from {load_tool()}")
    print(f"  bare aiohttp handler {baseline['rps']:,.0f} req/s p99 {baseline['p99_ms']:.1f} ms")
    print(
        f"  node -> task proxy   {proxied['rps']:,.0f} req/s p99 {proxied['p99_ms']:.1f} ms"
        f"  (ratio {ratio:.2f}; target >= 0.5, p99 <= 5 ms)"
    )
    record("api", bare_rps=baseline["rps"], proxy_rps=proxied["rps"], proxy_ratio=ratio)
    record("api", proxy_p99_ms=proxied["p99_ms"])
    js = await bench_js_proxy(tmp, load)
    if js is not None:
        record("api", **js)
