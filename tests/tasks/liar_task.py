"""A task that does no work and submits a made-up proof: honest auditors must catch it."""

from __future__ import annotations

from k2node.examples.hello_task import HelloTask


class LiarTask(HelloTask):
    async def task(self, round_: int) -> None:
        return None

    async def fetch_submission(self, round_: int) -> str | None:
        body = {"round": round_, "nonce": 1, "digest": "000" + "f" * 61}
        return await self.namespace.upload_signed_submission(round_, body)
