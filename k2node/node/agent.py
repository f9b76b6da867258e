"""TaskAgent: one task as this node sees and acts on it in K2.

Reads go straight to the settlement layer; every signed action goes through the ledger so
it happens at most once per round, whoever asks for it (the task over the namespace RPC,
or the node itself: its payouts, a developer's manual call). Actions are K2 wire
transactions: the main wallet pays their fees, the staking key signs for the task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from k2node.contract.rounds import Schedule
from k2node.contract.task_state import DISTRIBUTION_SECTIONS, PAYOUT_FAILED, SUBMISSION_SECTIONS
from k2node.contract.values import is_int, is_round, submission_problem
from k2node.crypto import Keypair, decode_pubkey
from k2node.node.ledger import Action, Ledger
from k2node.settlement import transactions, wire
from k2node.settlement.base import Settlement
from k2node.settlement.wire import Ix

# What a task may have the node sign itself: its part in the rounds, nothing that moves funds.
TASK_BUILT = frozenset(
    {
        Ix.SUBMIT_TASK,
        Ix.AUDIT_SUBMISSIONS,
        Ix.AUDIT_DISTRIBUTION,
        Ix.UPLOAD_DISTRIBUTION_LIST,
        Ix.SUBMIT_DISTRIBUTION_LIST,
        Ix.PAYOUT,
    }
)


class ActionError(ValueError):
    """A request the node refuses before anything is signed."""


def _round(value: Any) -> int:
    if not is_round(value):
        raise ActionError(f"round must be a non-negative integer, got {value!r}")
    return value


def _pubkey(value: Any) -> Pubkey:
    try:
        return Pubkey.from_string(decode_pubkey(value))
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
    main: Keypair
    base_path: Path
    _stake_pot: Pubkey | None = field(default=None, init=False, repr=False)

    @property
    def db_path(self) -> Path:
        return self.base_path / "db"

    @property
    def _task(self) -> Pubkey:
        return Pubkey.from_string(self.task_id)

    @property
    def _me(self) -> Pubkey:
        return Pubkey.from_string(self.staking.pubkey)

    async def _signed(self, instructions: list[Instruction]) -> wire.Signed:
        return await transactions.signed_now(
            self.settlement, instructions, self.main, [self.staking]
        )

    async def _send(
        self, action: Action, round_: int, detail: str, instructions: list[Instruction]
    ) -> dict[str, Any]:
        key = Ledger.key(self.task_id, action, round_, detail)
        return await self.ledger.send_once(key, lambda: self._signed(instructions))

    async def stake_pot(self) -> Pubkey:
        if self._stake_pot is None:
            self._stake_pot = Pubkey.from_string((await self.state())["stake_pot_account"])
        return self._stake_pot

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
        info["distributions_audit_record"] = await self._audit_record()
        return info

    async def distribution_list(self, submitter: Any, round_: Any) -> dict[str, int] | None:
        return await self.settlement.get_distribution_list(
            self.task_id, str(_pubkey(submitter)), _round(round_)
        )

    async def _audit_record(self) -> Any:
        return await self.settlement.get_section(self.task_id, "distributions_audit_record")

    async def _attempt(self, round_: int) -> int:
        return 1 if (await self._audit_record()).get(str(round_)) == PAYOUT_FAILED else 0

    # -- ledger-guarded actions --------------------------------------------------------------
    async def submit(self, value: Any, round_: Any) -> dict[str, Any]:
        round_ = _round(round_)
        problem = submission_problem(value)
        if problem is not None:
            raise ActionError(problem)
        ix = transactions.round_action(
            Ix.SUBMIT_TASK, self._task, self._me, submission=value, round=round_
        )
        return await self._send(Action.SUBMIT, round_, "", [ix])

    async def _vote(
        self, action: Action, ix: Ix, candidate: Any, is_valid: Any, round_: Any
    ) -> dict[str, Any]:
        round_, key = _round(round_), _pubkey(candidate)
        vote = transactions.vote(ix, self._task, self._me, key, _flag(is_valid, "isValid"), round_)
        return await self._send(action, round_, str(key), [vote])

    async def audit(self, candidate: Any, is_valid: Any, round_: Any) -> dict[str, Any]:
        return await self._vote(Action.AUDIT, Ix.AUDIT_SUBMISSIONS, candidate, is_valid, round_)

    async def audit_distribution(
        self, candidate: Any, is_valid: Any, round_: Any
    ) -> dict[str, Any]:
        return await self._vote(
            Action.DISTRIBUTION_AUDIT, Ix.AUDIT_DISTRIBUTION, candidate, is_valid, round_
        )

    async def upload_distribution(self, distribution: Any, round_: Any) -> dict[str, Any]:
        """The list's JSON in 508-byte chunks, a transaction each, each sent once."""
        round_ = _round(round_)
        if not isinstance(distribution, dict):
            raise ActionError("a distribution list must be an object {pubkey: ROE}")
        text = json.dumps(distribution, separators=(",", ":")).encode()
        attempt = await self._attempt(round_)
        pieces = transactions.upload_list(self._task, self._me, text, round_)
        for index, piece in enumerate(pieces):
            await self._send(Action.DISTRIBUTION_UPLOAD, round_, f"{attempt}/{index}", [piece])
        return {"chunks": len(pieces)}

    async def submit_distribution(self, round_: Any) -> dict[str, Any]:
        round_ = _round(round_)
        attempt = await self._attempt(round_)
        ix = transactions.round_action(
            Ix.SUBMIT_DISTRIBUTION_LIST, self._task, self._me, round=round_
        )
        return await self._send(Action.DISTRIBUTION_SUBMIT, round_, str(attempt), [ix])

    async def payout(self, round_: Any) -> dict[str, Any]:
        """Keyed by its attempt: the retry after a PayoutFailed is an action of its own."""
        round_ = _round(round_)
        attempt = await self._attempt(round_)
        ix = transactions.with_stake_pot(
            Ix.PAYOUT, self._task, self._me, await self.stake_pot(), round=round_
        )
        return await self._send(Action.PAYOUT, round_, str(attempt), [ix])

    # -- the node's own, not per round ------------------------------------------------------
    async def stake(self, amount: int, ip_address: str) -> dict[str, Any]:
        state = await self.state({"is_stake_list_required": True})
        have = int(state["stake_list"].get(self.staking.pubkey, 0))
        if have >= max(amount, int(state["minimum_stake_amount"]), 1):
            return {"stake": have, "already": True}
        need = max(amount, int(state["minimum_stake_amount"])) - have
        instructions = transactions.stake(
            wire.signer(self.main).pubkey(),
            self._me,
            self._task,
            await self.stake_pot(),
            need,
            ip_address[:64],
            await transactions.staking_lamports(self.settlement, self.staking.pubkey),
        )
        signature = await self.settlement.send((await self._signed(instructions)).wire)
        return {"stake": have + need, "signature": signature}

    async def claim(self) -> dict[str, Any]:
        state = await self.state({"is_available_balances_required": True})
        available = int(state["available_balances"].get(self.staking.pubkey, 0))
        if available <= 0:
            return {"claimed": 0}
        main = Pubkey.from_string(self.main.pubkey)
        ix = transactions.claim(self._task, self._me, await self.stake_pot(), main)
        signature = await self.settlement.send((await self._signed([ix])).wire)
        return {"claimed": available, "signature": signature}

    # -- transactions a task builds ----------------------------------------------------------
    async def sign_task_transaction(self, raw: bytes) -> str:
        """Sign and send a transaction the task built, if it only takes part in this task's
        rounds (no instruction that moves the node's funds: staking, withdrawing, claiming,
        funding), exactly as the node itself would build it, with no signer but this node's
        main wallet (its fee payer) and staking key."""
        try:
            tx = Transaction.from_bytes(raw)
            tx.sanitize()
        except Exception as exc:  # solders raises its own kinds for every malformation
            raise ActionError(f"not a transaction: {exc}") from None
        message = tx.message
        keys = message.account_keys
        main, me = Pubkey.from_string(self.main.pubkey), self._me
        if keys[0] != main:
            raise ActionError("the node's main wallet must pay the fee (feePayer)")
        for compiled in message.instructions:
            if keys[compiled.program_id_index] != wire.PROGRAM_ID:
                raise ActionError("a task's transaction may only call the task program")
            try:
                ix, fields = wire.decode(compiled.data)
                roles = wire.roles(ix, [keys[i] for i in compiled.accounts])
            except wire.WireError as exc:
                raise ActionError(str(exc)) from None
            if ix not in TASK_BUILT:
                raise ActionError(f"a task may not have the node sign {ix.name}")
            if roles["task"] != self._task or roles.get("signer") != me:
                raise ActionError("a task's transaction may only act for this task and node")
            # the very instruction the node would build: same accounts, same flags, no more
            expected = wire.instruction(ix, fields, roles)
            flags = [
                (keys[i], message.is_signer(i), wire.is_writable(message, i))
                for i in compiled.accounts
            ]
            if flags != [(m.pubkey, m.is_signer, m.is_writable) for m in expected.accounts]:
                raise ActionError(f"{ix.name}: its accounts are not the ones the node sends")
        required = set(keys[: message.header.num_required_signatures])
        if not required <= {main, me}:
            raise ActionError("the node signs only with its own keys")
        keypairs = (wire.signer(self.main), wire.signer(self.staking))
        signers = [k for k in keypairs if k.pubkey() in required]
        signed = Transaction(signers, message, message.recent_blockhash)
        return await self.settlement.send(bytes(signed))

    async def transfer(self, to: Any, lamports: Any) -> str:
        """Move lamports from the operator's main wallet (when the operator allows it)."""
        if not is_int(lamports) or lamports <= 0:
            raise ActionError(f"amount must be a positive number of ROE, got {lamports!r}")
        main = wire.signer(self.main)
        move = transfer(
            TransferParams(from_pubkey=main.pubkey(), to_pubkey=_pubkey(to), lamports=lamports)
        )
        signed = await transactions.signed_now(self.settlement, [move], main, [])
        return await self.settlement.send(signed.wire)
