"""The other nodes of this node's tasks, by the URLs they staked with: where the embedded IPFS
store fetches what it lacks (a peer's results, a task's executable)."""

from __future__ import annotations

import time
from collections.abc import Collection

from k2node.settlement.base import Settlement, TransactionError

# A fetch asks once per missing block, and K2 may be across the network: read at most this often.
PEERS_TTL_S = 5.0


class Peers:
    def __init__(
        self, settlement: Settlement, task_ids: Collection[str], own_urls: Collection[str]
    ):
        # both filled as the node starts: its tasks once known, its URL once it listens
        self._settlement = settlement
        self._task_ids = task_ids
        self._own_urls = own_urls
        self._cache: tuple[float, list[str]] = (float("-inf"), [])

    async def __call__(self) -> list[str]:
        read_at, cached = self._cache
        if time.monotonic() - read_at < PEERS_TTL_S and cached:
            return cached
        urls: list[str] = []
        for task_id in list(self._task_ids):
            try:
                state = await self._settlement.get_task_state(task_id)
            except TransactionError:
                continue
            except OSError:  # K2 unreachable (its outage says so): the last list serves
                return cached
            for url in state["ip_address_list"].values():
                if url not in self._own_urls and url not in urls:
                    urls.append(url)
        self._cache = (time.monotonic(), urls)
        return urls
