"""`POST /namespace-wrapper`: the calls a task process makes to its node (K2-CONTRACT)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from k2node import __version__
from k2node.contract.methods import CHAIN_ACTIONS, PUBLISHES, Method
from k2node.contract.values import is_int
from k2node.crypto import payload_signing, verify_signature, web3_account
from k2node.http_errors import HttpError, json_body
from k2node.ipfs import IpfsBackend, IpfsError
from k2node.node.agent import ActionError
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.settlement.base import TransactionError

log = structlog.get_logger("k2node.rpc")

_Handler = Callable[..., Awaitable[Any]]
ContextOf = Callable[[str], TaskContext | None]
# base64 grows 4/3: this keeps an answer inside the 8 MiB RPC body limit
MAX_IPFS_GET = 4 * 1024 * 1024
METHODS: dict[str, _Handler] = {}
# Methods logged as one event each: they change K2's state or publish content.
_LOGGED = CHAIN_ACTIONS | PUBLISHES


def _method(*names: Method) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        for name in names:
            METHODS[name] = fn
        return fn

    return register


def _options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ActionError("options must be an object")
    return value


@_method(Method.GET_CURRENT_SLOT)
async def _get_slot(ctx: TaskContext) -> int:
    return ctx.agent.settlement.current_slot()


@_method(Method.GET_ROUND)
async def _get_round(ctx: TaskContext) -> int:
    return await ctx.agent.current_round()


@_method(Method.GET_AVERAGE_SLOT_TIME)
async def _get_average_slot_time(ctx: TaskContext) -> float:
    return ctx.agent.settlement.slot_ms


@_method(Method.GET_TASK_STATE)
async def _get_task_state(ctx: TaskContext, options: Any = None) -> dict[str, Any]:
    return await ctx.agent.state(_options(options))


@_method(Method.GET_TASK_SUBMISSION_INFO)
async def _get_submission_info(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.submission_info(round_)


@_method(Method.GET_TASK_DISTRIBUTION_INFO)
async def _get_distribution_info(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.distribution_info(round_)


@_method(Method.CHECK_SUBMISSION_AND_UPDATE_ROUND)
async def _submit(ctx: TaskContext, value: Any, round_: Any) -> dict[str, Any]:
    return await ctx.agent.submit(value, round_)


@_method(Method.AUDIT_SUBMISSION)
async def _audit(ctx: TaskContext, candidate: Any, is_valid: Any, round_: Any) -> dict[str, Any]:
    return await ctx.agent.audit(candidate, is_valid, round_)


@_method(Method.DISTRIBUTION_LIST_AUDIT_SUBMISSION)
async def _audit_distribution(
    ctx: TaskContext, candidate: Any, is_valid: Any, round_: Any
) -> dict[str, Any]:
    return await ctx.agent.audit_distribution(candidate, is_valid, round_)


@_method(Method.UPLOAD_DISTRIBUTION_LIST)
async def _upload(ctx: TaskContext, distribution: Any, round_: Any) -> dict[str, Any]:
    return await ctx.agent.upload_distribution(distribution, round_)


@_method(Method.DISTRIBUTION_LIST_SUBMISSION_ON_CHAIN)
async def _submit_distribution(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.submit_distribution(round_)


@_method(Method.GET_DISTRIBUTION_LIST)
async def _get_distribution_list(ctx: TaskContext, submitter: Any, round_: Any) -> str | None:
    found = await ctx.agent.distribution_list(submitter, round_)
    return None if found is None else json.dumps(found, separators=(",", ":"))


@_method(Method.PAYLOAD_TRIGGER)
async def _payout(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.payout(round_)


@_method(Method.GET_SUBMITTER_ACCOUNT)
async def _submitter_account(ctx: TaskContext) -> dict[str, Any]:
    return web3_account(ctx.agent.staking)


@_method(Method.SIGN_DATA)
async def _sign(ctx: TaskContext, body: Any) -> str:
    return payload_signing(body, ctx.agent.staking)


@_method(Method.VERIFY_SIGNED_DATA)
async def _verify(ctx: TaskContext, signed: Any, pubkey: Any) -> dict[str, str]:
    if not isinstance(signed, str):
        raise ActionError("signed data must be a string")
    return verify_signature(signed, pubkey)


@_method(Method.GET_TASK_LEVEL_DB_PATH)
async def _db_path(ctx: TaskContext) -> str:
    return str(ctx.agent.db_path.resolve())


@_method(Method.GET_BASE_PATH)
async def _base_path(ctx: TaskContext) -> str:
    return str(ctx.agent.base_path.resolve())


@_method(Method.GET_RPC_URL)
async def _rpc_url(ctx: TaskContext) -> str:
    return ctx.public_url


@_method(Method.GET_TASK_NODE_VERSION)
async def _version(ctx: TaskContext) -> str:
    return __version__


@_method(Method.GET_NODES)
async def _nodes(ctx: TaskContext, url: Any = None) -> list[dict[str, str]]:
    state = await ctx.agent.state()
    return [{"pubkey": k, "url": v} for k, v in state["ip_address_list"].items()]


@_method(Method.LOGGER)
async def _logger(ctx: TaskContext, level: Any, message: Any, action: Any = "") -> bool:
    log.info(
        "task_log",
        task_id=ctx.task_id,
        level=str(level)[:16],
        message=str(message)[:2000],
        action=str(action)[:200],
    )
    return True


@_method(Method.STAKE_ON_CHAIN)
async def _stake(ctx: TaskContext, *_: Any) -> dict[str, Any]:
    return await ctx.agent.stake(ctx.stake, ctx.public_url)


@_method(Method.CLAIM_REWARD)
async def _claim(ctx: TaskContext, *_: Any) -> dict[str, Any]:
    return await ctx.agent.claim()


@_method(Method.DEFAULT_TASK_SETUP)
async def _default_setup(ctx: TaskContext) -> bool:
    return True  # the node stakes and prepares the task's folder before starting it


def _confined(ctx: TaskContext, path: Any) -> Path:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ActionError("path must be a non-empty string")
    base = ctx.agent.base_path.resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base):
        raise ActionError("path is outside the task's folder")
    return target


def _fs_sync(target: Path, method: str, args: tuple[Any, ...]) -> Any:
    match method:
        case "readFile" | "readFileSync":
            return target.read_text()
        case "writeFile" | "writeFileSync":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(args[0]) if args else "")
            return None
        case "appendFile" | "appendFileSync":
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a") as out:
                out.write(str(args[0]) if args else "")
            return None
        case "mkdir" | "mkdirSync":
            target.mkdir(parents=True, exist_ok=True)
            return None
        case "readdir" | "readdirSync":
            return sorted(p.name for p in target.iterdir())
        case "exists" | "existsSync" | "access":
            return target.exists()
        case "unlink" | "unlinkSync":
            target.unlink()
            return None
        case "rm" | "rmSync":
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            return None
    raise ActionError(f"fs method {method!r} is not supported")


@_method(Method.FS, Method.FS_STAKING)
async def _fs(ctx: TaskContext, method: Any, path: Any, *args: Any) -> Any:
    if not isinstance(method, str):
        raise ActionError("fs method must be a string")
    target = _confined(ctx, path)
    return await asyncio.to_thread(_fs_sync, target, method, args)


# -- IPFS (k2node extensions): bytes travel base64-encoded inside the JSON body -------------
def _ipfs(ctx: TaskContext) -> IpfsBackend:
    if ctx.ipfs is None:
        raise ActionError("this node has no IPFS store")
    return ctx.ipfs


def _unbase64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ActionError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ActionError(f"{what} is not valid base64") from None


def _cid_version(value: Any) -> int:
    if not is_int(value) or value not in (0, 1):
        raise ActionError("cidVersion must be 0 or 1")
    return int(value)


@_method(Method.IPFS_UPLOAD)
async def _ipfs_upload(ctx: TaskContext, files: Any, cid_version: Any = 0) -> str:
    """Files {name: base64} wrapped in one directory; answers the directory's CID."""
    if not isinstance(files, dict) or not files:
        raise ActionError("files must be a non-empty object {name: base64}")
    decoded = {str(name): _unbase64(data, f"file {str(name)[:40]}") for name, data in files.items()}
    return await _ipfs(ctx).publish_directory(decoded, _cid_version(cid_version))


@_method(Method.IPFS_UPLOAD_FILE)
async def _ipfs_upload_file(ctx: TaskContext, data: Any, cid_version: Any = 0) -> str:
    return await _ipfs(ctx).publish(_unbase64(data, "data"), _cid_version(cid_version))


@_method(Method.IPFS_GET)
async def _ipfs_get(ctx: TaskContext, cid: Any, path: Any = "", max_bytes: Any = None) -> str:
    """A file's verified bytes, base64-encoded; refused past maxBytes (default 4 MiB)."""
    if not isinstance(cid, str) or not isinstance(path, str):
        raise ActionError("cid and path must be strings")
    limit = MAX_IPFS_GET if max_bytes is None else max_bytes
    if not is_int(limit) or not 0 < limit <= MAX_IPFS_GET:
        raise ActionError(f"maxBytes must be an integer in 1..{MAX_IPFS_GET}")
    return base64.b64encode(await _ipfs(ctx).fetch(cid, path, limit)).decode()


def _arity_ok(fn: _Handler, params: list[Any]) -> bool:
    try:
        inspect.signature(fn).bind(None, *params)
    except TypeError:
        return False
    return True


class NamespaceRpc:
    def __init__(self, context_of: ContextOf, events: EventHub) -> None:
        self._context_of = context_of
        self._events = events

    async def handle(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise HttpError(422, "body must be a JSON object")
        args, task_id, secret = body.get("args"), body.get("taskId"), body.get("secret")
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            raise HttpError(422, "args must be a non-empty array starting with the method name")
        if not isinstance(task_id, str) or not task_id:
            raise HttpError(422, "taskId is required")
        if not isinstance(secret, str) or not secret:
            raise HttpError(422, "secret is required")
        ctx = self._context_of(task_id)
        if ctx is None or not secrets.compare_digest(ctx.secret.encode(), secret.encode()):
            raise HttpError(401, "Invalid secret provided")
        name, params = args[0], args[1:]
        fn = METHODS.get(name)
        if fn is None:
            raise HttpError(422, f"unknown method {name[:64]!r}")
        if not _arity_ok(fn, params):
            raise HttpError(422, f"wrong number of arguments for {name}")
        try:
            result = await fn(ctx, *params)
        except (ActionError, TransactionError, IpfsError, ValueError, OSError) as exc:
            log.info("rpc_refused", task_id=task_id, method=name, error=str(exc))
            raise HttpError(422, f"{name}: {exc}") from None
        if name in _LOGGED:
            round_ = params[-1] if params and is_int(params[-1]) else None
            self._events.emit(
                "rpc_action", task_id=task_id, method=name, round=round_, result=result
            )
        return web.json_response({"response": result})
