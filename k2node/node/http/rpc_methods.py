"""The namespace RPC's methods: what a task asks of its node (K2-CONTRACT, "Task to node").

Each handler is registered under its wire name; `METHODS` is what the node serves. The
task's files and IPFS are in rpc_files.py, the chain calls of the newest wrapper in
rpc_chain.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from k2node import __version__, codec
from k2node.contract.methods import Method
from k2node.contract.peers import peer_urls
from k2node.contract.shared import remembered
from k2node.crypto import payload_signing, verify_signature, web3_account
from k2node.logs import get_logger
from k2node.node.agent import ActionError
from k2node.node.context import TaskContext

log = get_logger("k2node.rpc")

Handler = Callable[..., Awaitable[Any]]
METHODS: dict[str, Handler] = {}


def method(*names: Method) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            METHODS[name] = fn
        return fn

    return register


def koii_only(task_type: Any) -> None:
    """KOII tasks run here; KPL (token) tasks are not supported."""
    if task_type not in (None, "KOII"):
        raise ActionError(f"this node runs KOII tasks; {str(task_type)[:8]!r} is not supported")


def options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ActionError("options must be an object")
    return value


@method(Method.GET_CURRENT_SLOT)
async def _get_slot(ctx: TaskContext) -> int:
    return ctx.agent.settlement.current_slot()


@method(Method.GET_ROUND)
async def _get_round(ctx: TaskContext) -> int:
    return await ctx.agent.current_round()


@method(Method.GET_AVERAGE_SLOT_TIME)
async def _get_average_slot_time(ctx: TaskContext) -> float:
    return ctx.agent.settlement.slot_ms


@method(Method.GET_TASK_STATE)
async def _get_task_state(ctx: TaskContext, wanted: Any = None) -> dict[str, Any]:
    return await ctx.agent.state(options(wanted))


@method(Method.GET_TASK_SUBMISSION_INFO)
async def _get_submission_info(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.submission_info(round_)


@method(Method.GET_TASK_DISTRIBUTION_INFO)
async def _get_distribution_info(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.distribution_info(round_)


@method(Method.CHECK_SUBMISSION_AND_UPDATE_ROUND)
async def _submit(ctx: TaskContext, value: Any, round_: Any) -> dict[str, Any]:
    return await ctx.agent.submit(value, round_)


@method(Method.AUDIT_SUBMISSION)
async def _audit(ctx: TaskContext, candidate: Any, is_valid: Any, round_: Any) -> dict[str, Any]:
    return await ctx.agent.audit(candidate, is_valid, round_)


@method(Method.DISTRIBUTION_LIST_AUDIT_SUBMISSION)
async def _audit_distribution(
    ctx: TaskContext, candidate: Any, is_valid: Any, round_: Any
) -> dict[str, Any]:
    return await ctx.agent.audit_distribution(candidate, is_valid, round_)


@method(Method.UPLOAD_DISTRIBUTION_LIST)
async def _upload(ctx: TaskContext, distribution: Any, round_: Any) -> dict[str, Any]:
    return await ctx.agent.upload_distribution(distribution, round_)


@method(Method.DISTRIBUTION_LIST_SUBMISSION_ON_CHAIN)
async def _submit_distribution(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.submit_distribution(round_)


@method(Method.GET_DISTRIBUTION_LIST)
async def _get_distribution_list(ctx: TaskContext, submitter: Any, round_: Any) -> str | None:
    found = await ctx.agent.distribution_list(submitter, round_)
    return None if found is None else _list_text(found)


@remembered()
def _list_text(found: dict[str, int]) -> str:
    # a shared list's text is written once for all its readers (a simulation's nodes)
    return codec.dumps_text(found)


@method(Method.PAYLOAD_TRIGGER)
async def _payout(ctx: TaskContext, round_: Any) -> dict[str, Any]:
    return await ctx.agent.payout(round_)


@method(Method.GET_SUBMITTER_ACCOUNT)
async def _submitter_account(ctx: TaskContext, task_type: Any = "KOII") -> dict[str, Any]:
    koii_only(task_type)
    return web3_account(ctx.agent.staking, with_secret=ctx.javascript)


@method(Method.SIGN_DATA)
async def _sign(ctx: TaskContext, body: Any) -> str:
    return payload_signing(body, ctx.agent.staking)


@method(Method.VERIFY_SIGNED_DATA)
async def _verify(ctx: TaskContext, signed: Any, pubkey: Any) -> dict[str, str]:
    if not isinstance(signed, str):
        raise ActionError("signed data must be a string")
    return verify_signature(signed, pubkey)


@method(Method.GET_TASK_LEVEL_DB_PATH)
async def _db_path(ctx: TaskContext) -> str:
    return str(ctx.agent.db_path.resolve())


@method(Method.GET_BASE_PATH)
async def _base_path(ctx: TaskContext) -> str:
    return str(ctx.agent.base_path.resolve())


@method(Method.GET_RPC_URL)
async def _rpc_url(ctx: TaskContext) -> str:
    return ctx.rpc_url or ctx.public_url


@method(Method.GET_TASK_NODE_VERSION)
async def _version(ctx: TaskContext) -> str:
    return __version__


@method(Method.GET_NODES)
async def _nodes(ctx: TaskContext, url: Any = None) -> list[dict[str, str]]:
    state = await ctx.agent.state()
    return [{"pubkey": k, "url": v} for k, v in state["ip_address_list"].items()]


@method(Method.GET_PEERS)
async def _peers(ctx: TaskContext) -> list[dict[str, str]]:
    state = await ctx.agent.state()
    found = peer_urls(state["ip_address_list"], ctx.agent.staking.pubkey)
    return [{"stakingKey": key, "url": url} for key, url in found]


@method(Method.LOGGER)
async def _logger(ctx: TaskContext, level: Any, message: Any, action: Any = "") -> bool:
    log.info(
        "task_log",
        task_id=ctx.task_id,
        level=str(level)[:16],
        message=str(message)[:2000],
        action=str(action)[:200],
    )
    return True


@method(Method.STAKE_ON_CHAIN)
async def _stake(ctx: TaskContext, *_: Any) -> dict[str, Any]:
    return await ctx.agent.stake(ctx.stake, ctx.public_url)


@method(Method.CLAIM_REWARD)
async def _claim(ctx: TaskContext, *_: Any) -> dict[str, Any]:
    return await ctx.agent.claim()


@method(Method.DEFAULT_TASK_SETUP)
async def _default_setup(ctx: TaskContext) -> bool:
    return True  # the node stakes and prepares the task's folder before starting it
