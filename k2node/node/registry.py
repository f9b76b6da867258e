"""`/nodes/<taskId>` and `/register-node/<taskId>`: who serves a task, signed by themselves.

k2node model (the original is closed): a registration is
`{"signature": payloadSigning({"url": ..., "timestamp": ms}), "publicKey": base58}`. It is
refused with 409 when the signature is not the key's, when the key is not staked on the
task, when its timestamp is not newer than the key's last one (a duplicate or replay) or is
more than five minutes away from now (stale).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from k2node.crypto import decode_pubkey, verify_signature

MAX_SKEW_MS = 5 * 60 * 1000
MAX_NODES_PER_TASK = 10_000

StakeList = Callable[[str], Awaitable[dict[str, int] | None]]


def _conflict(message: str) -> web.Response:
    return web.json_response({"message": message}, status=409)


class NodeRegistry:
    def __init__(self, stake_list: StakeList) -> None:
        self._stake_list = stake_list
        self._nodes: dict[str, dict[str, dict[str, Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/nodes/{task_id}", self._list),
            web.post("/register-node/{task_id}", self._register),
        ]

    async def _list(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        if await self._stake_list(task_id) is None:
            return web.json_response({"message": f"unknown task {task_id[:64]}"}, status=404)
        return web.json_response(list(self._nodes.get(task_id, {}).values()))

    async def _register(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        stakes = await self._stake_list(task_id)
        if stakes is None:
            return web.json_response({"message": f"unknown task {task_id[:64]}"}, status=404)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("signature"), str):
            return web.json_response({"message": "body must be {signature, publicKey}"}, status=422)
        try:
            pubkey = decode_pubkey(body.get("publicKey"))
        except ValueError as exc:
            return web.json_response({"message": f"publicKey: {exc}"}, status=422)
        opened = verify_signature(body["signature"], pubkey)
        try:
            data = json.loads(opened["data"])
            url, stamp = data["url"], data["timestamp"]
        except (KeyError, TypeError, ValueError):
            return _conflict("registration is not signed by its publicKey")
        if (
            not isinstance(url, str)
            or not url.startswith(("http://", "https://"))
            or (not isinstance(stamp, int) or isinstance(stamp, bool))
        ):
            return _conflict("registration data must be {url: http(s) URL, timestamp: ms}")
        if pubkey not in stakes:
            return _conflict(f"{pubkey} is not staked on this task")
        if abs(stamp - time.time() * 1000) > MAX_SKEW_MS:
            return _conflict("registration is stale")
        nodes = self._nodes.setdefault(task_id, {})
        known = nodes.get(pubkey)
        if known is not None and stamp <= known["data"]["timestamp"]:
            return _conflict("registration is a duplicate or older than the one held")
        if known is None and len(nodes) >= MAX_NODES_PER_TASK:
            return _conflict("too many nodes registered for this task")
        nodes[pubkey] = {
            "data": {"url": url[:512], "timestamp": stamp},
            "signature": body["signature"],
            "submitterPubkey": pubkey,
        }
        return web.json_response({"registered": pubkey})
