"""Honest example tasks whose feeds misbehave: one answers garbage, one never speaks.
Their submissions are good, so auditors must fall back to IPFS and vote them valid."""

from __future__ import annotations

import asyncio

from aiohttp import web

from k2node.examples.hello_task import HelloTask


class GarbageFeedTask(HelloTask):
    def routes(self) -> list[web.RouteDef]:
        async def feed(_: web.Request) -> web.Response:
            return web.Response(text="<html>not a feed</html>")

        return [web.get("/feed", feed)]


class SilentFeedTask(HelloTask):
    def routes(self) -> list[web.RouteDef]:
        async def feed(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await asyncio.sleep(3600)  # upgraded, then says nothing
            return ws

        return [web.get("/feed", feed)]
