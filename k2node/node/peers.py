"""The other nodes of this node's tasks, by the URLs they staked with (where the embedded IPFS
store fetches what it lacks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from k2node.node.context import TaskContext

# A fetch asks once per missing block, and K2 may be across the network: read at most this often.
PEERS_TTL_S = 5.0


class Peers:
    def __init__(self, contexts: Callable[[], Iterable[TaskContext]]) -> None:
        self._contexts = contexts
        self._cache: tuple[float, list[str]] = (float("-inf"), [])

    async def __call__(self) -> list[str]:
        read_at, cached = self._cache
        if time.monotonic() - read_at < PEERS_TTL_S:
            return cached
        urls: list[str] = []
        for ctx in self._contexts():
            state = await ctx.agent.state()
            for url in state["ip_address_list"].values():
                if url != ctx.public_url and url not in urls:
                    urls.append(url)
        self._cache = (time.monotonic(), urls)
        return urls
