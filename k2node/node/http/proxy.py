"""The node's proxy to a task's own HTTP server: `/task/<id>/<path>`, streamed both ways.

Bodies pass through in chunks with backpressure (aiohttp's bounded read buffers on one side,
`drain` on the other), so a download of any size costs the node a few buffers, and
server-sent events arrive as they are sent. A WebSocket upgrade is made on both sides and
relayed message by message: text, binary, ping, pong and close with its code and reason.
Python tasks are reached on their Unix socket, JavaScript tasks on their loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from k2node.http_errors import HttpError

log = structlog.get_logger("k2node.proxy")

# Hop-by-hop headers are the proxy's own business, never forwarded (RFC 9110, 7.6.1).
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "host",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "trailer",
    }
)
# A WebSocket handshake's own headers: each side of the relay makes its own.
_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "content-length",
    }
)
_WHOLE = 64 * 1024  # a response of known length up to this is passed on in one piece
GOING_AWAY, INTERNAL_ERROR = 1001, 1011


@dataclass(frozen=True)
class ProxyLimits:
    max_body: int = 1 << 30  # request body bytes; a task may ask for less
    ws_connections: int = 256  # relayed WebSockets per task
    ws_message: int = 4 << 20  # bytes in one WebSocket message
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0  # silence from the task, within a response or a socket
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


def _refused(exc: BaseException) -> HttpError | None:
    for found in (exc, exc.__cause__, exc.__context__):
        if isinstance(found, _BodyRefused):
            return found.refusal
    return None


class TaskProxy:
    def __init__(self, limits: ProxyLimits) -> None:
        self.limits = limits
        self._sessions: dict[Path | None, aiohttp.ClientSession] = {}
        self._relays: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)

    def relayed(self, task_id: str) -> int:
        """WebSockets relayed to `task_id` now."""
        return len(self._relays.get(task_id, ()))

    async def handle(
        self, request: web.Request, task_id: str, task: ProxiedTask | None
    ) -> web.StreamResponse:
        if task is None or not task.running:
            raise HttpError(422, f"Task {task_id[:64]} not running")
        rel = request.rel_url
        path = rel.raw_path[len(f"/task/{task_id}") :] or "/"
        query = f"?{rel.raw_query_string}" if rel.raw_query_string else ""
        socket = task.server_socket
        base = "http://task" if socket is not None else f"http://127.0.0.1:{task.server_port}"
        url = URL(f"{base}{path}{query}", encoded=True)
        session = self._session(socket)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and request.method == "GET":
            return await self._relay(request, task_id, session, url)
        return await self._forward(request, task_id, task, session, url)

    async def close(self) -> None:
        """Close every relayed WebSocket (the node is stopping), then the connections."""
        sockets = [ws for relays in self._relays.values() for ws in relays]
        await asyncio.gather(
            *(ws.close(code=GOING_AWAY, message=b"the node is stopping") for ws in sockets),
            return_exceptions=True,
        )
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def _session(self, socket: Path | None) -> aiohttp.ClientSession:
        found = self._sessions.get(socket)
        if found is None or found.closed:
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(path=str(socket), limit=0)
                if socket is not None
                else aiohttp.TCPConnector(limit=0)
            )
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.limits.connect_timeout_s,
                sock_read=self.limits.read_timeout_s,
            )
            found = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,  # bytes pass as the task sent them
                cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies are not another's
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
            self._sessions[socket] = found
        return found

    # -- HTTP ----------------------------------------------------------------------------
    async def _forward(
        self,
        request: web.Request,
        task_id: str,
        task: ProxiedTask,
        session: aiohttp.ClientSession,
        url: URL,
    ) -> web.StreamResponse:
        limit = min(self.limits.max_body, task.max_request_body or self.limits.max_body)
        too_large = HttpError(413, f"the request body is over {limit:,} bytes, this task's limit")
        length = request.content_length
        if length is not None and length > limit:
            raise too_large
        headers = forwarded_headers(request)
        if length is not None:
            headers["Content-Length"] = str(length)
        body = (
            _limited(request.content, limit, too_large, self.limits.body_idle_s)
            if request.body_exists
            else None
        )
        try:
            upstream = await session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except (_BodyRefused, aiohttp.ClientError, TimeoutError, OSError) as exc:
            refusal = _refused(exc)
            if refusal is not None:
                raise refusal from None
            raise HttpError(422, f"Task {task_id[:64]} not running") from None
        async with upstream:
            headers = CIMultiDict(
                (name, value)
                for name, value in upstream.headers.items()
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length"
            )
            length = upstream.content_length
            if length is not None and length <= _WHOLE and request.method != "HEAD":
                # small and of known size: one write of headers and body, as most answers are
                whole = await upstream.read()
                return web.Response(
                    status=upstream.status, reason=upstream.reason, body=whole, headers=headers
                )
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=headers
            )
            if length is not None:
                response.content_length = length
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The task broke off mid-body: the client must see a cut, not a whole body.
                log.warning("proxy_response_cut", task_id=task_id, error=repr(exc))
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response

    # -- WebSockets ----------------------------------------------------------------------
    async def _relay(
        self, request: web.Request, task_id: str, session: aiohttp.ClientSession, url: URL
    ) -> web.StreamResponse:
        relays = self._relays[task_id]
        cap = self.limits.ws_connections
        if len(relays) >= cap:
            raise HttpError(
                503, f"task {task_id[:64]} already has {cap} WebSocket connections, the most"
            )
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        protocols = [p for p in offered if p]
        if not self._client_socket(protocols).can_prepare(request).ok:
            raise HttpError(400, "not a valid WebSocket upgrade request")
        headers = forwarded_headers(request)
        for name in _HANDSHAKE_HEADERS:
            headers.popall(name, None)
        try:
            upstream = await session.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoping=False,
                autoclose=False,
                max_msg_size=self.limits.ws_message,
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if 400 <= exc.status < 600 else 502
            raise HttpError(status, f"the task refused the WebSocket ({exc.status})") from None
        except (aiohttp.ClientError, TimeoutError, OSError):
            raise HttpError(422, f"Task {task_id[:64]} not running") from None
        # the subprotocol the task chose, and only that one
        ws = self._client_socket([upstream.protocol] if upstream.protocol else [])
        relays.add(ws)
        try:
            await ws.prepare(request)
            await _relay_both_ways(ws, upstream)
        finally:
            relays.discard(ws)
            if not relays:
                self._relays.pop(task_id, None)
            await upstream.close()
        return ws

    def _client_socket(self, protocols: list[str]) -> web.WebSocketResponse:
        """The client's side of a relay: pings, pongs and closes are relayed, not answered."""
        return web.WebSocketResponse(
            protocols=protocols,
            autoping=False,
            autoclose=False,
            max_msg_size=self.limits.ws_message,
            compress=False,
        )


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The request's end-to-end headers, with this hop added to X-Forwarded-For and
    Forwarded (RFC 7239)."""
    named = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
    dropped = _HOP_HEADERS | named | {"content-length"}
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in dropped)
    remote = request.remote or "unknown"
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
    headers["X-Forwarded-Proto"] = request.scheme
    node = f'"[{remote}]"' if ":" in remote else remote
    element = f"for={node};proto={request.scheme}"
    if request.host:
        headers["X-Forwarded-Host"] = request.host
        element += f';host="{request.host}"'
    prior = request.headers.get("Forwarded")
    headers["Forwarded"] = f"{prior}, {element}" if prior else element
    return headers


async def _limited(
    content: aiohttp.StreamReader, limit: int, too_large: HttpError, idle_s: float
) -> AsyncIterator[bytes]:
    """The client's body as it comes, refused past its size limit or after `idle_s` of
    silence (a body announced and never sent must not hold a connection to the task)."""
    seen = 0
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await content.readany()
        except TimeoutError:
            stalled = HttpError(408, f"the request body stalled for {idle_s:g} s")
            raise _BodyRefused(stalled) from None
        if not chunk:
            return
        seen += len(chunk)
        if seen > limit:
            raise _BodyRefused(too_large)
        yield chunk


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _close_code(code: object) -> int:
    """A code that may be sent in a close frame (RFC 6455, 7.4), else 1000."""
    if isinstance(code, int) and (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return 1000 if code in (1004, 1005, 1006) else code
    return 1000


async def _pump(source: Socket, target: Socket) -> tuple[int, str] | None:
    """Relay messages until a close frame (its code and reason) or the source is gone."""
    while True:
        msg = await source.receive()
        try:
            if msg.type == WSMsgType.TEXT:
                await target.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await target.send_bytes(msg.data)
            elif msg.type == WSMsgType.PING:
                await target.ping(msg.data)
            elif msg.type == WSMsgType.PONG:
                await target.pong(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                return _close_code(msg.data), str(msg.extra or "")
            else:  # CLOSING, CLOSED, ERROR: gone without a close frame of its own
                return None
        except (ConnectionError, RuntimeError):  # the other side is gone
            return None


async def _relay_both_ways(client: web.WebSocketResponse, task: Socket) -> None:
    down = asyncio.create_task(_pump(client, task))
    up = asyncio.create_task(_pump(task, client))
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for job in (down, up):
            job.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    client_first = down in done
    finished = down if client_first else up
    closed = None if finished.cancelled() or finished.exception() else finished.result()
    if closed is None:
        code, reason = (
            (GOING_AWAY, "the client went away")
            if client_first
            else (INTERNAL_ERROR, "the task went away")
        )
        if client.close_code is not None and client_first:  # the node closed it
            code = client.close_code
    else:
        code, reason = closed
    message = reason.encode()[:120]  # a close frame's reason fits in 123 bytes
    with contextlib.suppress(ConnectionError, RuntimeError):
        if client_first:
            await task.close(code=code, message=message)
            await client.close(code=code, message=message)
        else:
            await client.close(code=code, message=message)
            await task.close(code=code, message=message)
