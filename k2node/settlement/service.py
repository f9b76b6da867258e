"""The local K2 as its own service: JSON-RPC 2.0 over HTTP, so several nodes share it.

`k2node k2` runs it; nodes reach it with `K2_NODE_URL`. Method names follow K2's JSON-RPC
where one exists (`getSlot`, `getBalance`, `sendTransaction`, `getTaskAccountInfo`,
`requestAirdrop`); the rest are k2node's own. Transactions are k2node's signed JSON
transactions (see settlement/base.py), not K2's binary wire format.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from k2node.contract.task_state import ACCOUNT_OPTIONS, DISTRIBUTION_SECTIONS, SUBMISSION_SECTIONS
from k2node.contract.values import is_int
from k2node.settlement.base import (
    DUPLICATE_TRANSACTION,
    TRANSACTION_REFUSED,
    DuplicateTransaction,
    TransactionError,
)
from k2node.settlement.local import LocalK2

log = structlog.get_logger("k2node.k2")

MAX_REQUEST_BYTES = 16 * 1024 * 1024
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise RpcError(INVALID_PARAMS, f"{name} must be a non-empty string")
    return value


def _int(value: Any, name: str) -> int:
    if not is_int(value) or value < 0:
        raise RpcError(INVALID_PARAMS, f"{name} must be a non-negative integer")
    return value


class K2Service:
    def __init__(self, k2: LocalK2, faucet: bool = True) -> None:
        self._k2 = k2
        self._faucet = faucet
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "getSlot": self._get_slot,
            "getClock": self._get_clock,
            "getTaskAccountInfo": self._get_task_account_info,
            "getRoundSections": self._get_round_sections,
            "getDistributionList": self._get_distribution_list,
            "sendTransaction": self._send_transaction,
            "getSignatureStatus": self._get_signature_status,
            "getBalance": self._get_balance,
            "requestAirdrop": self._request_airdrop,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._reply(None, error=(PARSE_ERROR, "body is not JSON"))
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
            return self._reply(None, error=(INVALID_REQUEST, "not a JSON-RPC 2.0 request"))
        call_id = body.get("id")
        method, params = body.get("method"), body.get("params", [])
        if not isinstance(params, list):
            return self._reply(call_id, error=(INVALID_PARAMS, "params must be an array"))
        handler = self._methods.get(method) if isinstance(method, str) else None
        if handler is None:
            return self._reply(call_id, error=(METHOD_NOT_FOUND, f"no method {str(method)[:64]}"))
        try:
            result = await handler(*params)
        except TypeError:
            return self._reply(call_id, error=(INVALID_PARAMS, f"wrong arguments for {method}"))
        except RpcError as exc:
            return self._reply(call_id, error=(exc.code, str(exc)))
        except DuplicateTransaction as exc:
            return self._reply(call_id, error=(DUPLICATE_TRANSACTION, str(exc)))
        except TransactionError as exc:
            return self._reply(call_id, error=(TRANSACTION_REFUSED, str(exc)))
        return self._reply(call_id, result=result)

    @staticmethod
    def _reply(
        call_id: Any, result: Any = None, error: tuple[int, str] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": call_id}
        if error is None:
            body["result"] = result
        else:
            body["error"] = {"code": error[0], "message": error[1]}
        return web.json_response(body)

    async def _get_slot(self) -> int:
        return self._k2.current_slot()

    async def _get_clock(self) -> dict[str, float]:
        return {"genesis": self._k2.wall_time_of_slot(0), "slot_ms": self._k2.slot_ms}

    async def _get_task_account_info(self, task_id: Any, options: Any = None) -> dict[str, Any]:
        if options is not None and not isinstance(options, dict):
            raise RpcError(INVALID_PARAMS, "options must be an object")
        wanted = {flag: bool((options or {}).get(name)) for name, flag in ACCOUNT_OPTIONS.items()}
        wanted |= {k: bool(v) for k, v in (options or {}).items() if k.startswith("is_")}
        return await self._k2.get_task_state(_str(task_id, "task id"), wanted)

    async def _get_round_sections(self, task_id: Any, round_: Any, sections: Any) -> Any:
        if not isinstance(sections, list) or not all(isinstance(s, str) for s in sections):
            raise RpcError(INVALID_PARAMS, "sections must be an array of names")
        allowed = (*SUBMISSION_SECTIONS, *DISTRIBUTION_SECTIONS)
        if not set(sections) <= set(allowed):
            raise RpcError(INVALID_PARAMS, f"sections are among {', '.join(allowed)}")
        return await self._k2.get_round_sections(
            _str(task_id, "task id"), _int(round_, "round"), tuple(sections)
        )

    async def _get_distribution_list(self, task_id: Any, submitter: Any, round_: Any) -> Any:
        return await self._k2.get_distribution_list(
            _str(task_id, "task id"), _str(submitter, "submitter"), _int(round_, "round")
        )

    async def _send_transaction(self, tx: Any) -> dict[str, Any]:
        return await self._k2.send(tx)

    async def _get_signature_status(self, signature: Any) -> bool:
        return await self._k2.transaction_applied(_str(signature, "signature"))

    async def _get_balance(self, pubkey: Any) -> int:
        return await self._k2.get_balance(_str(pubkey, "public key"))

    async def _request_airdrop(self, pubkey: Any, amount: Any) -> bool:
        if not self._faucet:
            raise RpcError(TRANSACTION_REFUSED, "this K2 has no faucet")
        await self._k2.airdrop(_str(pubkey, "public key"), _int(amount, "amount"))
        return True
