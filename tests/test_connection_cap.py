"""A cap on the node's open connections: past it a client gets a 503 at once and the node
goes on serving; once connections close, new ones are served again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import create_task, node_settings

CAP = 8


async def test_past_the_cap_a_connection_is_told_and_closed(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate())
    settings = node_settings(tmp_path / "n", task_id, http_max_connections=CAP)
    async with Node.manage(settings, fast_chain) as node:
        idle = [await asyncio.open_connection("127.0.0.1", node.port) for _ in range(CAP)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: it was closed
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
            assert b"too many connections" in answer
        finally:
            for _, held in idle:
                held.close()
                await held.wait_closed()
        async with aiohttp.ClientSession() as http:

            async def served() -> int:
                async with http.get(f"http://127.0.0.1:{node.port}/") as resp:
                    return resp.status

            for _ in range(50):  # the node notices the closed ones within a few ticks
                if await served() == 200:
                    break
                await asyncio.sleep(0.05)
            assert await served() == 200
            statuses = await asyncio.gather(*(served() for _ in range(CAP // 2)))
            assert statuses == [200] * (CAP // 2)
