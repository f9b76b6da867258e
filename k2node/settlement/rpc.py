"""RpcSettlement: the Settlement interface over K2's JSON-RPC, of any K2 (the Koii network,
or `k2node k2`).

Standard Solana methods for slots, balances, blockhashes, transactions and accounts, and
K2's own `getTaskAccountInfo`, `getTaskSubmissionInfo` and `getTaskDistributionInfo`. The
slot clock is computed locally (from `k2node k2`'s `getClock`, or from a K2's slot and
recent performance samples), so the timers never wait on the network to know the slot.
Calls are retried with exponential backoff and jitter on 429, 5xx and timeouts; a call that
still finds no K2 begins an outage (`Outage`: `k2_unreachable` once, `k2_reachable` when a
call goes through again), which the node's timers wait out by probing with `getSlot`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from k2node import codec
from k2node.codec import JSON_HEADERS
from k2node.contract.task_state import ACCOUNT_OPTIONS, DISTRIBUTION_SECTIONS, OPTION_SECTIONS
from k2node.contract.units import DEFAULT_SLOT_MS, SlotClock
from k2node.settlement.base import (
    ALREADY_PROCESSED,
    BLOCKHASH_NOT_FOUND,
    Account,
    BlockhashExpired,
    DuplicateTransaction,
    SlotClocked,
    TransactionError,
)
from k2node.settlement.outage import Outage

REQUEST_TIMEOUT_S = 15.0
# An answer taking longer than this many slots is slow: `k2_slow` once, `k2_prompt` after.
SLOW_SLOTS = 5
PROBE_TIMEOUT_S = 2.0  # one getSlot asking whether an unreachable K2 is back
CONFIRM_S, CONFIRM_POLL_S = 60.0, 0.4
ATTEMPTS = 4
BACKOFF_S = 0.25
METHOD_NOT_FOUND = -32601
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class K2Unreachable(ConnectionError):
    """The K2 service did not answer; the message says where and why."""


class Refused(TransactionError):
    """K2 answered with a JSON-RPC error; `code` is its code."""

    def __init__(self, message: str, code: Any) -> None:
        super().__init__(message)
        self.code = code


class _Retry(Exception):
    pass


_ids = itertools.count(1)


async def _call(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
    for attempt in range(ATTEMPTS):
        try:
            return await _call_once(session, url, body)
        except _Retry as exc:
            if attempt == ATTEMPTS - 1:
                raise K2Unreachable(f"K2 at {url}: {method}: {exc}") from None
            await asyncio.sleep(BACKOFF_S * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


async def _call_once(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> Any:
    try:
        async with session.post(
            url,
            data=codec.dumps(body),
            headers=JSON_HEADERS,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            if resp.status in _RETRY_STATUSES:
                raise _Retry(f"HTTP {resp.status}")
            answer = codec.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    except ValueError:
        raise K2Unreachable(f"K2 at {url}: {body['method']}: the answer is not JSON") from None
    if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
        raise K2Unreachable(f"K2 at {url}: {body['method']}: not a JSON-RPC answer")
    error = answer.get("error")
    if isinstance(error, dict):
        message = str(error.get("message", "refused"))
        data = error.get("data")
        err = data.get("err") if isinstance(data, dict) else None
        if err == ALREADY_PROCESSED:
            raise DuplicateTransaction(message)
        if err == BLOCKHASH_NOT_FOUND:
            raise BlockhashExpired(message)
        raise Refused(message, error.get("code"))
    if error is not None:
        raise K2Unreachable(f"K2 at {url}: {body['method']}: a malformed error")
    return answer["result"]


def _data(value: Any) -> Any:
    """The JSON an RPC `value: {data: [base64, "base64"]}` holds, or None."""
    if not isinstance(value, dict):
        return None
    data = value.get("data")
    if not (isinstance(data, list) and data and isinstance(data[0], str)):
        return None
    return codec.loads(base64.b64decode(data[0]))


class RpcSettlement(SlotClocked):
    def __init__(self, url: str, session: aiohttp.ClientSession, slots: SlotClock) -> None:
        super().__init__(slots, time.time)
        self._url = url
        self._session = session
        # told of each call: its method, seconds, and whether it was answered (the metrics)
        self.observe: Callable[[str, float, bool], None] | None = None
        self.outage = Outage("k2_unreachable", "k2_reachable", self.probe, url=url)
        # a K2 that answers, late: said, not waited on (nothing is owed, the answers come)
        self.slowness = Outage("k2_slow", "k2_prompt", self.probe, lasted="slow_s", url=url)

    @property
    def checks_signatures(self) -> bool:
        return True

    @classmethod
    async def connect(cls, url: str, session: aiohttp.ClientSession) -> RpcSettlement:
        try:
            clock = await _call(session, url, "getClock")
            slots = SlotClock(float(clock["genesis"]), float(clock["slot_ms"]))
        except Refused as exc:  # a K2 that is not k2node's: measure its clock
            if exc.code != METHOD_NOT_FOUND:
                raise
            slots = await _measured_clock(session, url)
        return cls(url, session, slots)

    async def _call(self, method: str, *params: Any) -> Any:
        started, ok, refused = time.monotonic(), False, False
        try:
            answer = await _call(self._session, self._url, method, *params)
            ok = True
            return answer
        except K2Unreachable as exc:
            self.outage.failed(str(exc), method=method)
            raise
        except TransactionError:
            refused = True  # an answer, if a refusal
            raise
        finally:
            took = time.monotonic() - started
            if ok or refused:
                self._answered(method, took)
            if self.observe is not None:
                self.observe(method, took, ok)

    def _answered(self, method: str, took: float) -> None:
        self.outage.succeeded()
        if took > SLOW_SLOTS * self.slot_ms / 1000:
            self.slowness.failed(f"answered in {took:.2f} s", method=method)
        else:
            self.slowness.succeeded()

    async def probe(self) -> bool:
        """One `getSlot`, not retried and soon given up: whether K2 answers now. A K2 that
        does not begins an outage (if none had), one that does ends it."""
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": "getSlot", "params": []}
        try:
            await _call_once(self._session, self._url, body, PROBE_TIMEOUT_S)
        except (_Retry, K2Unreachable) as exc:
            self.outage.failed(str(exc), method="getSlot")
            return False
        except TransactionError:
            pass
        self.outage.succeeded()
        return True

    @property
    def url(self) -> str:
        return self._url

    async def get_slot(self) -> int:
        return int(await self._call("getSlot", {"commitment": "processed"}))

    def resync(self, slot: int, asked_at: float | None = None) -> None:
        """K2 says `slot` has begun (announced now, or answered to a question asked at
        `asked_at`): re-anchor the local clock if it disagrees. An answer that took long
        names a slot of when it was asked: the clock agrees if that slot is any from the
        asking to now (a slow K2 had pulled the clock back by its delay)."""
        now_slot = self.current_slot()
        first = now_slot if asked_at is None else self._slots.slot_at(asked_at)
        if not first <= slot <= now_slot:
            # the latest anchor K2's answer allows: `slot` begins now (early is worse than
            # late: a phase sent before its window opens is refused)
            # (a microsecond in: the round trip through floats still lands in `slot`)
            genesis = self.time() - slot * self.slot_ms / 1000 - 1e-6
            self._slots = SlotClock(genesis, self.slot_ms)

    async def get_task_state(
        self, task_id: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        wanted = options or {}
        flags = {name: bool(wanted.get(flag)) for name, flag in ACCOUNT_OPTIONS.items()}
        answer = await self._call("getTaskAccountInfo", task_id, {"encoding": "base64", **flags})
        state = _data(answer.get("value") if isinstance(answer, dict) else None)
        if not isinstance(state, dict):
            raise TransactionError(f"task {task_id!r} does not exist")
        return state

    async def get_round_sections(
        self, task_id: str, round_: int, sections: tuple[str, ...]
    ) -> dict[str, Any]:
        method = (
            "getTaskDistributionInfo"
            if set(sections) <= {*DISTRIBUTION_SECTIONS, "distributions_audit_record"}
            else "getTaskSubmissionInfo"
        )
        answer = await self._call(method, task_id, {"encoding": "base64", "round": round_})
        found = _data(answer.get("value") if isinstance(answer, dict) else None)
        if not isinstance(found, dict):
            raise TransactionError(f"task {task_id!r} does not exist")
        return {s: found.get(s, {str(round_): {}}) for s in sections}

    async def get_section(self, task_id: str, section: str) -> Any:
        asked = {opt: True for opt, sections in OPTION_SECTIONS.items() if section in sections}
        return (await self.get_task_state(task_id, asked)).get(section, {})

    async def get_distribution_list(
        self, task_id: str, submitter: str, round_: int
    ) -> dict[str, int] | None:
        found: dict[str, int] | None = await self._call(
            "getDistributionList", task_id, submitter, round_
        )
        return found

    async def latest_blockhash(self) -> tuple[str, int]:
        answer = await self._call("getLatestBlockhash", {"commitment": "confirmed"})
        value = answer["value"]
        return str(value["blockhash"]), int(value["lastValidBlockHeight"])

    async def send(self, raw: bytes) -> str:
        """Send, then wait until K2 has applied it: a transaction still unconfirmed after
        CONFIRM_S is K2Unreachable (the ledger keeps it owed), one that failed is refused."""
        encoded = base64.b64encode(raw).decode()
        signature = str(await self._call("sendTransaction", encoded, {"encoding": "base64"}))
        deadline = time.monotonic() + CONFIRM_S
        while True:
            status = await self._status(signature)
            if isinstance(status, dict):
                if status.get("err") is not None:
                    raise TransactionError(f"failed on K2: {status['err']}")
                return signature
            if time.monotonic() > deadline:
                raise K2Unreachable(f"K2 at {self._url}: {signature} not confirmed in time")
            await asyncio.sleep(CONFIRM_POLL_S)

    async def _status(self, signature: str) -> Any:
        answer = await self._call(
            "getSignatureStatuses", [signature], {"searchTransactionHistory": True}
        )
        return answer["value"][0]

    async def transaction_applied(self, signature: str) -> bool:
        status = await self._status(signature)
        return isinstance(status, dict) and status.get("err") is None

    async def get_balance(self, pubkey: str) -> int:
        return int((await self._call("getBalance", pubkey))["value"])

    async def get_account(self, pubkey: str) -> Account | None:
        value = (await self._call("getAccountInfo", pubkey, {"encoding": "base64"}))["value"]
        return _account(value) if isinstance(value, dict) else None

    async def get_program_accounts(
        self, program: str, filters: list[dict[str, Any]]
    ) -> list[tuple[str, Account]]:
        config = {"encoding": "base64", "filters": filters}
        found = await self._call("getProgramAccounts", program, config)
        return [(str(item["pubkey"]), _account(item["account"])) for item in found]

    async def airdrop(self, pubkey: str, amount: int) -> None:
        await self._call("requestAirdrop", pubkey, amount)


def _account(value: dict[str, Any]) -> Account:
    data = base64.b64decode(value["data"][0])
    return Account(int(value["lamports"]), str(value["owner"]), data, bool(value["executable"]))


async def _measured_clock(session: aiohttp.ClientSession, url: str) -> SlotClock:
    """A K2's slot clock from its current slot and its average slot time."""
    samples = await _call(session, url, "getRecentPerformanceSamples", 4)
    slot_ms = DEFAULT_SLOT_MS
    slots = sum(int(s["numSlots"]) for s in samples if isinstance(s, dict))
    seconds = sum(int(s["samplePeriodSecs"]) for s in samples if isinstance(s, dict))
    if slots > 0 and seconds > 0:
        slot_ms = seconds * 1000 / slots
    slot = int(await _call(session, url, "getSlot", {"commitment": "processed"}))
    return SlotClock(time.time() - slot * slot_ms / 1000, slot_ms)
