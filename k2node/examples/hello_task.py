"""The bundled example task: a small proof of work per round, published on IPFS.

Copy this file to start a task. Each round the node finds a nonce such that
sha256("<task id>:<round>:<nonce>") starts with DIFFICULTY and keeps it in the task's
LevelDB. It submits the CID of `submissionValues<round>.json` (the template's IPFS mode:
the result with its signed digest); auditors fetch it by CID, check the signer and the
digest, and recompute the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import web

from k2node.task import CoreLogic

DIFFICULTY = "000"  # hex prefix: about 4,096 hashes per round on average


def proof_digest(seed: str, nonce: int) -> str:
    return hashlib.sha256(f"{seed}:{nonce}".encode()).hexdigest()


def find_proof(seed: str) -> tuple[int, str]:
    nonce = 0
    while not (digest := proof_digest(seed, nonce)).startswith(DIFFICULTY):
        nonce += 1
    return nonce, digest


class HelloTask(CoreLogic):
    def seed(self, round_: int) -> str:
        return f"{self.namespace.task_id}:{round_}"

    async def task(self, round_: int) -> None:
        nonce, digest = await asyncio.to_thread(find_proof, self.seed(round_))
        await self.namespace.store_set(f"result:{round_}", {"nonce": nonce, "digest": digest})
        await self.namespace.store_set("value", digest)

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
        return await self.namespace.upload_signed_submission(round_, body)

    async def validate_node(self, submission_value: str, round_: int, submitter_key: str) -> bool:
        body = await self.namespace.fetch_signed_submission(submission_value, round_, submitter_key)
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

    def routes(self) -> list[web.RouteDef]:
        async def proof(request: web.Request) -> web.Response:
            try:
                round_ = int(request.match_info["round"])
            except ValueError:
                raise web.HTTPBadRequest(reason="round must be an integer") from None
            return web.json_response(await self.namespace.store_get(f"result:{round_}"))

        return [web.get("/proof/{round}", proof)]
