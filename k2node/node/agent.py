"""TaskAgent: one task as this node sees and acts on it in K2.

Reads go straight to the settlement layer; every signed action goes through the ledger so
it happens at most once per round, whoever asks for it (the task over the namespace RPC,
or the node itself: its payouts, a developer's manual call).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k2node.contract.rounds import Schedule
from k2node.contract.task_state import DISTRIBUTION_SECTIONS, PAYOUT_FAILED, SUBMISSION_SECTIONS
from k2node.contract.values import is_round, submission_problem
from k2node.crypto import Keypair, decode_pubkey
from k2node.node.ledger import Action, Ledger
from k2node.settlement.base import Settlement, TransactionError, sign_tx


class ActionError(ValueError):
    """A request the node refuses before anything is signed."""


def _round(value: Any) -> int:
    if not is_round(value):
        raise ActionError(f"round must be a non-negative integer, got {value!r}")
    return value


def _pubkey(value: Any) -> str:
    try:
        return decode_pubkey(value)
    except ValueError as exc:
        raise ActionError(str(exc)) from None


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ActionError(f"{name} must be true or false, got {value!r}")
    return value


@dataclass
class TaskAgent:
    task_id: str
    settlement: Settlement
    ledger: Ledger
    staking: Keypair
    main_pubkey: str
    base_path: Path

    @property
    def db_path(self) -> Path:
        return self.base_path / "db"

    def _signed(self, ix: str, args: dict[str, Any]) -> dict[str, Any]:
        return sign_tx(self.staking, ix, self.task_id, args, self.settlement.current_slot())

    async def _send(
        self, action: Action, round_: int, detail: str, ix: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        key = Ledger.key(self.task_id, action, round_, detail)
        return await self.ledger.send_once(key, lambda: self._signed(ix, args))

    # -- reads ---------------------------------------------------------------------------
    async def state(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.settlement.get_task_state(self.task_id, options or {})

    async def schedule(self) -> Schedule:
        return Schedule.of(await self.state())

    async def current_round(self) -> int:
        return max(0, (await self.schedule()).round_of(self.settlement.current_slot()))

    async def submission_info(self, round_: Any) -> dict[str, Any]:
        return await self.settlement.get_round_sections(
            self.task_id, _round(round_), SUBMISSION_SECTIONS
        )

    async def distribution_info(self, round_: Any) -> dict[str, Any]:
        info = await self.settlement.get_round_sections(
            self.task_id, _round(round_), DISTRIBUTION_SECTIONS
        )
        state = await self.state({"is_distribution_required": True})
        info["distributions_audit_record"] = state["distributions_audit_record"]
        return info

    async def distribution_list(self, submitter: Any, round_: Any) -> dict[str, int] | None:
        return await self.settlement.get_distribution_list(
            self.task_id, _pubkey(submitter), _round(round_)
        )

    async def _attempt(self, round_: int) -> int:
        state = await self.state({"is_distribution_required": True})
        return 1 if state["distributions_audit_record"].get(str(round_)) == PAYOUT_FAILED else 0

    # -- ledger-guarded actions --------------------------------------------------------------
    async def submit(self, value: Any, round_: Any) -> dict[str, Any]:
        round_ = _round(round_)
        problem = submission_problem(value)
        if problem is not None:
            raise ActionError(problem)
        return await self._send(
            Action.SUBMIT, round_, "", "SubmitTask", {"submission": value, "round": round_}
        )

    async def _vote(
        self, action: Action, ix: str, candidate: Any, is_valid: Any, round_: Any
    ) -> dict[str, Any]:
        round_, key = _round(round_), _pubkey(candidate)
        args = {"candidate": key, "is_valid": _flag(is_valid, "isValid"), "round": round_}
        return await self._send(action, round_, key, ix, args)

    async def audit(self, candidate: Any, is_valid: Any, round_: Any) -> dict[str, Any]:
        return await self._vote(Action.AUDIT, "AuditSubmissions", candidate, is_valid, round_)

    async def audit_distribution(
        self, candidate: Any, is_valid: Any, round_: Any
    ) -> dict[str, Any]:
        return await self._vote(
            Action.DISTRIBUTION_AUDIT, "AuditDistribution", candidate, is_valid, round_
        )

    async def _send_attempt(
        self, action: Action, round_: int, ix: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        """A step of a round's distribution, keyed by its attempt: the retry after a
        PayoutFailed is an action of its own, not a repeat of the first."""
        attempt = await self._attempt(round_)
        return await self._send(action, round_, str(attempt), ix, args)

    async def upload_distribution(self, distribution: Any, round_: Any) -> dict[str, Any]:
        round_ = _round(round_)
        if not isinstance(distribution, dict):
            raise ActionError("a distribution list must be an object {pubkey: ROE}")
        args = {"list": distribution, "round": round_}
        return await self._send_attempt(
            Action.DISTRIBUTION_UPLOAD, round_, "UploadDistributionList", args
        )

    async def submit_distribution(self, round_: Any) -> dict[str, Any]:
        round_ = _round(round_)
        args = {"round": round_}
        return await self._send_attempt(
            Action.DISTRIBUTION_SUBMIT, round_, "SubmitDistributionList", args
        )

    async def payout(self, round_: Any) -> dict[str, Any]:
        round_ = _round(round_)
        return await self._send_attempt(Action.PAYOUT, round_, "Payout", {"round": round_})

    async def stake(self, amount: int, ip_address: str) -> dict[str, Any]:
        state = await self.state({"is_stake_list_required": True})
        have = int(state["stake_list"].get(self.staking.pubkey, 0))
        if have >= max(amount, int(state["minimum_stake_amount"]), 1):
            return {"stake": have, "already": True}
        need = max(amount, int(state["minimum_stake_amount"])) - have
        return await self.settlement.send(
            self._signed("Stake", {"amount": need, "ip_address": ip_address[:64]})
        )

    async def claim(self) -> dict[str, Any]:
        try:
            return await self.settlement.send(self._signed("ClaimReward", {"to": self.main_pubkey}))
        except TransactionError as exc:
            if "nothing to claim" in str(exc):
                return {"claimed": 0}
            raise
