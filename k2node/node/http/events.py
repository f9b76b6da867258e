"""`/events`: the node's events as JSON messages on a WebSocket, one subscription each."""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

from aiohttp import WSMsgType, web

from k2node.node.events import EventHub


class EventStream:
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(heartbeat=30)
        await socket.prepare(request)
        self._sockets.add(socket)
        queue = self._hub.subscribe()
        reader = asyncio.create_task(_drain(socket), name="events-reader")
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
            self._hub.unsubscribe(queue)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await socket.close()
        return socket

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close(code=1001, message=b"node stopping")


async def _drain(socket: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, to notice when it closes."""
    async for message in socket:
        if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))
