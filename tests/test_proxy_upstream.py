"""The proxy's own HTTP/1.1 client against a task server that misbehaves: garbage, early
closes, huge or trickled heads, silence, answers cut mid-body, kept-alive connections it
closes, forged WebSocket handshakes. The node answers 502 or 504 (or cuts an answer it had
begun), never a 500, never hangs, and serves the next request. Each scenario runs on the
standard asyncio loop and on uvloop (the node's default)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.proxy import ProxyLimits
from tests.conftest import wait_for

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency on Linux and macOS only")

TASK = "Task1111111111111111111111111111111111111111"
LIMITS = ProxyLimits(read_timeout_s=0.5, connect_timeout_s=1.0, body_idle_s=0.5, ws_message=1 << 20)
Writer = asyncio.StreamWriter
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _accept(key: bytes) -> bytes:
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1(key + guid).digest())


async def _switch(writer: Writer, head: bytes, accept: bytes | None = None) -> None:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + (accept or _accept(key)) + b"\r\n\r\n"
    )
    await writer.drain()


@dataclass
class Scripted:
    """A task's server answering by hand: each path is one way of misbehaving."""

    connections: int = 0
    bytes_sent: int = 0
    bytes_read: int = 0
    read_now: asyncio.Event = field(default_factory=asyncio.Event)
    blocked_since: float | None = None  # the flood's writer waiting on its drain()
    waiting: list[asyncio.Event] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self.connections += 1
        self.reader = reader
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                served += 1
                target = head.split(b" ", 2)[1].decode()
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                if not await self.answer(target, head, served, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, target: str, head: bytes, served: int, w: Writer) -> bool:
        """Answer one request; False to end the connection."""
        if target == "/ok":
            w.write(OK)
        elif target.startswith("/count"):
            body = f"{self.connections}:{served}".encode()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        elif target == "/flaky":  # a kept-alive connection closed as the next request comes
            if served > 1:
                return False
            w.write(OK)
        elif target == "/garbage":
            w.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif target == "/close":
            return False
        elif target == "/huge-head":
            w.write(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * (100 * 1024) + b"\r\n\r\n")
        elif target == "/switch":
            w.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            )
        elif target == "/odd-head":  # a reason with a control byte, a header not UTF-8
            w.write(b"HTTP/1.1 200 O\x01K\r\nX-Bin: \xff\xfe\r\nContent-Length: 2\r\n\r\nok")
        elif target == "/interim":
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        elif target == "/until-eof":
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"e" * 100_000)
            return False
        elif target == "/chunked":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            w.write(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        elif target == "/cut":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"c" * 70_000)
            await w.drain()
            return False
        elif target in ("/silent", "/stall-body", "/trickle"):
            if target == "/stall-body":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"s" * 70_000)
            elif target == "/trickle":  # a header that never ends, a byte at a time
                w.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(200):  # at most 10 s
                if target == "/trickle":
                    w.write(b"a")
                await w.drain()
                await asyncio.sleep(0.05)
            return False
        elif target.startswith("/ws-"):
            return await self.websocket(target, head, w)
        return True

    async def websocket(self, target: str, head: bytes, w: Writer) -> bool:
        if target == "/ws-refuse":
            w.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return True
        await _switch(w, head, b"forged" if target == "/ws-forged" else None)
        if target == "/ws-big":  # a frame over the node's 1 MiB message cap
            w.write(bytes((0x82, 127)) + (2 << 20).to_bytes(8, "big") + b"b" * 1000)
        elif target == "/ws-garbage":
            w.write(os.urandom(4096))
        elif target == "/ws-flood":  # as fast as the relay takes it: 64 frames of 1 MiB
            frame = bytes((0x82, 127)) + (1 << 20).to_bytes(8, "big") + b"f" * (1 << 20)
            for _ in range(64):
                w.write(frame)
                self.blocked_since = asyncio.get_running_loop().time()
                await w.drain()
                self.blocked_since = None
                self.bytes_sent += len(frame)
            w.write(bytes((0x88, 2)) + (1000).to_bytes(2, "big"))
            await w.drain()
            return False
        elif target == "/ws-sink":  # reads nothing until told, then 64 frames of 1 MiB
            await self.read_now.wait()
            frame = 14 + (1 << 20)  # a masked frame's header and payload
            while self.bytes_read < 64 * frame:
                self.bytes_read += len(await self.reader.read(1 << 20))
            w.write(bytes((0x88, 2)) + (1000).to_bytes(2, "big"))
            await w.drain()
            return False
        await w.drain()
        done = asyncio.Event()
        self.waiting.append(done)
        await done.wait()
        return False


@asynccontextmanager
async def _node(scripted: Scripted) -> Any:
    server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)

    @dataclass
    class Served:
        server_port: int
        server_socket: Path | None = None
        running: bool = True
        max_request_body: int | None = None
        context: Any = None

    task = Served(server.sockets[0].getsockname()[1])
    node = TestServer(NodeApi({TASK: task}, "main", "", EventHub(), proxy_limits=LIMITS).app())
    await node.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield f"http://127.0.0.1:{node.port}/task/{TASK}", http
    finally:
        for done in scripted.waiting:
            done.set()
        await node.close()
        server.close()
        await server.wait_closed()


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


def _on(
    loop: str, scenario: Callable[[Scripted, str, aiohttp.ClientSession], Awaitable[None]]
) -> None:
    async def run() -> None:
        scripted = Scripted()
        async with asyncio.timeout(30), _node(scripted) as (base, http):
            await scenario(scripted, base, http)

    LOOPS[loop](run())


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("loop", LOOPS)
def test_connections_to_the_task_are_kept_alive_and_reused(loop: str) -> None:
    async def scenario(scripted: Scripted, base: str, http: aiohttp.ClientSession) -> None:
        for i in range(1, 31):  # one connection, each answer its own
            assert await _status(http, f"{base}/count") == (200, f"1:{i}")
        answers = await asyncio.gather(*(_status(http, f"{base}/count?{i}") for i in range(8)))
        assert all(status == 200 for status, _ in answers)
        assert scripted.connections <= 9
        async with http.head(f"{base}/ok") as resp:  # a HEAD's answer has no body to wait for
            assert resp.status == 200 and resp.headers["Content-Length"] == "2"
        assert await _status(http, f"{base}/ok") == (200, "ok")
        # a kept-alive connection the task closes as a request comes: tried again, once
        assert await _status(http, f"{base}/flaky") == (200, "ok")
        assert await _status(http, f"{base}/flaky") == (200, "ok")
        async with http.post(f"{base}/flaky", data=b"body") as resp:
            assert resp.status in (200, 502)  # a body is never sent twice

    _on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_garbage_early_closes_and_huge_heads_are_502_and_odd_ones_pass(loop: str) -> None:
    async def scenario(scripted: Scripted, base: str, http: aiohttp.ClientSession) -> None:
        for path, said in (
            ("/garbage", "no valid HTTP"),
            ("/close", "without answering"),
            ("/huge-head", "over 65,536 bytes"),
            ("/switch", "switched protocols unasked"),
        ):
            async with http.get(base + path) as resp:
                assert resp.status == 502, path
                assert said in (await resp.json())["message"], path
            assert await _status(http, f"{base}/ok") == (200, "ok")  # and the node goes on
        async with http.get(f"{base}/odd-head") as resp:
            assert (resp.status, resp.reason, await resp.text()) == (200, "OK", "ok")
            assert resp.headers["X-Bin"] == "\xff\xfe"  # Latin-1, as it is no UTF-8
        assert await _status(http, f"{base}/interim") == (200, "ok")
        assert await _status(http, f"{base}/chunked") == (200, "abcdefg")
        assert await _status(http, f"{base}/until-eof") == (200, "e" * 100_000)

    _on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_silence_and_trickles_are_504_and_a_cut_answer_is_cut(loop: str) -> None:
    async def scenario(scripted: Scripted, base: str, http: aiohttp.ClientSession) -> None:
        started = asyncio.get_running_loop().time()
        for path in ("/silent", "/trickle"):  # a head never finished: bounded in total
            async with http.get(base + path) as resp:
                assert resp.status == 504, path
        assert asyncio.get_running_loop().time() - started < 3
        for path in ("/cut", "/stall-body"):  # the client must not take it for a whole body
            async with http.get(base + path) as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        assert await _status(http, f"{base}/ok") == (200, "ok")

    _on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_forged_refused_oversized_and_garbage_websockets_end_cleanly(loop: str) -> None:
    async def scenario(scripted: Scripted, base: str, http: aiohttp.ClientSession) -> None:
        for path, status in (("/ws-forged", 502), ("/ws-refuse", 403)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(base + path)
            assert refused.value.status == status, path
        async with http.ws_connect(f"{base}/ws-big") as ws:  # nothing of it reaches the client
            msg = await ws.receive()
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 1009
        async with http.ws_connect(f"{base}/ws-garbage") as ws:
            msg = await ws.receive()  # whatever the client makes of it, it ends
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
        assert await _status(http, f"{base}/ok") == (200, "ok")

    _on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_relayed_socket_holds_a_fast_task_back_for_a_slow_client(loop: str) -> None:
    async def scenario(scripted: Scripted, base: str, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(f"{base}/ws-flood", max_msg_size=2 << 20) as ws:
            loop = asyncio.get_running_loop()

            def held_back() -> bool:  # while the client reads nothing
                since = scripted.blocked_since
                return since is not None and loop.time() - since > 0.3

            await wait_for(held_back, within=10)
            held = scripted.bytes_sent
            # what the kernel buffers on two loopback hops, not the 64 MiB sent
            assert held < 24 << 20, held
            for _ in range(64):
                msg = await ws.receive()
                assert msg.type == WSMsgType.BINARY and len(msg.data) == 1 << 20
            assert scripted.bytes_sent > held
            msg = await ws.receive()
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1000)

    _on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_relayed_socket_holds_a_fast_client_back_for_a_slow_task(loop: str) -> None:
    async def scenario(scripted: Scripted, base: str, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(f"{base}/ws-sink") as ws:
            loop = asyncio.get_running_loop()
            sent = 0
            blocked_since: float | None = None

            async def flood() -> None:
                nonlocal sent, blocked_since
                for _ in range(64):
                    blocked_since = loop.time()
                    await ws.send_bytes(b"d" * (1 << 20))
                    blocked_since = None
                    sent += 1

            def held_back() -> bool:  # the task reads nothing meanwhile
                return blocked_since is not None and loop.time() - blocked_since > 0.3

            sending = asyncio.create_task(flood())
            await wait_for(held_back, within=10)
            assert sent < 24, sent  # MiB: what two loopback hops buffer, not all 64
            scripted.read_now.set()
            await sending
            msg = await ws.receive()
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1000)
            assert scripted.bytes_read == 64 * (14 + (1 << 20))

    _on(loop, scenario)
