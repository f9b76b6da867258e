"""Faults of the K2 service, injected: a K2 that answers 429 (too many requests) or 500 to
a quarter of the node's calls, and for a stretch answers every call late. The node retries
each refusal with backoff, says each slow stretch once when it begins and once when it ends,
logs no error, and its rounds are paid as on a healthy K2."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.k2_service import k2_service, spawn, stop

# Half K2's own slots: the example's rounds take 4 s, its windows 1.6 s. (At 100 ms slots a
# distribution phase whose calls are retried with backoff overruns its 0.8 s window.)
SLOT_MS = "200"


# The slow stretch: from this long after the node's first call, for this long, every
# answer is held back by LATE_S (slow: over the node's 5 slots, 1 s)
SLOW_FROM_S, SLOW_FOR_S, LATE_S = 6.0, 2.5, 1.3


class FlakyK2:
    """A proxy before a K2 service: of each four requests, one answered 429 or 500 (never
    two in a row), the others passed on; in the slow stretch, passed on late."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self.requests = 0
        self.refused = {429: 0, 500: 0}
        self.first: float | None = None
        self.held = 0  # answers held back

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        now = time.monotonic()
        self.first = self.first or now
        if SLOW_FROM_S <= now - self.first < SLOW_FROM_S + SLOW_FOR_S:
            self.held += 1
            await asyncio.sleep(LATE_S)
        if self.requests % 8 in (1, 5):
            status = 429 if self.requests % 8 == 1 else 500
            self.refused[status] += 1
            return web.Response(status=status, text="injected fault")
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self._upstream, data=body, headers={"Content-Type": "application/json"}
            ) as resp,
        ):
            return web.Response(
                status=resp.status, body=await resp.read(), content_type="application/json"
            )


@pytest.mark.timeout(200)
async def test_a_k2_refusing_a_quarter_of_calls_and_slow_for_a_stretch_still_pays(
    tmp_path: Path,
) -> None:
    k2, k2_url = await k2_service(tmp_path / "k2", SLOT_MS)
    flaky = FlakyK2(k2_url + "/")
    app = web.Application()
    app.router.add_post("/", flaky.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    proxy_port = runner.addresses[0][1]
    node = None
    events: list[dict[str, object]] = []
    try:
        node = await spawn(
            *("run", "--data-dir", str(tmp_path / "node"), "--port", "0"),
            *("--env-file", str(tmp_path / "none")),
            env={"K2_NODE_URL": f"http://127.0.0.1:{proxy_port}", "K2NODE_LOG_FORMAT": "json"},
        )
        assert node.stdout is not None

        def paid_after_the_slow_stretch() -> bool:
            names = [e.get("event") for e in events]
            return "k2_prompt" in names and "payout_settled" in names[names.index("k2_prompt") :]

        async with asyncio.timeout(150):
            while not paid_after_the_slow_stretch():
                line = await node.stdout.readline()
                assert line, f"the node stopped: {events[-5:]}"
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
    finally:
        if node is not None:
            await stop(node)
        await runner.cleanup()
        await stop(k2)
    paid = [e for e in events if e.get("event") == "payout_settled"]
    assert all(e["outcome"] == "PayoutSuccessful" for e in paid), paid
    # each slow stretch said once as it began and once as it ended (answers in between may
    # come back out of order, so a stretch can be seen as more than one)
    slow = [e["event"] for e in events if e.get("event") in ("k2_slow", "k2_prompt")]
    assert flaky.held >= 1 and slow[:2] == ["k2_slow", "k2_prompt"], (flaky.held, slow)
    assert slow == ["k2_slow", "k2_prompt"] * (len(slow) // 2) and len(slow) <= 6, slow
    assert not [e for e in events if e.get("event") == "k2_unreachable"]
    assert flaky.refused[429] >= 5 and flaky.refused[500] >= 5, flaky.refused
    assert not [e for e in events if e.get("level") in ("error", "critical")]
    assert [e for e in events if e.get("event") == "phase_done"]
