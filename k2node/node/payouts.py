"""Payouts and the watchdog: what a round's opening means for a task, beside its timers.

The node that submitted a round's distribution list triggers its payout once the audit
window has closed; any staked node does it two rounds later if that node is gone. Every settled
payout is logged once, with this node's reward or slash. The watchdog restarts a task whose
own latest submission has fallen more than a few rounds behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k2node.contract.task_state import PAYOUT_SUCCESSFUL, in_round
from k2node.node.agent import TaskAgent
from k2node.node.events import EventHub
from k2node.node.ledger import CONFIRMED, Action, Ledger
from k2node.settlement.base import TransactionError

# A payout of round n still undone when round n+4 opens (two rounds after its payout
# window) is triggered by anyone.
ABSENT_SUBMITTER_ROUNDS = 4
# Settled payouts are looked for this many rounds back.
SETTLED_LOOKBACK_ROUNDS = 5
# The watchdog restarts a task whose latest submission is older than this many rounds.
WATCHDOG_ROUNDS = 3


class Payouts:
    def __init__(self, agent: TaskAgent, events: EventHub) -> None:
        self._agent = agent
        self._events = events

    @property
    def task_id(self) -> str:
        return self._agent.task_id

    async def trigger_if_mine(self, round_: int) -> None:
        """Trigger the payout of `round_` if this node submitted its distribution list."""
        info = await self._agent.distribution_info(round_)
        submitters = in_round(info, "distribution_rewards_submission", round_)
        if info["distributions_audit_record"].get(str(round_)) == PAYOUT_SUCCESSFUL:
            return
        if not submitters or list(submitters)[-1] != self._agent.staking.pubkey:
            return
        if await self._trigger(round_) is not None:
            after = await self._agent.distribution_info(round_)
            record = after["distributions_audit_record"].get(str(round_))
            self._events.emit("payout_triggered", task_id=self.task_id, round=round_, record=record)

    async def _trigger(self, round_: int) -> dict[str, Any] | None:
        try:
            return await self._agent.payout(round_)
        except TransactionError as exc:
            self._events.warn("payout_refused", task_id=self.task_id, round=round_, error=str(exc))
            return None

    async def settle(self, r: int, state: dict[str, Any]) -> None:
        """Log each settled payout once, with this node's reward or slash; and trigger a
        payout its submitter left undone for two rounds (any staked node may). `submitted`
        says whether this node's own submission of that round was confirmed: a node that
        started late or missed the window is settled with nothing, which is not a slash."""
        records = state.get("distributions_audit_record", {})
        lists = state.get("distribution_rewards_submission", {})
        for n in range(max(0, r - SETTLED_LOOKBACK_ROUNDS), r - 2):
            submitters = list(lists.get(str(n), {}))
            record = records.get(str(n))
            if record is None and submitters and n <= r - ABSENT_SUBMITTER_ROUNDS:
                if await self._trigger(n) is not None:
                    self._events.emit(
                        "payout_triggered_for_absent_submitter", task_id=self.task_id, round=n
                    )
            elif record is not None and submitters:
                await self._log_settled(n, record, submitters[-1])

    async def _log_settled(self, n: int, record: str, submitter: str) -> None:
        if not self._agent.ledger.once(f"logged/{self.task_id}/{n:010d}/payout-{record}"):
            return
        me = self._agent.staking.pubkey
        amount = 0
        if record == PAYOUT_SUCCESSFUL:
            dist = await self._agent.distribution_list(submitter, n) or {}
            amount = int(dist.get(me, 0))
        mine = self._agent.ledger.get(Ledger.key(self.task_id, Action.SUBMIT, n)) or {}
        self._events.emit(
            "payout_settled",
            task_id=self.task_id,
            round=n,
            staking_key=me,
            outcome=record,
            submitted=mine.get("status") == CONFIRMED,
            amount=amount,
            reward=max(amount, 0),
            slash=max(-amount, 0),
        )


class Watchdog:
    def __init__(self, agent: TaskAgent, restart: Callable[[str], None]) -> None:
        self._agent = agent
        self._restart = restart
        self._since_round: int | None = None  # the round watched from (start or restart)
        # the newest round seen confirmed: confirmations only grow, so the ledger is read
        # again only when this one would be too old (not every round of every node)
        self._latest: int | None = None

    def check(self, r: int) -> None:
        if self._since_round is None:
            self._since_round = r
        if r - self._since_round <= WATCHDOG_ROUNDS + 1:
            return
        if self._latest is not None and r - 1 - self._latest <= WATCHDOG_ROUNDS:
            return
        latest = self._agent.ledger.latest_confirmed_round(self._agent.task_id, Action.SUBMIT)
        self._latest = latest
        if latest is None or r - 1 - latest > WATCHDOG_ROUNDS:
            self._since_round = r
            self._restart(f"latest submission is for round {latest}, now round {r}")
