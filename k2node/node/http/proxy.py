"""The node's proxy to a task's own HTTP server: `/task/<id>/<path>`, streamed both ways.

Requests reach the task's server as raw HTTP/1.1 on kept-alive connections (`upstream.py`;
the heads on each side in `heads.py`). Bodies pass through in chunks with backpressure both
ways (aiohttp's bounded read buffers on the client's side, paused reading on the task's), so
a download of any size costs the node a few buffers, and server-sent events arrive as they
are sent; an answer of known length up to 64 KiB goes back in one write. A WebSocket
upgrade is passed to the task and the connection then relayed as bytes (`wsrelay.py`).
Python tasks are reached on their Unix socket, JavaScript tasks on their loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from k2node.http_errors import HttpError
from k2node.logs import get_logger
from k2node.node.http.heads import (
    CONTROL,
    NOT_PASSED,
    NOT_PASSED_UP,
    UPGRADE,
    answer_headers,
    switched,
    task_target,
    text,
    upstream_head,
)
from k2node.node.http.upstream import Connection, UpstreamError, UpstreamPool
from k2node.node.http.wsrelay import CLOSE_WAIT_S, WebSocketRelay

log = get_logger("k2node.proxy")

_WHOLE = 64 * 1024  # an answer of known length up to this is passed on in one piece
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(frozen=True)
class ProxyLimits:
    max_body: int = 1 << 30  # request body bytes; a task may ask for less
    ws_connections: int = 256  # relayed WebSockets per task
    ws_message: int = 4 << 20  # bytes in one WebSocket message
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0  # for the task's answer head, then each silence in its body
    body_idle_s: float = 30.0  # silence from a client within its request body


class ProxiedTask(Protocol):
    @property
    def running(self) -> bool: ...

    @property
    def server_socket(self) -> Path | None: ...

    @property
    def server_port(self) -> int: ...

    @property
    def max_request_body(self) -> int | None: ...


class _BodyRefused(Exception):
    """The client's body broke a limit while it was being passed on: the answer to give."""

    def __init__(self, refusal: HttpError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class TaskProxy:
    def __init__(self, limits: ProxyLimits) -> None:
        self.limits = limits
        self._pools: dict[Path | int, UpstreamPool] = {}
        self._relays: defaultdict[str, set[WebSocketRelay]] = defaultdict(set)
        self._opening: Counter[str] = Counter()  # upgrades the task has not answered yet

    def relayed(self, task_id: str) -> int:
        """WebSockets relayed to `task_id` now."""
        return len(self._relays.get(task_id, ()))

    async def handle(
        self, request: web.Request, task_id: str, task: ProxiedTask | None
    ) -> web.StreamResponse:
        if task is None or not task.running:
            raise HttpError(422, f"Task {task_id[:64]} not running")
        target: Path | int = task.server_socket or task.server_port
        pool = self._pools.get(target)
        if pool is None:
            pool = self._pools[target] = UpstreamPool(target, self.limits.connect_timeout_s)
        path = task_target(request)
        if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._relay(request, task_id, pool, path)
        return await self._forward(request, task_id, task, pool, path)

    async def close(self) -> None:
        """Close every relayed WebSocket (the node is stopping), then the connections."""
        relays = [relay for found in self._relays.values() for relay in found]
        for relay in relays:
            relay.stop()
        if relays:
            await asyncio.wait([r.finished for r in relays], timeout=CLOSE_WAIT_S * 2)
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    # -- HTTP ----------------------------------------------------------------------------
    async def _forward(
        self, request: web.Request, task_id: str, task: ProxiedTask, pool: UpstreamPool, path: str
    ) -> web.StreamResponse:
        limits = self.limits
        limit = min(limits.max_body, task.max_request_body or limits.max_body)
        length = request.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        has_body = request.body_exists
        if length is not None:
            framing = b"Content-Length: %d\r\n" % length
        else:
            framing = b"Transfer-Encoding: chunked\r\n" if has_body else b""
        head = upstream_head(request, path, pool.host, NOT_PASSED, framing)
        sending: asyncio.Task[None] | None = None
        for attempt in range(2):
            try:
                conn = await (pool.new_connection() if attempt else pool.connection())
            except UpstreamError:
                raise HttpError(422, f"Task {task_id[:64]} not running") from None
            conn.begin(no_body=request.method == "HEAD")
            if has_body:
                body = _send_body(conn, request, limit, limits.body_idle_s, length)
                sending = asyncio.ensure_future(body)
            try:
                conn.write(head)
                if sending is None:
                    await conn.head(limits.read_timeout_s, _WHOLE)
                else:
                    await _answered(conn, sending, limits.read_timeout_s)
            except _BodyRefused as exc:
                conn.abort()
                raise exc.refusal from None
            except (UpstreamError, ConnectionError) as exc:
                conn.abort()
                await _stop(sending)
                # a write refused: the connection went before anything of the request did
                failure = (
                    exc if isinstance(exc, UpstreamError) else UpstreamError(502, str(exc), True)
                )
                retry = failure.retry and conn.used and not has_body and attempt == 0
                if retry and request.method in _IDEMPOTENT:
                    continue  # a kept-alive connection the task's server had just closed
                raise HttpError(failure.status, failure.message) from None
            except BaseException:
                conn.abort()
                await _stop(sending)
                raise
            break
        try:
            return await self._answer(request, task_id, pool, conn, sending)
        finally:
            await _stop(sending)

    async def _answer(
        self,
        request: web.Request,
        task_id: str,
        pool: UpstreamPool,
        conn: Connection,
        sending: asyncio.Task[None] | None,
    ) -> web.StreamResponse:
        if conn.upgraded:
            conn.abort()
            raise HttpError(502, "the task's server switched protocols unasked")
        status, headers = conn.status, answer_headers(conn.headers)
        reason = text(conn.reason) if CONTROL.search(conn.reason) is None else None
        if conn.complete and not conn.no_body and conn.buffered <= _WHOLE:
            # small and whole already: one write of head and body, as most answers are
            whole = b"".join(conn.body)
            _release(pool, conn, sending)  # which makes it ready for the next exchange
            return web.Response(status=status, reason=reason, body=whole, headers=headers)
        response = web.StreamResponse(status=status, reason=reason, headers=headers)
        if conn.length is not None:
            response.content_length = conn.length
        try:
            await response.prepare(request)
            while chunk := await conn.chunk(self.limits.read_timeout_s):
                await response.write(chunk)
            await response.write_eof()
        except (UpstreamError, ConnectionError) as exc:
            # Either side broke off mid-body: the client must see a cut, not a whole body.
            conn.abort()
            log.warning("proxy_response_cut", task_id=task_id, error=str(exc)[:200])
            if request.transport is not None:
                request.transport.close()
            return response
        _release(pool, conn, sending)
        return response

    # -- WebSockets ----------------------------------------------------------------------
    async def _relay(
        self, request: web.Request, task_id: str, pool: UpstreamPool, path: str
    ) -> web.StreamResponse:
        relays = self._relays[task_id]
        cap = self.limits.ws_connections
        if len(relays) + self._opening[task_id] >= cap:
            raise HttpError(
                503, f"task {task_id[:64]} already has {cap} WebSocket connections, the most"
            )
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        checker = web.WebSocketResponse(protocols=[p for p in offered if p])
        if not checker.can_prepare(request).ok:
            raise HttpError(400, "not a valid WebSocket upgrade request")
        head = upstream_head(request, path, pool.host, NOT_PASSED_UP, UPGRADE)
        self._opening[task_id] += 1  # a place under the cap while the task answers
        try:
            try:
                conn = await pool.new_connection()
            except UpstreamError:
                raise HttpError(422, f"Task {task_id[:64]} not running") from None
            try:
                conn.write(head)
                await conn.head(self.limits.read_timeout_s, 0)
                response = switched(request, conn)
            except (UpstreamError, ConnectionError) as exc:
                conn.abort()
                status = exc.status if isinstance(exc, UpstreamError) else 502
                raise HttpError(status, str(exc)) from None
            except BaseException:
                conn.abort()
                raise
        finally:
            self._opening[task_id] -= 1
            if not self._opening[task_id]:
                del self._opening[task_id]
        relay = WebSocketRelay(request, conn, self.limits.ws_message)
        relays.add(relay)
        try:
            writer = await response.prepare(request)
            assert writer is not None
            relay.start(writer)
            await relay.finished
        finally:
            relay.abort()
            relays.discard(relay)
            if not relays:
                self._relays.pop(task_id, None)
        return response


async def _answered(conn: Connection, sending: asyncio.Task[None], timeout_s: float) -> None:
    """Until the answer's head is in; a refusal of the client's body, while it is being
    sent, ends the wait."""
    head = asyncio.ensure_future(conn.head(timeout_s, _WHOLE))
    try:
        await asyncio.wait((head, sending), return_when=asyncio.FIRST_COMPLETED)
        if sending.done() and not sending.cancelled() and sending.exception() is not None:
            raise sending.exception()  # type: ignore[misc]
        await head
    finally:
        await _stop(head)


async def _stop(job: asyncio.Future[None] | None) -> None:
    if job is not None and not job.done():
        job.cancel()
    if job is not None:
        with contextlib.suppress(BaseException):
            await job


def _release(pool: UpstreamPool, conn: Connection, sending: asyncio.Task[None] | None) -> None:
    """A connection whose request went out whole goes back to the pool."""
    if sending is None or (sending.done() and not sending.cancelled() and not sending.exception()):
        pool.release(conn)
    else:
        conn.abort()


async def _send_body(
    conn: Connection,
    request: web.Request,
    limit: int,
    idle_s: float,
    length: int | None,
) -> None:
    """The client's body to the task as it comes, refused past its size limit or after
    `idle_s` of silence (a body announced and never sent must not hold a connection)."""
    seen = 0
    content = request.content
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await content.readany()
        except TimeoutError:
            raise _BodyRefused(
                HttpError(408, f"the request body stalled for {idle_s:g} s")
            ) from None
        except ConnectionError:
            raise _BodyRefused(HttpError(400, "the request body broke off")) from None
        if not chunk:
            break
        seen += len(chunk)
        if seen > limit:
            raise _BodyRefused(_too_large(limit))
        conn.write(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await conn.drain()
    if length is None:
        conn.write(b"0\r\n\r\n")


def _too_large(limit: int) -> HttpError:
    return HttpError(413, f"the request body is over {limit:,} bytes, this task's limit")
