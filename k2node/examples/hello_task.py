"""The bundled example task: a small proof of work per round, published on IPFS and on a
WebSocket feed.

Copy this file to start a task. Each round the node finds a nonce such that
sha256("<task id>:<round>:<nonce>") starts with DIFFICULTY and keeps it in the task's
LevelDB. It submits the CID of `submissionValues<round>.json` (the template's IPFS mode:
the result with its signed digest), and publishes the same signed submission to whoever
listens on its `/feed` WebSocket; `/proof/<round>` serves the result over REST. An auditor
asks the submitter's feed first and falls back to IPFS by the CID when the feed is not
there or says nothing useful; either way it checks the signer and the digest, and
recomputes the hash.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from k2node.task import CoreLogic
from k2node.task.namespace import open_signed_submission
from k2node.task.peers import PeerError

DIFFICULTY = "000"  # hex prefix: about 4,096 hashes per round on average
FEED_WAIT_S = 1.0  # how long an auditor waits on a submitter's feed before using IPFS
FEED_ROUNDS = 3  # a new listener first hears the signed submissions of this many rounds
KEEP_ROUNDS = 10  # results older than this many rounds are deleted from the task's store


def proof_digest(seed: str, nonce: int) -> str:
    return hashlib.sha256(f"{seed}:{nonce}".encode()).hexdigest()


@functools.lru_cache(maxsize=16)
def find_proof(seed: str) -> tuple[int, str]:
    """The first nonce that works: every node finds the same one, so a process running
    many nodes (a simulation) finds it once."""
    nonce = 0
    while not (digest := proof_digest(seed, nonce)).startswith(DIFFICULTY):
        nonce += 1
    return nonce, digest


class HelloTask(CoreLogic):
    def __init__(self) -> None:
        self._listeners: set[web.WebSocketResponse] = set()
        self.audits_from_feed = 0  # audits that did not need IPFS

    def seed(self, round_: int) -> str:
        return f"{self.namespace.task_id}:{round_}"

    async def task(self, round_: int) -> None:
        nonce, digest = await asyncio.to_thread(find_proof, self.seed(round_))
        await self.namespace.store_set(f"result:{round_}", {"nonce": nonce, "digest": digest})
        await self.namespace.store_set("value", digest)
        if round_ >= KEEP_ROUNDS:  # what audits and the feed may still ask for stays
            old = round_ - KEEP_ROUNDS
            await self.namespace.store_delete(f"result:{old}")
            await self.namespace.store_delete(f"signed:{old}")

    async def result(self, round_: int) -> dict[str, Any]:
        found = await self.namespace.store_get(f"result:{round_}")
        if found is None:  # the work phase was missed (e.g. a restart): do it now
            await self.task(round_)
            found = await self.namespace.store_get(f"result:{round_}")
        assert isinstance(found, dict)
        return found

    async def fetch_submission(self, round_: int) -> str | None:
        result = await self.result(round_)
        body = {"round": round_, "nonce": result["nonce"], "digest": result["digest"]}
        signed = await self.namespace.sign_submission(body)
        await self.namespace.store_set(f"signed:{round_}", signed)
        await self.publish({"round": round_, **signed})
        return await self.namespace.upload_signed(round_, signed)

    async def validate_node(self, submission_value: str, round_: int, submitter_key: str) -> bool:
        body = await self.from_feed(submitter_key, round_)
        if body is None:
            body = await self.namespace.fetch_signed_submission(
                submission_value, round_, submitter_key
            )
        else:
            self.audits_from_feed += 1
        if not isinstance(body, dict):
            return False  # unreachable, unsigned, or signed by someone else
        try:
            nonce, digest = int(body["nonce"]), str(body["digest"])
        except (ValueError, KeyError, TypeError):
            return False
        return (
            body.get("round") == round_
            and digest.startswith(DIFFICULTY)
            and proof_digest(self.seed(round_), nonce) == digest
        )

    # -- the feed: signed submissions over WebSockets --------------------------------------
    async def publish(self, item: dict[str, Any]) -> None:
        for ws in list(self._listeners):
            try:
                await ws.send_json(item)
            except (ConnectionError, RuntimeError):
                self._listeners.discard(ws)

    async def from_feed(self, submitter_key: str, round_: int) -> Any:
        """The submitter's signed submission of `round_` from its feed, checked; None when
        the feed cannot be reached or does not give it within FEED_WAIT_S."""
        try:
            peers = await self.namespace.peers()
            peer = next((p for p in peers if p.staking_key == submitter_key), None)
            if peer is None:
                return None
            ws = await self.namespace.peer_websocket(peer, "feed", timeout_s=FEED_WAIT_S)
        except PeerError:
            return None
        try:
            async with asyncio.timeout(FEED_WAIT_S):
                async for msg in ws:
                    if msg.type != WSMsgType.TEXT:
                        return None
                    item = json.loads(msg.data)
                    if not isinstance(item, dict) or "caughtUp" in item:
                        return None  # the feed has told all it has, and not this round
                    if item.get("round") == round_:
                        return open_signed_submission(item, submitter_key)
        except (TimeoutError, ValueError):
            return None
        finally:
            await ws.close()
        return None

    def routes(self) -> list[web.RouteDef]:
        async def proof(request: web.Request) -> web.Response:
            try:
                round_ = int(request.match_info["round"])
            except ValueError:
                raise web.HTTPBadRequest(reason="round must be an integer") from None
            return web.json_response(await self.namespace.store_get(f"result:{round_}"))

        async def feed(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(heartbeat=30)
            await ws.prepare(request)
            latest = await self.namespace.get_round()
            for round_ in range(max(0, latest - FEED_ROUNDS), latest + 1):
                signed = await self.namespace.store_get(f"signed:{round_}")
                if signed is not None:
                    await ws.send_json({"round": round_, **signed})
            await ws.send_json({"caughtUp": latest})  # then each new one as it is made
            self._listeners.add(ws)
            try:
                async for _ in ws:  # listeners only listen
                    pass
            finally:
                self._listeners.discard(ws)
            return ws

        async def feed_stats(_: web.Request) -> web.Response:
            return web.json_response({"auditsFromFeed": self.audits_from_feed})

        return [
            web.get("/proof/{round}", proof),
            web.get("/feed", feed),
            web.get("/feed/stats", feed_stats),
        ]
