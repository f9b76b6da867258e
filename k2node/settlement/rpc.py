"""RpcSettlement: the Settlement interface over a k2node K2 service (`k2node k2`).

The slot clock is computed locally from the service's genesis and slot time, read once at
start, so the timers never wait on the network to know the slot.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import aiohttp

from k2node.contract.units import SlotClock
from k2node.settlement.base import (
    DUPLICATE_TRANSACTION,
    DuplicateTransaction,
    SlotClocked,
    TransactionError,
)

REQUEST_TIMEOUT_S = 15.0


class K2Unreachable(ConnectionError):
    """The K2 service did not answer; the message says where and why."""


_ids = itertools.count(1)


async def _call(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
    try:
        async with session.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        ) as resp:
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise K2Unreachable(f"K2 at {url}: {type(exc).__name__}: {exc}") from None
    if not isinstance(answer, dict):
        raise K2Unreachable(f"K2 at {url} answered something other than JSON-RPC")
    error = answer.get("error")
    if isinstance(error, dict):
        message = str(error.get("message", "refused"))
        if error.get("code") == DUPLICATE_TRANSACTION:
            raise DuplicateTransaction(message)
        raise TransactionError(message)
    return answer.get("result")


class RpcSettlement(SlotClocked):
    def __init__(self, url: str, session: aiohttp.ClientSession, slots: SlotClock) -> None:
        super().__init__(slots, time.time)
        self._url = url
        self._session = session

    @classmethod
    async def connect(cls, url: str, session: aiohttp.ClientSession) -> RpcSettlement:
        clock = await _call(session, url, "getClock")
        return cls(url, session, SlotClock(float(clock["genesis"]), float(clock["slot_ms"])))

    async def _call(self, method: str, *params: Any) -> Any:
        return await _call(self._session, self._url, method, *params)

    async def get_task_state(
        self, task_id: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        state: dict[str, Any] = await self._call("getTaskAccountInfo", task_id, options or {})
        return state

    async def get_round_sections(
        self, task_id: str, round_: int, sections: tuple[str, ...]
    ) -> dict[str, Any]:
        found: dict[str, Any] = await self._call(
            "getRoundSections", task_id, round_, list(sections)
        )
        return found

    async def get_distribution_list(
        self, task_id: str, submitter: str, round_: int
    ) -> dict[str, int] | None:
        found: dict[str, int] | None = await self._call(
            "getDistributionList", task_id, submitter, round_
        )
        return found

    async def send(self, tx: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("sendTransaction", tx)
        return result

    async def transaction_applied(self, signature: str) -> bool:
        return bool(await self._call("getSignatureStatus", signature))

    async def get_balance(self, pubkey: str) -> int:
        return int(await self._call("getBalance", pubkey))

    async def airdrop(self, pubkey: str, amount: int) -> None:
        await self._call("requestAirdrop", pubkey, amount)
