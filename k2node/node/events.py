"""The node's event stream: each meaningful step is logged and published on `/events`.

Subscribers are WebSocket clients; each has a bounded queue, and a client too slow to keep
up loses its oldest events rather than slowing the node down.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from typing import Any

import structlog
from aiohttp import WSMsgType, web

log = structlog.get_logger("k2node.events")

QUEUE_SIZE = 1000


class EventHub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    def emit(self, event: str, **fields: Any) -> None:
        """Log `event` and publish it to every subscriber."""
        log.info(event, **fields)
        self.publish({"event": event, "time": time.time(), **fields})

    def warn(self, event: str, **fields: Any) -> None:
        log.warning(event, **fields)
        self.publish({"event": event, "time": time.time(), "level": "warning", **fields})

    def publish(self, message: dict[str, Any]) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()  # the slow client loses its oldest event
            queue.put_nowait(message)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=30)
        await socket.prepare(request)
        self._sockets.add(socket)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        reader = asyncio.create_task(self._drain(socket), name="events-reader")
        try:
            while not socket.closed:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await socket.send_json(getter.result(), dumps=_dumps)
        except (ConnectionError, RuntimeError):
            pass  # the client went away mid-send
        finally:
            self._queues.discard(queue)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await socket.close()
        return socket

    async def _drain(self, socket: web.WebSocketResponse) -> None:
        """Read (and ignore) what the client sends, to notice when it closes."""
        async for message in socket:
            if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close(code=1001, message=b"node stopping")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))
