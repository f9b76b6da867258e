"""Keeping a remote K2's slot clock in step: slots arrive through the PubSub WebSocket
(`slotSubscribe`), with polling `getSlot` as the fallback when it cannot be reached.

The node computes slots locally from a genesis and a slot time (the timers must not wait
on the network); each slot the K2 announces re-anchors that genesis when the two disagree.
A K2 that does not answer at all is the RPC's outage, logged there once; the PubSub alone
gone is `k2_pubsub_unavailable`, once until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from k2node import codec
from k2node.logs import get_logger
from k2node.settlement.rpc import K2Unreachable, RpcSettlement

log = get_logger("k2node.k2")

POLL_S = 5.0  # getSlot this often while the WebSocket is down
RETRY_WS_S = 30.0  # and try the WebSocket again this often


def pubsub_url(rpc_url: str) -> str:
    """Where Solana clients look for a K2's PubSub: ws(s) on the RPC port + 1."""
    parts = urlsplit(rpc_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    netloc = parts.netloc
    if parts.port is not None:
        netloc = f"{parts.hostname}:{parts.port + 1}"
    return urlunsplit((scheme, netloc, parts.path, "", ""))


def _announced_slot(raw: str | bytes) -> int | None:
    """The slot of a slotNotification; None for any other message, or a malformed one."""
    try:
        message = codec.loads(raw)
        slot = (
            message["params"]["result"]["slot"] if message["method"] == "slotNotification" else None
        )
    except (ValueError, KeyError, TypeError):
        return None
    return slot if isinstance(slot, int) and not isinstance(slot, bool) else None


class SlotFollower:
    def __init__(self, rpc: RpcSettlement, ws_url: str) -> None:
        self._rpc = rpc
        self._ws_url = ws_url
        self._down = False  # the PubSub is known gone (said once)
        self.announced = 0  # slots heard over the WebSocket (tests, metrics)

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except (OSError, WebSocketException, ValueError, TimeoutError) as exc:
                # a K2 that does not answer either is an outage of its own, said by the RPC
                if not self._down and await self._rpc.probe():
                    log.warning("k2_pubsub_unavailable", url=self._ws_url, error=str(exc)[:200])
                    self._down = True
            await self._poll(RETRY_WS_S)

    async def _follow(self) -> None:
        async with connect(self._ws_url, open_timeout=10, max_size=64 * 1024) as socket:
            await socket.send(
                codec.dumps_text({"jsonrpc": "2.0", "id": 1, "method": "slotSubscribe"})
            )
            async for raw in socket:
                slot = _announced_slot(raw)
                if slot is not None:
                    if self._down:
                        log.info("k2_pubsub_available", url=self._ws_url)
                        self._down = False
                    self.announced += 1
                    self._rpc.resync(slot)

    async def _poll(self, for_s: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + for_s
        while loop.time() < until:
            # an unanswered poll is the RPC's outage, logged there once, not once a poll
            with contextlib.suppress(K2Unreachable):
                asked_at = self._rpc.time()
                self._rpc.resync(int(await self._rpc.get_slot()), asked_at)
            await asyncio.sleep(POLL_S)
