"""The baseline for the node API benchmark: a bare aiohttp JSON handler on a given port."""

from __future__ import annotations

import sys

from aiohttp import web


async def handler(_: web.Request) -> web.Response:
    return web.json_response({"status": 200, "message": "Running"})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/", handler)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
