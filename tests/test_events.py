from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k2node.node import events as events_module
from k2node.node.events import EventHub
from k2node.node.http.events import EventStream
from tests.conftest import wait_for


async def test_a_slow_subscriber_loses_its_oldest_events_not_the_node(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(events_module, "QUEUE_SIZE", 3)
    hub = EventHub()
    stream = EventStream(hub)
    app = web.Application()
    app.router.add_get("/events", stream.handle)
    client = TestClient(TestServer(app))
    await client.start_server()
    socket = await client.ws_connect("/events")
    await wait_for(lambda: hub.subscribers == 1)  # subscribed
    hub.publish({"event": "first"})
    assert (await socket.receive_json(timeout=5))["event"] == "first"
    for i in range(10):
        hub.publish({"event": f"e{i}"})  # never blocks, whatever the client does
    received = [(await socket.receive_json(timeout=5))["event"] for _ in range(3)]
    assert received == ["e7", "e8", "e9"]  # a queue of three keeps the newest
    await stream.close()  # node shutdown closes every subscriber
    closing = await socket.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await client.close()
