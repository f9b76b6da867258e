"""Task endpoints through a running node: WebSocket messages relayed by the node against the
same client talking to the task's server directly (in turns; the figures are medians), and
the node's memory during a 1 GB proxied download. Run by `bench/run.py`."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from common import record, stop  # bench/, beside this file
from nodes import REPO, rss_mb, spawn_node

ENTRY = str(REPO / "tests" / "tasks" / "socket_task.py") + ":SocketTask"
# a turn of a second or more: at 20,000 messages a direct turn took 0.09 s, so short that
# one hiccup of the machine's scheduler decided it (turns of one run ranged 0.41-0.69)
MESSAGES = 200_000
ROUNDS = 3  # relayed and direct measured in turns, so that the machine's load falls on both


async def _echo_rate(session: aiohttp.ClientSession, url: str) -> float:
    """Messages per second, each sent and echoed back, with up to 64 in flight."""
    async with session.ws_connect(url) as ws:
        window = asyncio.Semaphore(64)

        async def send() -> None:
            for i in range(MESSAGES):
                await window.acquire()
                await ws.send_str(f"message {i}")

        started = time.perf_counter()
        sender = asyncio.create_task(send())
        for i in range(MESSAGES):
            msg = await ws.receive()
            if msg.data != f"message {i}":
                raise RuntimeError(f"the echo broke off at message {i}: {msg}")
            window.release()
        await sender
        return MESSAGES / (time.perf_counter() - started)


async def _wait_task(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(200):
        try:
            async with session.get(f"{base}/") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{base}/ did not come up")


async def _echo_rates(base: str, socket: str) -> tuple[list[float], list[float]]:
    """Through the node and straight to the task's socket, in turns, ROUNDS times."""
    relayed, direct = [], []
    straight = aiohttp.UnixConnector(path=socket)
    async with aiohttp.ClientSession() as through, aiohttp.ClientSession(connector=straight) as to:
        for _ in range(ROUNDS):
            relayed.append(await _echo_rate(through, f"{base}/echo"))
            direct.append(await _echo_rate(to, "http://task/echo"))
    return relayed, direct


async def bench_endpoints(tmp: Path) -> None:
    node = await spawn_node(
        tmp / "endpoints", 0, asyncio.subprocess.PIPE, {"K2NODE_TASK_ENTRY": ENTRY}
    )
    assert node.stdout is not None
    port = task_id = None
    while task_id is None:
        event = json.loads(await node.stdout.readline())
        if event["event"] == "node_started":
            port, task_id = event["port"], event["tasks"][0]
    drain = asyncio.create_task(node.stdout.read())  # keep its log flowing
    base = f"http://127.0.0.1:{port}/task/{task_id}"
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_task(session, base)
        pattern = f"k2node-*/{task_id[:16]}/http.sock"  # the folder the node made for sockets
        (socket,) = glob.glob(os.path.join(tempfile.gettempdir(), pattern))
        relayed, direct = await _echo_rates(base, socket)
        idle = rss_mb(node.pid)
        peak, got = idle, 0
        download = f"{base}/big?size={1 << 30}"
        async with aiohttp.ClientSession() as session, session.get(download) as resp:
            async for chunk in resp.content.iter_chunked(1 << 16):
                got += len(chunk)
                if got % (64 << 20) < (1 << 16):
                    peak = max(peak, rss_mb(node.pid))
    finally:
        await stop(node)
        drain.cancel()
    ratios = [r / d for r, d in zip(relayed, direct, strict=True)]
    ratio = statistics.median(ratios)
    through, straight = statistics.median(relayed), statistics.median(direct)
    print(f"task endpoints: a Python task's WebSocket echo, 64 messages in flight, {ROUNDS} turns")
    print(
        f"  through the node {through:,.0f} msg/s, straight to the task's socket"
        f" {straight:,.0f} msg/s (medians; ratio {ratio:.2f},"
        f" turns {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.5)"
    )
    print(
        f"  1 GB proxied download: node RSS {idle:.0f} MB idle, {peak:.0f} MB at most"
        f" (+{peak - idle:.1f} MB; target within 20 MB)"
    )
    record("endpoints", ws_relayed=through, ws_direct=straight, ws_ratio=ratio, ws_ratios=ratios)
    record("endpoints", download_idle_mb=idle, download_peak_mb=peak)
