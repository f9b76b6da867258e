"""`/nodes/<taskId>` and `/register-node/<taskId>`: who serves a task, signed by themselves.

k2node model (the original is closed): a registration is
`{"signature": payloadSigning({"url": ..., "timestamp": ms}), "publicKey": base58}`. It is
refused with 409 when the signature is not the key's, when the key is not staked on the
task, when its timestamp is not newer than the key's last one (a duplicate or replay) or is
more than five minutes away from now (stale).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from k2node import codec
from k2node.contract.values import is_int
from k2node.crypto import decode_pubkey, verify_signature
from k2node.http_errors import HttpError, json_body, json_response

MAX_SKEW_MS = 5 * 60 * 1000
MAX_NODES_PER_TASK = 10_000

StakeList = Callable[[str], Awaitable[dict[str, int] | None]]


class NodeRegistry:
    def __init__(self, stake_list: StakeList) -> None:
        self._stake_list = stake_list
        self._nodes: dict[str, dict[str, dict[str, Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/nodes/{task_id}", self._list),
            web.post("/register-node/{task_id}", self._register),
        ]

    async def _stakes(self, task_id: str) -> dict[str, int]:
        stakes = await self._stake_list(task_id)
        if stakes is None:
            raise HttpError(404, f"unknown task {task_id[:64]}")
        return stakes

    async def _list(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        await self._stakes(task_id)
        return json_response(list(self._nodes.get(task_id, {}).values()))

    async def _register(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        stakes = await self._stakes(task_id)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("signature"), str):
            raise HttpError(422, "body must be {signature, publicKey}")
        try:
            pubkey = decode_pubkey(body.get("publicKey"))
        except ValueError as exc:
            raise HttpError(422, f"publicKey: {exc}") from None
        opened = verify_signature(body["signature"], pubkey)
        try:
            data = codec.loads(opened["data"])
            url, stamp = data["url"], data["timestamp"]
        except (KeyError, TypeError, ValueError):
            raise HttpError(409, "registration is not signed by its publicKey") from None
        if not (isinstance(url, str) and url.startswith(("http://", "https://")) and is_int(stamp)):
            raise HttpError(409, "registration data must be {url: http(s) URL, timestamp: ms}")
        if pubkey not in stakes:
            raise HttpError(409, f"{pubkey} is not staked on this task")
        if abs(stamp - time.time() * 1000) > MAX_SKEW_MS:
            raise HttpError(409, "registration is stale")
        nodes = self._nodes.setdefault(task_id, {})
        known = nodes.get(pubkey)
        if known is not None and stamp <= known["data"]["timestamp"]:
            raise HttpError(409, "registration is a duplicate or older than the one held")
        if known is None and len(nodes) >= MAX_NODES_PER_TASK:
            raise HttpError(409, "too many nodes registered for this task")
        nodes[pubkey] = {
            "data": {"url": url[:512], "timestamp": stamp},
            "signature": body["signature"],
            "submitterPubkey": pubkey,
        }
        return json_response({"registered": pubkey})
