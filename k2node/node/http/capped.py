"""A TCP site with a cap on open connections: past it, a connection gets a 503 and is closed
at once, so idle or slow clients cannot take every file descriptor the node has."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

_BODY = json.dumps({"status": 503, "message": "too many connections: try again"}).encode()
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _Busy(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(BUSY)
        writer.close()


class _Counted(asyncio.Protocol):
    """aiohttp's own protocol for one connection, told apart when its connection ends.
    The transport calls the inner protocol's other methods itself (bound here, before the
    transport looks them up): no frame of ours on each read."""

    def __init__(self, inner: Any, ended: Callable[[], None]) -> None:
        self._inner = inner
        self._ended = ended
        self.data_received = inner.data_received  # type: ignore[method-assign]
        self.eof_received = inner.eof_received  # type: ignore[method-assign]
        self.pause_writing = inner.pause_writing  # type: ignore[method-assign]
        self.resume_writing = inner.resume_writing  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()
        self._inner.connection_lost(exc)


class CappedSite(web.BaseSite):
    def __init__(self, runner: web.AppRunner, host: str, port: int, max_connections: int) -> None:
        super().__init__(runner)
        self._where = (host, port)
        self._cap = max_connections
        self.open = 0  # connections being served now
        self.refused = 0  # turned away at the cap (metrics, tests)

    @property
    def name(self) -> str:
        return "http://{}:{}".format(*self._where)

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, *self._where, backlog=self._backlog
        )

    def _protocol(self) -> asyncio.Protocol:
        if self.open >= self._cap:
            self.refused += 1
            return _Busy()
        server = self._runner.server
        assert server is not None
        self.open += 1
        return _Counted(server(), self._ended)

    def _ended(self) -> None:
        self.open -= 1
