"""The embedded K2 of a machine whose power is cut (tests/powercut.py), telling a journal
kept outside the machine what it was sent and what it answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from solders.transaction import Transaction

from k2node.node.ledger import Action
from k2node.settlement import wire
from k2node.settlement.base import BlockhashExpired, DuplicateTransaction, TransactionError
from k2node.settlement.local import LocalK2
from k2node.settlement.program import PROGRAM_NAMES
from tests.powercut import Machine, PowerCut

# What the ledger guards (each signed once per round, and candidate, chunk, attempt), and
# under which of its keys.
LEDGERED = {
    "SubmitTask": Action.SUBMIT,
    "AuditSubmissions": Action.AUDIT,
    "AuditDistribution": Action.DISTRIBUTION_AUDIT,
    "UploadDistributionList": Action.DISTRIBUTION_UPLOAD,
    "SubmitDistributionList": Action.DISTRIBUTION_SUBMIT,
    "Payout": Action.PAYOUT,
}

ActionKey = tuple[str, str, int | None, str]  # instruction, signer, round, detail


@dataclass(frozen=True)
class Sent:
    """One transaction as it reached the K2, before any cut."""

    signature: str
    actions: tuple[ActionKey, ...]
    life: int


@dataclass
class Journal:
    """What was seen of the machine from outside it, over all its lives."""

    sent: list[Sent] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)  # the K2 said applied, this life
    airdrops: list[tuple[str, int]] = field(default_factory=list)  # answered, this life
    refused: list[tuple[tuple[ActionKey, ...], str]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # warnings, errors while up
    history: dict[int, bytes] = field(default_factory=dict)  # the K2's log as kept, by seq
    records: dict[int, str] = field(default_factory=dict)  # payout records seen on disk
    paid: dict[int, dict[str, int]] = field(default_factory=dict)  # the lists paid, by round


class CutK2(LocalK2):
    """The embedded K2 of the machine, telling the journal what it was sent and answered."""

    journal: Journal
    machine: Machine
    life = 0

    def actions(self, tx: Transaction) -> tuple[ActionKey, ...]:
        """What a transaction does, by the ledger's keys (the attempt: as the K2 is now)."""
        found: list[ActionKey] = []
        message = tx.message
        for compiled in message.instructions:
            if message.account_keys[compiled.program_id_index] != wire.PROGRAM_ID:
                continue
            ix, fields = wire.decode(compiled.data)
            roles = wire.roles(ix, [message.account_keys[i] for i in compiled.accounts])
            name, signer = PROGRAM_NAMES[ix], str(roles.get("signer") or roles["payer"])
            round_ = fields.get("round")
            detail = str(roles.get("candidate", ""))
            if name in ("UploadDistributionList", "SubmitDistributionList", "Payout"):
                private = self._world.private.get(str(roles["task"]))
                attempt = private.attempts.get(str(round_), 0) if private else 0
                index = f"/{wire.unchunk(fields['chunk'])[0]}" if "chunk" in fields else ""
                detail = f"{attempt}{index}"
            found.append((name, signer, round_, detail))
        return tuple(found)

    async def send(self, raw: bytes) -> str:
        if self.machine.down:  # (between the cut and the end of the life)
            raise PowerCut("the K2 is off")
        tx = Transaction.from_bytes(raw)
        actions, signature = self.actions(tx), str(tx.signatures[0])
        self.journal.sent.append(Sent(signature, actions, self.life))
        try:
            await super().send(raw)
        except DuplicateTransaction:
            self.journal.answered.add(signature)  # "already processed": applied, on disk
            raise
        except BlockhashExpired:
            raise
        except TransactionError as exc:
            self.journal.refused.append((actions, str(exc)))
            raise
        self.journal.answered.add(signature)
        return signature

    async def transaction_applied(self, signature: str) -> bool:
        applied = await super().transaction_applied(signature)
        if applied:
            self.journal.answered.add(signature)
        return applied

    async def airdrop(self, pubkey: str, amount: int, signature: str | None = None) -> None:
        await super().airdrop(pubkey, amount, signature)
        self.journal.airdrops.append((pubkey, amount))
