"""A task that shows the environment it was started with, at /env."""

from __future__ import annotations

import os

from aiohttp import web

from k2node.examples.hello_task import HelloTask


class EnvTask(HelloTask):
    def routes(self) -> list[web.RouteDef]:
        async def env(_: web.Request) -> web.Response:
            return web.json_response(dict(os.environ))

        return [*super().routes(), web.get("/env", env)]
