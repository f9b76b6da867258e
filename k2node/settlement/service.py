"""`k2node k2`: the local K2 as a K2 look-alike, Solana's JSON-RPC 2.0 over HTTP.

It answers the methods Solana and Koii clients use (`getSlot`, `getBalance`,
`getLatestBlockhash`, `sendTransaction`, `getSignatureStatuses`, `getAccountInfo`,
`getProgramAccounts`, `getTaskAccountInfo`, ...) in their shapes, so an unmodified
`@solana/web3.js` Connection or the create-task CLI can use it; `getClock` and
`getDistributionList` are k2node's own. Nodes reach it with `K2_NODE_URL`.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from solders.message import Message

from k2node import __version__, codec
from k2node.b58 import b58decode, b58encode
from k2node.contract.task_state import ACCOUNT_OPTIONS, DISTRIBUTION_SECTIONS, SUBMISSION_SECTIONS
from k2node.contract.values import is_int
from k2node.http_errors import json_response
from k2node.logs import get_logger
from k2node.settlement import accounts
from k2node.settlement.base import (
    ALREADY_PROCESSED,
    BLOCKHASH_NOT_FOUND,
    TRANSACTION_REFUSED,
    BlockhashExpired,
    DuplicateTransaction,
    LogNotDurable,
    TransactionError,
)
from k2node.settlement.local import LocalK2
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from k2node.settlement.system_ix import minimum_balance

log = get_logger("k2node.k2")

MAX_REQUEST_BYTES = 16 * 1024 * 1024
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
NODE_UNHEALTHY = -32005  # Solana's server error for getHealth
SLOTS_PER_EPOCH = 432_000
# A transaction's largest encoding (1,232 bytes in base58 is at most 1,683 characters).
MAX_ENCODED_TRANSACTION = 2048
MAX_AIRDROP = 1_000_000 * 1_000_000_000  # a million KOII: bounded, and u64-safe
# sections answered whole: a record per round, not entries per round
RECORD_SECTIONS = ("distributions_audit_record",)
# an airdrop's signature is remembered as a transaction's, so clients can confirm it
_AIRDROP_SIGNATURE_BYTES = 64


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise RpcError(INVALID_PARAMS, f"{name} must be a non-empty string")
    return value


def _str_long(value: Any, name: str) -> str:
    """An encoded transaction or message: a string of at most MAX_ENCODED_TRANSACTION."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ENCODED_TRANSACTION:
        raise RpcError(INVALID_PARAMS, f"the {name} must be an encoded string")
    return value


def _pubkey(value: Any, name: str = "public key") -> str:
    text = _str(value, name)
    try:
        if len(b58decode(text)) == 32:
            return text
    except ValueError:
        pass
    raise RpcError(INVALID_PARAMS, f"Invalid param: {name} is not a base58 public key")


def _config(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RpcError(INVALID_PARAMS, "the configuration must be an object")
    return value


class K2Service:
    def __init__(self, k2: LocalK2, faucet: bool = True) -> None:
        self._k2 = k2
        self._faucet = faucet
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "getSlot": self._get_slot,
            "getBlockHeight": self._get_slot,
            "getClock": self._get_clock,
            "getHealth": self._get_health,
            "getVersion": self._get_version,
            "getGenesisHash": self._get_genesis_hash,
            "getEpochInfo": self._get_epoch_info,
            "getBalance": self._get_balance,
            "getLatestBlockhash": self._get_latest_blockhash,
            "getRecentBlockhash": self._get_recent_blockhash,
            "getMinimumBalanceForRentExemption": self._get_minimum_balance,
            "getFeeForMessage": self._get_fee_for_message,
            "getRecentPerformanceSamples": self._get_performance_samples,
            "sendTransaction": self._send_transaction,
            "getSignatureStatuses": self._get_signature_statuses,
            "getAccountInfo": self._get_account_info,
            "getProgramAccounts": self._get_program_accounts,
            "getTaskAccountInfo": self._get_task_account_info,
            "getTaskSubmissionInfo": self._get_task_submission_info,
            "getTaskDistributionInfo": self._get_task_distribution_info,
            "getDistributionList": self._get_distribution_list,
            "requestAirdrop": self._request_airdrop,
        }

    @property
    def methods(self) -> Mapping[str, Callable[..., Awaitable[Any]]]:
        """The JSON-RPC methods served, by name (the node's route description lists them)."""
        return self._methods

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = codec.loads(await request.read())  # NaN and deep nesting are refused
        except ValueError:
            return self._reply(None, error=RpcError(PARSE_ERROR, "body is not JSON"))
        try:
            if isinstance(body, list):  # a batch
                if not body or len(body) > 100:
                    error = RpcError(INVALID_REQUEST, "a batch holds 1-100 requests")
                    return self._reply(None, error=error)
                return json_response([await self._answer(call) for call in body])
            return json_response(await self._answer(body))
        except LogNotDurable as exc:  # applied, not yet on disk: not a refusal, ask again
            return json_response({"status": 503, "message": str(exc)}, status=503)

    async def _answer(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
            return self._body(None, error=RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request"))
        call_id = body.get("id")
        method, params = body.get("method"), body.get("params", [])
        if not isinstance(params, list):
            return self._body(call_id, error=RpcError(INVALID_PARAMS, "params must be an array"))
        handler = self._methods.get(method) if isinstance(method, str) else None
        if handler is None:
            error = RpcError(METHOD_NOT_FOUND, f"Method not found: {str(method)[:64]}")
            return self._body(call_id, error=error)
        try:
            return self._body(call_id, result=await handler(*params))
        except TypeError:
            error = RpcError(INVALID_PARAMS, f"wrong arguments for {method}")
            return self._body(call_id, error=error)
        except RpcError as exc:
            return self._body(call_id, error=exc)
        except DuplicateTransaction as exc:
            already: dict[str, Any] = {"err": ALREADY_PROCESSED, "logs": [str(exc)]}
            refused = RpcError(
                TRANSACTION_REFUSED, f"Transaction simulation failed: {exc}", already
            )
            return self._body(call_id, error=refused)
        except BlockhashExpired as exc:
            expired: dict[str, Any] = {"err": BLOCKHASH_NOT_FOUND, "logs": [str(exc)]}
            refused = RpcError(
                TRANSACTION_REFUSED, f"Transaction simulation failed: {exc}", expired
            )
            return self._body(call_id, error=refused)
        except TransactionError as exc:
            data: dict[str, Any] = {"err": {"InstructionError": str(exc)}, "logs": [str(exc)]}
            refused = RpcError(TRANSACTION_REFUSED, f"Transaction simulation failed: {exc}", data)
            return self._body(call_id, error=refused)

    @staticmethod
    def _body(call_id: Any, result: Any = None, error: RpcError | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": call_id}
        if error is None:
            body["result"] = result
        else:
            body["error"] = {"code": error.code, "message": str(error)}
            if error.data is not None:
                body["error"]["data"] = error.data
        return body

    def _reply(self, call_id: Any, error: RpcError) -> web.Response:
        return json_response(self._body(call_id, error=error))

    def _context(self, value: Any) -> dict[str, Any]:
        return {
            "context": {"slot": self._k2.current_slot(), "apiVersion": "1.16.0"},
            "value": value,
        }

    # -- the cluster ---------------------------------------------------------------------
    async def _get_slot(self, config: Any = None) -> int:
        return self._k2.current_slot()

    async def _get_clock(self) -> dict[str, float]:
        return {"genesis": self._k2.wall_time_of_slot(0), "slot_ms": self._k2.slot_ms}

    async def _get_health(self) -> str:
        if not self._k2.log_writable:  # Solana's shape for an unhealthy node, and why
            raise RpcError(
                NODE_UNHEALTHY,
                "Node is unhealthy: its log cannot be written to disk",
                {"numSlotsBehind": None},
            )
        return "ok"

    async def _get_version(self) -> dict[str, Any]:
        return {"solana-core": f"1.16.0-k2node.{__version__}", "feature-set": 0}

    async def _get_genesis_hash(self) -> str:
        return str(self._k2.blockhash_of(0))

    async def _get_epoch_info(self, config: Any = None) -> dict[str, int]:
        slot = self._k2.current_slot()
        return {
            "absoluteSlot": slot,
            "blockHeight": slot,
            "epoch": slot // SLOTS_PER_EPOCH,
            "slotIndex": slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": sum(self._k2.tx_count.values()),
        }

    async def _get_balance(self, pubkey: Any, config: Any = None) -> dict[str, Any]:
        return self._context(await self._k2.get_balance(_pubkey(pubkey)))

    async def _get_latest_blockhash(self, config: Any = None) -> dict[str, Any]:
        blockhash, last_valid = await self._k2.latest_blockhash()
        return self._context({"blockhash": blockhash, "lastValidBlockHeight": last_valid})

    async def _get_recent_blockhash(self, config: Any = None) -> dict[str, Any]:
        blockhash, _ = await self._k2.latest_blockhash()
        fees = {"lamportsPerSignature": LAMPORTS_PER_SIGNATURE}
        return self._context({"blockhash": blockhash, "feeCalculator": fees})

    async def _get_fee_for_message(self, encoded: Any, config: Any = None) -> dict[str, Any]:
        """What a message would pay: K2's fee per signature, times its signatures."""
        try:
            message = Message.from_bytes(base64.b64decode(_str_long(encoded, "message")))
        except ValueError:
            raise RpcError(
                INVALID_PARAMS, "the message is not a base64 transaction message"
            ) from None
        return self._context(LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures)

    async def _get_minimum_balance(self, size: Any, config: Any = None) -> int:
        if not is_int(size) or not 0 <= size <= 10 * 1024 * 1024:
            raise RpcError(INVALID_PARAMS, "the account size must be 0-10 MiB")
        return minimum_balance(size)

    async def _get_performance_samples(self, limit: Any = None) -> list[dict[str, Any]]:
        count = limit if is_int(limit) and 0 < limit <= 720 else 1
        slots = int(60_000 / self._k2.slot_ms)
        slot = self._k2.current_slot()
        sample = {"numSlots": slots, "numTransactions": 0, "samplePeriodSecs": 60}
        return [
            {**sample, "slot": slot - i * slots, "numNonVoteTransactions": 0} for i in range(count)
        ]

    # -- transactions --------------------------------------------------------------------
    async def _send_transaction(self, encoded: Any, config: Any = None) -> str:
        encoding = _config(config).get("encoding", "base58")
        encoded = _str_long(encoded, "transaction")
        try:
            if encoding == "base64":
                raw = base64.b64decode(encoded, validate=True)
            else:
                raw = b58decode(encoded)
        except ValueError:
            raise RpcError(INVALID_PARAMS, f"the transaction is not {encoding}") from None
        return await self._k2.send(raw)

    async def _get_signature_statuses(self, signatures: Any, config: Any = None) -> dict[str, Any]:
        if not isinstance(signatures, list) or len(signatures) > 256:
            raise RpcError(INVALID_PARAMS, "signatures must be an array of at most 256")
        statuses: list[dict[str, Any] | None] = []
        for signature in signatures:
            slot = await self._k2.signature_slot(_str(signature, "signature"))
            statuses.append(
                None
                if slot is None
                else {
                    "slot": slot,
                    "confirmations": None,
                    "err": None,
                    "status": {"Ok": None},
                    "confirmationStatus": "finalized",
                }
            )
        return self._context(statuses)

    async def _request_airdrop(self, pubkey: Any, lamports: Any, config: Any = None) -> str:
        if not self._faucet:
            raise RpcError(TRANSACTION_REFUSED, "this K2 has no faucet")
        if not is_int(lamports) or not 0 < lamports <= MAX_AIRDROP:
            raise RpcError(INVALID_PARAMS, f"lamports must be 1-{MAX_AIRDROP} (a million KOII)")
        signature = b58encode(secrets.token_bytes(_AIRDROP_SIGNATURE_BYTES))
        await self._k2.airdrop(_pubkey(pubkey), lamports, signature)
        return signature

    # -- accounts ------------------------------------------------------------------------
    async def _get_account_info(self, pubkey: Any, config: Any = None) -> dict[str, Any]:
        found = await self._k2.get_account(_pubkey(pubkey))
        return self._context(None if found is None else found.to_rpc())

    async def _get_program_accounts(self, program: Any, config: Any = None) -> Any:
        options = _config(config)
        filters = options.get("filters", [])
        if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
            raise RpcError(INVALID_PARAMS, "filters must be an array of objects")
        try:
            found = await self._k2.get_program_accounts(_pubkey(program, "program id"), filters)
        except ValueError as exc:
            raise RpcError(INVALID_PARAMS, f"a filter is malformed: {exc}") from None
        listed = [{"pubkey": key, "account": account.to_rpc()} for key, account in found]
        return self._context(listed) if options.get("withContext") else listed

    async def _task_data(self, value: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return self._context({"data": [base64.b64encode(data).decode(), "base64"]})

    async def _state(self, task_id: Any, flags: dict[str, bool]) -> dict[str, Any] | None:
        try:
            return await self._k2.get_task_state(_pubkey(task_id, "task id"), flags)
        except TransactionError:
            return None

    async def _get_task_account_info(self, task_id: Any, config: Any = None) -> dict[str, Any]:
        options = _config(config)
        flags = {flag: bool(options.get(name)) for name, flag in ACCOUNT_OPTIONS.items()}
        state = await self._state(task_id, flags)
        if state is None:
            return self._context(None)
        ordered = accounts.task_data(state)
        return self._context({"data": [base64.b64encode(ordered).decode(), "base64"]})

    async def _round_info(
        self, task_id: Any, config: Any, flag: str, sections: tuple[str, ...]
    ) -> dict[str, Any]:
        round_ = _config(config).get("round", -1)
        if not is_int(round_):
            raise RpcError(INVALID_PARAMS, "round must be an integer (-1 for every round)")
        state = await self._state(task_id, {flag: True})
        if state is None:
            return self._context(None)
        rkey = str(round_)
        value = {
            s: state[s] if round_ < 0 or s in RECORD_SECTIONS else {rkey: state[s].get(rkey, {})}
            for s in sections
        }
        return await self._task_data(value)

    async def _get_task_submission_info(self, task_id: Any, config: Any = None) -> dict[str, Any]:
        return await self._round_info(
            task_id, config, "is_submission_required", SUBMISSION_SECTIONS
        )

    async def _get_task_distribution_info(self, task_id: Any, config: Any = None) -> dict[str, Any]:
        sections = (*DISTRIBUTION_SECTIONS, "distributions_audit_record")
        return await self._round_info(task_id, config, "is_distribution_required", sections)

    async def _get_distribution_list(self, task_id: Any, submitter: Any, round_: Any) -> Any:
        if not is_int(round_) or round_ < 0:
            raise RpcError(INVALID_PARAMS, "round must be a non-negative integer")
        return await self._k2.get_distribution_list(
            _pubkey(task_id, "task id"), _pubkey(submitter, "submitter"), round_
        )
