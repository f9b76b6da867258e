"""The node's proxy to a task's server: streamed bodies, WebSockets relayed, limits, hostile
input. A real node HTTP surface in front of a real aiohttp task server, on loopback or on a
Unix socket."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.proxy import ProxyLimits
from tests.conftest import wait_for

CHUNK = 64 * 1024
TASK = "Task1111111111111111111111111111111111111111"


@dataclass
class FakeTask:
    """A running task as the node's HTTP surface sees it."""

    server_port: int = 0
    server_socket: Path | None = None
    running: bool = True
    max_request_body: int | None = None
    context: Any = None


@dataclass
class Upstream:
    """The task's own server: what it saw, and handles to steer it."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    headers: dict[str, str] = field(default_factory=dict)
    closed_with: list[tuple[int | None, str]] = field(default_factory=list)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


def task_app(seen: Upstream) -> web.Application:
    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        block = b"k" * CHUNK
        for start in range(0, size, CHUNK):
            await response.write(block[: min(CHUNK, size - start)])
        return response

    async def upload(request: web.Request) -> web.Response:
        digest, count = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(CHUNK):
            digest.update(chunk)
            count += len(chunk)
        return web.json_response({"bytes": count, "sha256": digest.hexdigest()})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await seen.go.wait()  # the second only once the client has read the first
        await response.write(b"data: second\n\n")
        return response

    async def echo(request: web.Request) -> web.Response:
        seen.headers = dict(request.headers)
        return web.json_response({"path": request.raw_path, "method": request.method})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",), max_msg_size=1 << 30)
        await ws.prepare(request)
        seen.sockets.add(ws)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "close-me":
                await ws.close(code=4001, message=b"asked to")
            elif msg.type == WSMsgType.TEXT and msg.data.startswith("burst "):
                for i in range(int(msg.data.split()[1])):
                    await ws.send_str(f"up {i}")
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        seen.closed_with.append((ws.close_code, ""))
        seen.sockets.discard(ws)
        return ws

    async def cookie(_: web.Request) -> web.Response:
        response = web.json_response({})
        response.set_cookie("session", "for-one-client-only")
        return response

    app = web.Application()
    app.router.add_get("/cookie", cookie)
    app.router.add_get("/big", big)
    app.router.add_post("/upload", upload)
    app.router.add_get("/events", events)
    app.router.add_get("/ws", socket)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    return app


@dataclass
class Env:
    base: str
    task: FakeTask
    seen: Upstream
    http: aiohttp.ClientSession
    task_runner: web.AppRunner
    node: TestServer


async def _env(tmp_path: Path, unix: bool, limits: ProxyLimits) -> AsyncIterator[Env]:
    seen = Upstream()
    runner = web.AppRunner(task_app(seen), access_log=None)
    await runner.setup()
    task = FakeTask()
    if unix:
        task.server_socket = tmp_path / "task.sock"
        await web.UnixSite(runner, str(task.server_socket)).start()
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        task.server_port = runner.addresses[0][1]
    api = NodeApi({TASK: task}, "main", "", EventHub(), proxy_limits=limits)
    node = TestServer(api.app())
    await node.start_server()
    async with aiohttp.ClientSession() as http:
        yield Env(f"http://127.0.0.1:{node.port}/task/{TASK}", task, seen, http, runner, node)
    await node.close()
    await runner.cleanup()


@pytest.fixture(params=["unix", "tcp"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    limits = ProxyLimits(max_body=300 << 20, ws_connections=3, ws_message=1 << 20)
    async for made in _env(tmp_path, request.param == "unix", limits):
        yield made


async def test_a_large_download_and_upload_stream_through_in_bounded_memory(env: Env) -> None:
    size = 200 * 1024 * 1024
    tracemalloc.start()
    try:
        got = 0
        async with env.http.get(f"{env.base}/big?size={size}") as resp:
            assert resp.status == 200 and resp.content_length == size
            async for chunk in resp.content.iter_chunked(CHUNK):
                got += len(chunk)
        _, download_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // CHUNK):
                yield b"u" * CHUNK

        async with env.http.post(f"{env.base}/upload", data=body()) as resp:
            answer = await resp.json()
        _, upload_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == size
    expected = hashlib.sha256()
    for _ in range(size // CHUNK):
        expected.update(b"u" * CHUNK)
    assert answer == {"bytes": size, "sha256": expected.hexdigest()}
    # node, task server and client together, all in this process: a few buffers each
    assert download_peak < 16 << 20, download_peak
    assert upload_peak < 16 << 20, upload_peak


async def test_server_sent_events_arrive_as_they_are_sent(env: Env) -> None:
    async with env.http.get(f"{env.base}/events") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        # a proxy that waited for the whole body would never show the first event
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b"data: first\n\n"
        env.seen.go.set()
        assert await asyncio.wait_for(resp.content.read(), 5) == b"data: second\n\n"


async def test_paths_queries_and_headers_pass_as_a_proxy_passes_them(env: Env) -> None:
    headers = {
        "X-Forwarded-For": "203.0.113.9",
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "hop only",
        "X-Task-Header": "kept",
    }
    url = f"{env.base}/echo/a%2Fb/%E2%9C%93?q=1&q=%20"
    async with env.http.patch(url, headers=headers) as resp:
        assert await resp.json() == {"path": "/echo/a%2Fb/%E2%9C%93?q=1&q=%20", "method": "PATCH"}
    seen = env.seen.headers
    assert seen["X-Task-Header"] == "kept" and "X-Secret-Hop" not in seen
    assert seen["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert seen["Forwarded"].startswith("for=127.0.0.1;proto=http;host=")


async def test_a_tasks_cookies_reach_its_client_and_no_other(env: Env) -> None:
    async with env.http.get(f"{env.base}/cookie") as resp:
        assert resp.cookies["session"].value == "for-one-client-only"
    async with aiohttp.ClientSession() as other, other.get(f"{env.base}/echo/x") as resp:
        assert resp.status == 200
    assert "Cookie" not in env.seen.headers  # the node keeps no cookie jar of its own


async def test_a_task_not_running_is_422_and_a_body_over_the_limit_is_413(env: Env) -> None:
    too_long = io.BytesIO(b"x" * (301 << 20))
    async with env.http.post(f"{env.base}/upload", data=too_long) as resp:
        assert resp.status == 413 and "limit" in (await resp.json())["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(20):
            yield b"y" * (1 << 20)

    env.task.max_request_body = 10 << 20  # the task asked for less
    async with env.http.post(f"{env.base}/upload", data=chunked()) as resp:
        assert resp.status == 413
    env.task.max_request_body = None
    env.task.running = False
    async with env.http.get(f"{env.base}/big?size=1") as resp:
        assert resp.status == 422 and "not running" in (await resp.json())["message"]


async def test_websocket_messages_are_relayed_in_order_both_ways(env: Env) -> None:
    async with env.http.ws_connect(f"{env.base}/ws", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        count = 10_000

        async def send() -> None:
            for i in range(count):
                if i % 2:
                    await ws.send_bytes(i.to_bytes(4, "big"))
                else:
                    await ws.send_str(f"down {i}")

        sender = asyncio.create_task(send())
        for i in range(count):  # the task echoes: each comes back, in order, of its kind
            msg = await asyncio.wait_for(ws.receive(), 10)
            expected = i.to_bytes(4, "big") if i % 2 else f"down {i}"
            assert msg.data == expected
        await sender
        await ws.send_str(f"burst {count}")
        for i in range(count):
            assert (await asyncio.wait_for(ws.receive(), 10)).data == f"up {i}"
        await ws.ping(b"are you there")  # the task's pong comes back through the relay
        await ws.send_str("close-me")
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == WSMsgType.CLOSE and (msg.data, msg.extra) == (4001, "asked to")


async def test_a_client_that_vanishes_closes_the_tasks_socket(env: Env) -> None:
    ws = await env.http.ws_connect(f"{env.base}/ws")
    await ws.send_str("hello")
    assert (await ws.receive()).data == "hello"
    await ws.close(code=4002, message=b"leaving")
    await wait_for(lambda: bool(env.seen.closed_with), within=5)
    assert env.seen.closed_with == [(4002, "")]


@pytest.mark.parametrize("how", ["stops", "is killed"])
async def test_a_task_that_goes_away_closes_the_clients_socket(env: Env, how: str) -> None:
    ws = await env.http.ws_connect(f"{env.base}/ws")
    await ws.send_str("hello")
    assert (await ws.receive()).data == "hello"
    (task_side,) = env.seen.sockets
    if how == "stops":  # a task closing its sockets as it shuts down
        await task_side.close(code=1001, message=b"task stopping")
    else:  # its process gone: the connection drops with no close frame
        transport = task_side._req.transport if task_side._req else None
        assert transport is not None
        transport.abort()
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (
        (1001, "task stopping") if how == "stops" else (1011, "the task went away")
    )
    env.task.running = False
    async with env.http.get(f"{env.base}/big?size=1") as resp:  # and the node still answers
        assert resp.status == 422
    await ws.close()


async def test_websockets_over_the_cap_are_refused_and_oversized_messages_closed(
    env: Env,
) -> None:
    sockets = [await env.http.ws_connect(f"{env.base}/ws") for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await env.http.ws_connect(f"{env.base}/ws")
    assert refused.value.status == 503
    await sockets[0].send_bytes(b"z" * (2 << 20))  # over the 1 MiB message limit
    msg = await asyncio.wait_for(sockets[0].receive(), 10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and sockets[0].close_code == 1009
    for ws in sockets:
        await ws.close()


async def test_bad_upgrades_are_4xx_and_the_node_closes_relays_when_it_stops(env: Env) -> None:
    bad = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    async with env.http.get(f"{env.base}/ws", headers=bad) as resp:  # no key
        assert resp.status == 400
    async with env.http.get(
        f"{env.base}/big?size=1", headers={**bad, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    ) as resp:  # a route that is no WebSocket: the task answered without upgrading
        assert resp.status == 502 and "refused the WebSocket" in (await resp.json())["message"]
    ws = await env.http.ws_connect(f"{env.base}/ws")
    await env.node.close()  # the node shuts down
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001, "the node is stopping")
    await ws.close()


async def test_hostile_requests_get_4xx_or_a_clean_close_and_stall_nothing(env: Env) -> None:
    key = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    for headers in (
        {**upgrade, "Sec-WebSocket-Version": "99", **key},
        {**upgrade, "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"},
        {**upgrade, "Sec-WebSocket-Version": "13", **key, "Sec-WebSocket-Protocol": ",,,"},
        {"Upgrade": "h2c", "Connection": "Upgrade"},  # not ours to honour: a plain request
    ):
        async with env.http.get(f"{env.base}/ws", headers=headers) as resp:
            assert resp.status < 500, (headers, resp.status)
    for path in ("/%zz", "/../../admin", "/echo/%00", "/" + "a" * 4000):
        async with env.http.get(env.base + path) as resp:
            assert resp.status < 500, (path, resp.status)

    # a body trickled in slowly holds its own request only
    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(20):
            await asyncio.sleep(0.05)
            yield b"t" * 10

    slow = asyncio.create_task(env.http.post(f"{env.base}/upload", data=trickle()))
    started = asyncio.get_running_loop().time()
    for _ in range(50):
        async with env.http.get(f"{env.base}/echo/x") as resp:
            assert resp.status == 200
    assert asyncio.get_running_loop().time() - started < 0.9  # before the trickle ended
    async with await slow as resp:
        assert (await resp.json())["bytes"] == 200
