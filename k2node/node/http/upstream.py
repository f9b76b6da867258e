"""Raw HTTP/1.1 to a task's own server, for the node's proxy: connections kept alive in a
pool, each request's head written in one piece, the answer parsed by llhttp (httptools)
and its body handed on as it arrives, reading paused while too much of it waits.

The task's server is not trusted: its answer's head is bounded in size and time, garbage
or a connection closed early is an `UpstreamError` (a 502 for the client, or a cut when the
answer had begun), and a connection goes back to the pool only after a whole answer that
allows it. aiohttp's client did the same work in several times the Python per request.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import httptools

HEAD_LIMIT = 64 * 1024  # bytes of an answer's status line and headers
HIGH_WATER = 256 * 1024  # answer bytes waiting before reading from the task pauses
IDLE_KEPT = 64  # idle connections kept per task server
# An idle connection older than this is not used again: a task's server may be closing it
# (Node's closes them after 5 s), and a request sent on it then could be lost.
IDLE_REUSE_S = 2.0


class UpstreamError(Exception):
    """The task's server failed an exchange; `status` is what a client not yet answered
    gets, `retry` whether nothing reached the server (a kept-alive connection it had
    closed meanwhile)."""

    def __init__(self, status: int, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry = retry


class Connection(asyncio.Protocol):
    """One connection to a task's server, one exchange at a time, or bytes passed raw to
    `raw_sink` once upgraded."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._write_paused = self._read_paused = False
        self.lost = False
        self.used = 0  # exchanges finished on it
        self.raw_sink: Callable[[bytes], None] | None = None
        self.raw_lost: Callable[[], None] | None = None
        self.raw_resume: Callable[[], None] | None = None
        self.no_body = self.idle = False
        self.idle_since = 0.0
        self._reset()

    def begin(self, no_body: bool) -> None:
        """A new exchange: `no_body` for the answer to a HEAD."""
        self.no_body = no_body
        self.idle = False

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None
        self.head_done = self.complete = self.upgraded = self.interim = self.to_eof = False
        self.keep_alive = False
        self.body: deque[bytes] = deque()
        self.buffered = self.head_bytes = 0
        self.error: UpstreamError | None = None
        self.tail = b""  # bytes after a 101's head: the upgraded protocol's first

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.raw_sink is not None:
            self.raw_sink(data)
            return
        if self.upgraded:  # kept for the relay, which is being set up
            self.tail += data
            return
        if self.complete or self.idle or self.error is not None:
            # bytes nobody asked for (after a whole answer, or while idle in the pool)
            self._fail(UpstreamError(502, "the task's server sent bytes no request asked for"))
            return
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded = True
            self.tail = data[upgrade.args[0] :]
            self.pause_reading()  # what follows is the relay's, once it is set up
        except httptools.HttpParserError as exc:
            found = exc.__context__
            if not isinstance(found, UpstreamError):
                reason = str(found or exc)[:120]
                found = UpstreamError(502, f"the task's server answered no valid HTTP: {reason}")
            self._fail(found)
            return
        if not self.head_done and self.head_bytes > HEAD_LIMIT:  # and not over yet
            self._fail(_head_too_large())
            return
        if self.buffered > HIGH_WATER:
            self.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.raw_sink is not None:
            if self.raw_lost is not None:
                self.raw_lost()
        elif not self.complete and self.error is None:
            if self.to_eof and exc is None:  # a body that ends with the connection, cleanly
                self.complete = True
            else:
                nothing = not self.head_bytes
                where = "without answering" if nothing else "in the middle of its answer"
                self.error = UpstreamError(
                    502, f"the task's server closed the connection {where}", retry=nothing
                )
        self._wake()
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionResetError("the task's server is gone"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
        if self.raw_resume is not None:
            self.raw_resume()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            raise ValueError("a second answer to one request")

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # a 100 Continue or 103 Early Hints: not the answer yet
            return
        if self.head_bytes > HEAD_LIMIT and (  # what has come holds the head: count it
            len(self.reason) + sum(len(n) + len(v) for n, v in self.headers) > HEAD_LIMIT
        ):
            raise _head_too_large()
        self.status = status
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()  # llhttp forgets it at the end
        chunked = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self.length = int(value)  # llhttp has checked it is one number
            elif lowered == b"transfer-encoding":
                chunked = True
        if self.no_body:
            self.complete = True
        else:
            bodiless = status in (204, 304) or status == 101
            self.to_eof = not chunked and self.length is None and not bodiless

    def on_body(self, body: bytes) -> None:
        if not self.no_body:
            self.body.append(body)
            self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = []
            self.reason = b""
            return
        self.complete = True

    # -- the exchange ------------------------------------------------------------------------
    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the task's server is gone")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("the task's server is gone")
        if self._write_paused:
            self._drained = self._loop.create_future()
            await self._drained

    async def head(self, timeout_s: float, whole: int) -> None:
        """Until the answer's head is in, and its body too when it is known to be at most
        `whole` bytes (one write for the client, as most answers are)."""
        deadline = self._loop.time() + timeout_s
        while self.error is None and not (
            self.head_done
            and (self.complete or self.length is None or self.length > whole or self.upgraded)
        ):
            if not await self._wait(deadline):
                self._fail(UpstreamError(504, f"the task did not answer within {timeout_s:g} s"))
        if self.error is not None:
            raise self.error

    async def chunk(self, idle_s: float) -> bytes:
        """The answer's body bytes that have come, b"" at its end."""
        while not self.body:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            if not await self._wait(self._loop.time() + idle_s):
                self._fail(UpstreamError(504, f"the task went silent for {idle_s:g} s"))
        data = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        self.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.error is None
            and not self.lost
            and not self.no_body  # llhttp would take what follows a HEAD's answer as body
            and not self.upgraded
            and self.keep_alive
        )

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.lost:
            self._read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        self.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, deadline: float) -> bool:
        """Until the connection has news; False at `deadline`."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            return False
        finally:
            timer.cancel()
            self._waiter = None
        return True


def _head_too_large() -> UpstreamError:
    return UpstreamError(502, f"the task's answer head is over {HEAD_LIMIT:,} bytes")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamPool:
    """Connections to one task server: a Unix socket (Python tasks) or a loopback port."""

    def __init__(self, target: Path | int, connect_timeout_s: float) -> None:
        self.target = target
        self.host = "task" if isinstance(target, Path) else f"127.0.0.1:{target}"
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[Connection] = []

    async def connection(self) -> Connection:
        """An idle connection, else a new one; UpstreamError(422) if the server is not
        there."""
        fresh = time.monotonic() - IDLE_REUSE_S
        while self._idle:
            conn = self._idle.pop()
            if not conn.closing and conn.idle_since > fresh:
                return conn
            conn.close()
        return await self.new_connection()

    async def new_connection(self) -> Connection:
        loop = asyncio.get_running_loop()

        def made() -> Connection:
            return Connection(loop)

        opening: Awaitable[tuple[asyncio.BaseTransport, Connection]] = (
            loop.create_unix_connection(made, str(self.target))
            if isinstance(self.target, Path)
            else loop.create_connection(made, "127.0.0.1", self.target)
        )
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await opening
        except (OSError, TimeoutError):
            raise UpstreamError(422, "the task's server cannot be reached") from None
        return conn

    def release(self, conn: Connection) -> None:
        """Back to the pool after its exchange if it can take another, else closed."""
        now = time.monotonic()
        idle = self._idle
        while idle and idle[0].idle_since < now - IDLE_REUSE_S:  # the oldest first
            idle.pop(0).close()
        if conn.reusable and len(idle) < IDLE_KEPT:
            conn.used += 1
            conn._reset()
            conn.idle = True
            conn.idle_since = now
            idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
