"""The example task with a WebSocket echo, a streamed download and a small request-body
limit, for the tests and benchmarks of task endpoints through a running node."""

from __future__ import annotations

from aiohttp import WSMsgType, web

from k2node.examples.hello_task import HelloTask


class SocketTask(HelloTask):
    max_request_body = 1024

    def routes(self) -> list[web.RouteDef]:
        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            return ws

        async def big(request: web.Request) -> web.StreamResponse:
            size = int(request.query.get("size", "0"))
            response = web.StreamResponse()
            response.content_length = size
            await response.prepare(request)
            block = b"k" * 65536
            for start in range(0, size, len(block)):
                await response.write(block[: min(len(block), size - start)])
            return response

        async def upload(request: web.Request) -> web.Response:
            return web.json_response({"bytes": len(await request.read())})

        return [
            *super().routes(),
            web.get("/echo", echo),
            web.get("/big", big),
            web.post("/upload", upload),
        ]
