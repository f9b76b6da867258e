"""A task's reach to the other nodes of its task: who they are, and bounded calls to their
task routes (REST and WebSocket) through their nodes.

Peers are strangers: every call has a deadline that covers its retries, an answer is read
up to a size limit, and a failure is a `PeerError` naming the peer, never an exception that
ends a phase or a wait longer than the caller allowed.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from k2node import codec
from k2node.contract.peers import peer_urls

# Retries back off from this, doubling, with jitter; the deadline bounds them all.
BACKOFF_S = 0.2
MAX_ANSWER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Peer:
    staking_key: str
    url: str  # the peer node's base URL, as it staked with it (ip_address_list)

    def task_url(self, task_id: str, path: str) -> str:
        """The URL of `path` among the task's routes on this peer's node."""
        return f"{self.url.rstrip('/')}/task/{task_id}/{path.lstrip('/')}"


class PeerError(Exception):
    def __init__(self, peer: Peer, reason: str) -> None:
        super().__init__(f"peer {peer.staking_key[:12]} ({peer.url[:80]}): {reason}")
        self.peer = peer
        self.reason = reason


def peers_of(ip_address_list: dict[str, Any], own_key: str) -> list[Peer]:
    """The task's other nodes with a usable http(s) URL, in a stable order."""
    return [Peer(key, url) for key, url in peer_urls(ip_address_list, own_key)]


async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise ValueError(f"answer of {resp.content_length:,} bytes, over {max_bytes:,}")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise ValueError(f"answer over {max_bytes:,} bytes")
    return bytes(body)


async def get_json(
    session: aiohttp.ClientSession,
    peer: Peer,
    url: str,
    timeout_s: float = 5.0,
    retries: int = 2,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> Any:
    """GET `url` on `peer` and decode its JSON; retried on no answer or a 5xx, all within
    `timeout_s`. A 4xx, a body that is not JSON or is too large fails at once."""
    deadline = time.monotonic() + timeout_s
    reason = "no attempt"
    for attempt in range(retries + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            async with asyncio.timeout(left), session.get(url, allow_redirects=False) as resp:
                if resp.status >= 500:
                    reason = f"HTTP {resp.status}"
                elif resp.status != 200:
                    raise PeerError(peer, f"HTTP {resp.status}")
                else:
                    return codec.loads(await _read_limited(resp, max_bytes))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"no answer ({type(exc).__name__})"
        except ValueError as exc:  # not JSON, or too large
            raise PeerError(peer, f"bad answer: {str(exc)[:120]}") from None
        if attempt < retries:
            pause = BACKOFF_S * 2**attempt * (0.5 + random.random())
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
    raise PeerError(peer, f"{reason} within {timeout_s:g} s")


async def websocket(
    session: aiohttp.ClientSession,
    peer: Peer,
    url: str,
    timeout_s: float = 5.0,
    max_message_bytes: int = MAX_ANSWER_BYTES,
) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket to `url` on `peer`, opened within `timeout_s`; the caller closes it."""
    try:
        async with asyncio.timeout(timeout_s):
            return await session.ws_connect(url, max_msg_size=max_message_bytes, heartbeat=30)
    except aiohttp.WSServerHandshakeError as exc:
        raise PeerError(peer, f"WebSocket refused (HTTP {exc.status})") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise PeerError(
            peer, f"no WebSocket within {timeout_s:g} s ({type(exc).__name__})"
        ) from None
