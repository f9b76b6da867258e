"""The chain calls of the newest namespace wrapper (1.0.23): listing tasks, reading a task by
its id, a transaction the task built, and a transfer from the operator's wallet.

A task is untrusted code: its transactions are signed only when they ask the task program
about this task alone, and a transfer moves the operator's money only where the operator
allowed it for the task (K2NODE_TASK_TRANSFERS).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from k2node.contract.methods import Method
from k2node.node.agent import ActionError
from k2node.node.context import TaskContext
from k2node.node.http.rpc_methods import koii_only, method, options
from k2node.settlement.base import TransactionError
from k2node.settlement.wire import PROGRAM_ID

# base58 of `{"is_allowlisted":true`: the Desktop node's filter for listed tasks
ALLOWLISTED = "aRN1MbEZhbr2W97MTP3RhQjjqHgoZN"
MAX_TRANSACTION_BYTES = 1232


@method(Method.GET_PROGRAM_ACCOUNTS)
async def _program_accounts(ctx: TaskContext) -> list[dict[str, Any]]:
    filters = [{"memcmp": {"offset": 0, "bytes": ALLOWLISTED}}]
    found = await ctx.agent.settlement.get_program_accounts(str(PROGRAM_ID), filters)
    return [{"pubkey": key, "account": account.to_rpc()} for key, account in found]


@method(Method.GET_TASK_STATE_BY_ID)
async def _task_state_by_id(
    ctx: TaskContext, task_id: Any, task_options: Any = None, task_type: Any = "KOII"
) -> dict[str, Any]:
    koii_only(task_type)
    if not isinstance(task_id, str) or not 0 < len(task_id) <= 64:
        raise ActionError("taskId must be a task's public key")
    try:
        return await ctx.agent.settlement.get_task_state(task_id, options(task_options))
    except TransactionError as exc:
        raise ActionError(str(exc)) from None


def _transaction_bytes(value: Any) -> bytes:
    """A serialized transaction as a task sends it: a Node.js Buffer's JSON, or base64."""
    if isinstance(value, dict) and value.get("type") == "Buffer":
        data = value.get("data")
        if isinstance(data, list) and len(data) <= MAX_TRANSACTION_BYTES:
            try:
                return bytes(data)
            except (TypeError, ValueError):
                pass
        raise ActionError("the transaction Buffer must hold at most 1232 bytes")
    if isinstance(value, str) and len(value) <= 2 * MAX_TRANSACTION_BYTES:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise ActionError("the transaction must be a serialized Buffer or base64")


@method(Method.SEND_AND_CONFIRM_TRANSACTION_WRAPPER)
async def _send_task_transaction(ctx: TaskContext, serialized: Any, signers: Any = None) -> str:
    return await ctx.agent.sign_task_transaction(_transaction_bytes(serialized))


@method(Method.SEND_TRANSACTION)
async def _transfer(ctx: TaskContext, source: Any, beneficiary: Any, amount: Any) -> str:
    if not ctx.transfers_allowed:
        raise ActionError(
            "transfers from the operator's wallet are off for this task "
            "(the operator allows them with K2NODE_TASK_TRANSFERS)"
        )
    return await ctx.agent.transfer(beneficiary, amount)
