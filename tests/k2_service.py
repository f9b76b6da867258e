"""A `k2node k2` service as a subprocess, for the fault tests: started on ports of its own
choosing (or given ones, to start it again where it was), its URL read from its start event."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path


async def spawn(
    *args: str, env: dict[str, str], output: Path | None = None
) -> asyncio.subprocess.Process:
    """`k2node ARGS...`, its output piped to the test or appended to `output`."""
    if output is None:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "k2node",
            *args,
            env=os.environ | env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    with output.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "k2node", *args, env=os.environ | env, stdout=out, stderr=out
        )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def k2_service(
    data_dir: Path, slot_ms: str, port: int = 0, ws_port: int = 0
) -> tuple[asyncio.subprocess.Process, str]:
    """A `k2node k2` on `port` (0: one of its choosing), and its URL once it serves."""
    k2 = await spawn(
        *("k2", "--port", str(port), "--ws-port", str(ws_port), "--data-dir", str(data_dir)),
        *("--slot-ms", slot_ms, "--log-format", "json"),
        env={},
    )
    assert k2.stdout is not None
    async with asyncio.timeout(60):
        while line := await k2.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "k2_service_started":
                # its later lines are not read: keep the pipe from filling
                asyncio.get_running_loop().create_task(drain(k2.stdout))
                return k2, str(event["url"])
    raise AssertionError(f"k2node k2 ended before serving (exit {await k2.wait()})")


async def drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def free_port_pair() -> int:
    """A free loopback port whose next is free too: a K2's RPC and PubSub, where a node
    looks for them (the PubSub on the RPC port + 1)."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
