"""A task's server answering mangled HTTP: valid answers with bytes flipped, cut, doubled or
spliced in, each through the node's proxy. Whatever comes back is the task's answer or the
node's 502/504 (never a 500, never past the proxy's timeout), the node logs no error, and
it serves the next request. Seeded and bounded (1,000 answers)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.proxy import ProxyLimits

TASK = "Task1111111111111111111111111111111111111111"
VALID = [
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}',
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Thing: v\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nSet-Cookie: a=b\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil the end",
]


def _mangled(rng: random.Random) -> bytes:
    answer = bytearray(rng.choice(VALID))
    for _ in range(rng.randint(1, 2)):
        how = rng.randrange(5)
        at = rng.randrange(len(answer))
        if how == 0:  # a byte flipped
            answer[at] = rng.randrange(256)
        elif how == 1:  # cut short
            del answer[at:]
        elif how == 2:  # a stretch doubled
            answer[at:at] = answer[at : at + rng.randint(1, 40)]
        elif how == 3:  # bytes of no meaning spliced in
            answer[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        else:  # a piece of another answer
            answer[at:at] = rng.choice(VALID)[: rng.randint(1, 60)]
        if not answer:
            answer = bytearray(b"\r\n")
    return bytes(answer)


async def test_mangled_answers_are_passed_on_or_refused_never_a_500(tmp_path: Path) -> None:
    rng = random.Random(2024)
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(await asyncio.wait_for(answers.get(), 5))
                await writer.drain()
                writer.close()  # one answer per connection: the next starts clean
                return
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)

    @dataclass
    class Served:
        server_port: int
        server_socket: Path | None = None
        running: bool = True
        max_request_body: int | None = None
        context: Any = None

    limits = ProxyLimits(read_timeout_s=0.3, connect_timeout_s=1.0)
    api = NodeApi(
        {TASK: Served(server.sockets[0].getsockname()[1])}, "m", "", EventHub(), None, None, limits
    )
    node = TestServer(api.app())
    await node.start_server()
    seen: dict[int, int] = {}
    try:
        with capture_logs() as logs:
            url = f"http://127.0.0.1:{node.port}/task/{TASK}/x"
            async with aiohttp.ClientSession() as http:
                for _ in range(1000):
                    await answers.put(_mangled(rng))
                    try:
                        # (a redirect is the task's answer, passed on: not followed here)
                        async with (
                            asyncio.timeout(3),
                            http.get(url, allow_redirects=False) as resp,
                        ):
                            await resp.read()
                            seen[resp.status] = seen.get(resp.status, 0) + 1
                    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                        seen[0] = seen.get(0, 0) + 1  # an answer cut short, and so shown
                await answers.put(VALID[0])
                async with http.get(url) as resp:
                    assert resp.status == 200 and await resp.json() == {"a": True}
    finally:
        await node.close()
        server.close()
        await server.wait_closed()
    assert 500 not in seen, seen
    passed = sum(n for status, n in seen.items() if status not in (0, 502, 504))
    assert seen.get(502, 0) > 100 and passed > 100, seen  # both ways were taken often
    assert not [e for e in logs if e.get("log_level") == "error"], logs
