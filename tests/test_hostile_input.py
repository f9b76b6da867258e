"""Malformed bodies and asks on the node's own routes: a 4xx and a short message, never a
500 (deep nesting, unknown charsets, content encodings that lie, broken multipart,
directories and `..` where files are asked for, unknown content in a CAR)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from k2node.crypto import Keypair
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.proxy import ProxyLimits
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import create_task, node_settings

TASK = "Task1111111111111111111111111111111111111111"
UNKNOWN = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@dataclass
class _Served:
    context: Any = None
    running: bool = True
    server_socket: Path | None = None
    server_port: int = 9  # nothing listens: the proxy must not be reached in these tests
    max_request_body: int | None = None

    async def manual_phase(self, name: str, round_: int, retry: bool) -> dict[str, Any]:
        return {"delivered": False}


SERVED = _Served()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[str]:
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    api = NodeApi(
        {TASK: SERVED}, "main", "", EventHub(), ipfs, proxy_limits=ProxyLimits(body_idle_s=0.5)
    )
    server = TestServer(api.app())
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}"
    await server.close()
    ipfs.close()


async def test_malformed_bodies_are_4xx(node: str) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    json_type = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for path in ("/namespace-wrapper", f"/register-node/{TASK}", f"/admin/tasks/{TASK}/phase"):
            async with http.post(node + path, data=deep, headers=json_type) as resp:
                assert resp.status in (404, 422), path  # unknown to the registry, or not JSON
        charset = {"Content-Type": "application/json; charset=klingon"}
        async with http.post(f"{node}/namespace-wrapper", data=b"{}", headers=charset) as resp:
            assert resp.status == 422
        lying = {**json_type, "Content-Encoding": "gzip"}
        async with http.post(f"{node}/namespace-wrapper", data=b"{}", headers=lying) as resp:
            assert resp.status == 400 and "cannot be read" in (await resp.json())["message"]
        broken = {"Content-Type": "multipart/form-data; boundary=xyz"}
        async with http.post(f"{node}/api/v0/add", data=b"garbage", headers=broken) as resp:
            assert resp.status == 400 and "multipart" in (await resp.json())["Message"]


async def test_directories_dotdot_and_unknown_content_are_4xx(node: str) -> None:
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", b"a", filename="x")
        add = f"{node}/api/v0/add?wrap-with-directory=true"
        async with http.post(add, data=form) as resp:
            lines = (await resp.text()).splitlines()
        directory = json.loads(lines[-1])["Hash"]
        for verb, arg, status in (
            ("cat", directory, 400),
            ("cat", f"{directory}/../x", 404),
            ("pin/add", f"{directory}/../x", 404),
            ("cat", UNKNOWN, 404),
        ):
            async with http.post(f"{node}/api/v0/{verb}?arg={arg}") as resp:
                assert resp.status == status, (verb, arg, resp.status)
        async with http.get(f"{node}/ipfs/{directory}") as resp:
            assert resp.status == 400 and "directory" in (await resp.json())["message"]
        async with http.get(f"{node}/ipfs/{directory}/x") as resp:
            assert await resp.read() == b"a"
        async with http.get(f"{node}/ipfs/{UNKNOWN}?format=car") as resp:
            assert resp.status == 404  # before any byte of a CAR is sent


async def test_a_body_announced_and_never_sent_is_408_not_a_held_connection(node: str) -> None:
    done = asyncio.Event()

    async def task_waiting_for_the_body(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await done.wait()
        writer.close()

    task_server = await asyncio.start_server(task_waiting_for_the_body, "127.0.0.1", 0)
    SERVED.server_port = task_server.sockets[0].getsockname()[1]
    host, port = node.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET /task/{TASK}/x HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split()[1] == b"408", status
    finally:
        writer.close()
        await writer.wait_closed()
        done.set()
        task_server.close()
        await task_server.wait_closed()
        SERVED.server_port = 9


async def test_a_client_that_never_finishes_its_headers_is_let_go(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), round_time=200)
    settings = node_settings(tmp_path / "n", task_id, http_idle_s=1)
    async with Node.manage(settings, fast_chain) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        started = time.monotonic()
        header = b"GET / HTTP/1.1\r\nHost: n\r\nX-Slow: " + b"a" * 100
        closed = False
        for byte in header:  # a slowloris: one byte every 50 ms, never the end
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof():
                closed = True
                break
            await asyncio.sleep(0.05)
            if time.monotonic() - started > 5:
                break
        if not closed:
            closed = await asyncio.wait_for(reader.read(), 5) == b""
        assert closed and time.monotonic() - started < 4
        writer.close()
        async with (  # and the node serves the next client
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{node.port}/") as resp,
        ):
            assert resp.status == 200
