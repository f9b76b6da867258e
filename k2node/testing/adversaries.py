"""Cheating nodes for a simulation: the author's task with one behaviour changed.

Each adversary is a mixin put in front of the task's own class, so everything it does not
change is the author's code. What an adversary needs to know beyond its task (virtual time,
the schedule, its fellow colluders) is its `plot`, set once the network is up.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from k2node.contract.rounds import Schedule
from k2node.contract.task_state import in_round
from k2node.contract.votes import audit_sample
from k2node.settlement.local import LocalK2
from k2node.task.core import CoreLogic
from k2node.task.namespace import NamespaceError
from k2node.testing.clock import INTO_SLOT_S, VirtualClock, sleep_in_phase


class Role(StrEnum):
    HONEST = "honest"
    LIAR = "liar"  # submits wrong values
    SILENT = "silent"  # submits nothing and takes no part in audits
    LATE = "late"  # submits after the window has closed
    GREEDY = "greedy-distributor"  # its distribution list pays itself the whole bounty
    ACCUSER = "false-accuser"  # votes against every node it audits
    COLLUDER = "colluder"  # submits wrong values, votes for its fellows' lies


@dataclass
class Plot:
    clock: VirtualClock
    k2: LocalK2
    schedule: Schedule
    colluders: frozenset[str]
    rng: random.Random

    async def sleep_until_slot(self, slot: int) -> None:
        await sleep_in_phase(self.clock, self.k2.wall_time_of_slot(slot) + INTO_SLOT_S)


class Adversary(CoreLogic):
    plot: Plot


class Liar(Adversary):
    async def fetch_submission(self, round_: int) -> str | None:
        # (a devnet's lying node has no plot: its own dice)
        rng = self.plot.rng if hasattr(self, "plot") else random
        return f"lie-{round_}-{rng.getrandbits(64):016x}"


class Silent(Adversary):
    async def submit_task(self, round_: int) -> Any:
        return None

    async def audit_task(self, round_: int) -> None:
        return None

    async def submit_distribution_list(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> bool:
        return False

    async def audit_distribution(self, round_: int) -> None:
        return None


class Late(Adversary):
    async def submit_task(self, round_: int) -> Any:
        await self.plot.sleep_until_slot(self.plot.schedule.submission_of(round_).end)
        return await super().submit_task(round_)


class Greedy(Adversary):
    async def distribution_to_submit(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> dict[str, int]:
        """Every node in the list, as the rule wants, and the whole bounty to itself."""
        honest = await super().distribution_to_submit(round_, is_previous_round_failed)
        ns = self.namespace
        greedy = dict.fromkeys(honest, 0)
        greedy[await ns.get_submitter_pubkey()] = int(
            (await ns.get_task_state({}))["bounty_amount_per_round"]
        )
        return greedy


class Accuser(Adversary):
    async def audit_task(self, round_: int) -> None:
        ns = self.namespace
        info = await ns.get_task_submission_info(round_)
        me = await ns.get_submitter_pubkey()
        for key in audit_sample(in_round(info, "submissions", round_), me, self.audit_rng):
            await _vote(self, key, False, round_)


class Colluder(Liar):
    async def validate_node(self, submission_value: str, round_: int, submitter_key: str) -> bool:
        if submitter_key in self.plot.colluders:
            return True
        return await super().validate_node(submission_value, round_, submitter_key)

    async def audit_task(self, round_: int) -> None:
        await super().audit_task(round_)
        # late in the window, once honest auditors have raised their triggers: vote for
        # every fellow accused
        window = self.plot.schedule.audit_of(round_)
        await self.plot.sleep_until_slot(window.end - 1)
        ns = self.namespace
        info = await ns.get_task_submission_info(round_)
        me = await ns.get_submitter_pubkey()
        for key in in_round(info, "submissions_audit_trigger", round_):
            if key in self.plot.colluders and key != me:
                await _vote(self, key, True, round_)


async def _vote(core: CoreLogic, key: str, is_valid: bool, round_: int) -> None:
    with contextlib.suppress(NamespaceError):  # voted before, or too late: it shrugs
        await core.namespace.audit_submission(key, is_valid, round_)


MIXINS: dict[Role, type[Adversary]] = {
    Role.LIAR: Liar,
    Role.SILENT: Silent,
    Role.LATE: Late,
    Role.GREEDY: Greedy,
    Role.ACCUSER: Accuser,
    Role.COLLUDER: Colluder,
}


def playing(role: Role, task: type[CoreLogic]) -> type[CoreLogic]:
    """The task's class with `role`'s behaviour in front of it."""
    if role is Role.HONEST:
        return task
    return type(f"{MIXINS[role].__name__}{task.__name__}", (MIXINS[role], task), {})
