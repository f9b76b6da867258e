"""The task program: applying one transaction to the world at a slot.

A refused transaction raises TransactionError before it changes anything, so the world only
ever holds whole transactions; the handlers live in task_ix.py and round_ix.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k2node.settlement import round_ix, task_ix
from k2node.settlement.base import TransactionError
from k2node.settlement.world import World

# Applied signatures are remembered this long, so a resent transaction is recognised.
SIGNATURE_MEMORY_SLOTS = 5_000

Handler = Callable[[World, dict[str, Any], dict[str, Any], int], dict[str, Any]]
INSTRUCTIONS: dict[str, Handler] = {
    "Airdrop": task_ix.airdrop,
    "CreateTask": task_ix.create_task,
    "FundTask": task_ix.fund_task,
    "Stake": task_ix.stake,
    "Withdraw": task_ix.withdraw,
    "SubmitTask": round_ix.submit_task,
    "AuditSubmissions": round_ix.audit_submissions,
    "AuditDistribution": round_ix.audit_distribution,
    "UploadDistributionList": round_ix.upload_distribution_list,
    "SubmitDistributionList": round_ix.submit_distribution_list,
    "Payout": round_ix.payout,
    "ClaimReward": task_ix.claim_reward,
    "SetActive": task_ix.set_active,
}


def apply(world: World, tx: dict[str, Any], slot: int) -> dict[str, Any]:
    """Apply `tx` at `slot`; its signature, if any, has been checked by the caller."""
    ix = tx["ix"]
    handler = INSTRUCTIONS.get(ix)
    if handler is None:
        raise TransactionError(f"unknown instruction {ix!r}")
    args = tx.get("args")
    if not isinstance(args, dict):
        raise TransactionError("args must be an object")
    result = handler(world, tx, args, slot)
    if "signature" in tx:
        world.signatures[tx["signature"]] = slot
        _forget_old_signatures(world, slot)
    return result


def _forget_old_signatures(world: World, slot: int) -> None:
    sigs = world.signatures
    oldest = next(iter(sigs.values()), slot)
    if oldest < slot - SIGNATURE_MEMORY_SLOTS:
        world.signatures = {k: v for k, v in sigs.items() if v >= slot - SIGNATURE_MEMORY_SLOTS}
