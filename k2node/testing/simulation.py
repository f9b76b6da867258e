"""`k2node simulate`: N copies of a task, some of them cheating, through R rounds in virtual
time; what each round decided, and whether honest nodes ever lost or cheaters ever gained.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k2node.contract.task_state import PAYOUT_SUCCESSFUL, SUBMISSION_SECTIONS
from k2node.contract.units import ROE_PER_KOII
from k2node.node import heap
from k2node.task.core import CoreLogic
from k2node.testing.adversaries import Adversary, Plot, Role, playing
from k2node.testing.harness import TaskHarness
from k2node.testing.tasks import TaskSource, core_of

# A round's outcome is final once its retry could have been paid: four rounds on.
SETTLED_AFTER = 4
# The collector runs between rounds (see `collected_between_rounds`), a full collection
# every this many.
FULL_COLLECTION_EVERY = 10


@contextmanager
def collected_between_rounds() -> Iterator[Callable[[int], object]]:
    """Python's automatic collector off while the simulation runs, and a collection after
    each round instead (the young objects; all of them every FULL_COLLECTION_EVERY rounds),
    with what the start made frozen out of its sight: a thousand nodes keep a large heap,
    and the automatic full collections of it took a sixth of the run."""
    was_enabled = gc.isenabled()
    heap.settle()
    gc.disable()
    try:
        yield lambda r: gc.collect(2 if r % FULL_COLLECTION_EVERY == 0 else 1)
    finally:
        heap.unsettle()
        if was_enabled:
            gc.enable()


def assign_roles(nodes: int, mix: dict[Role, float], rng: random.Random) -> list[Role]:
    """Each adversary's share of the nodes (rounded, at least one for a share above 0),
    placed at random; the rest honest."""
    counts = {role: max(1, round(share * nodes)) for role, share in mix.items() if share > 0}
    if sum(counts.values()) > nodes:
        raise ValueError(f"the adversaries' shares add up to more than the {nodes} nodes")
    roles = [role for role, count in counts.items() for _ in range(count)]
    roles += [Role.HONEST] * (nodes - len(roles))
    rng.shuffle(roles)
    return roles


@dataclass
class RoundReport:
    round: int
    submissions: int
    audit_triggers: int
    votes_against: int  # a trigger counts as its raiser's vote against
    votes_for: int
    distributors: list[str]  # role:key of each list submitted, the retry's last
    record: str | None
    retried: bool
    rewarded: dict[str, int] = field(default_factory=dict)  # role -> nodes paid
    slashed: dict[str, int] = field(default_factory=dict)  # role -> nodes slashed
    slashed_roe: dict[str, int] = field(default_factory=dict)  # role -> total slashed
    paid_roe: int = 0


@dataclass
class SimReport:
    nodes: int
    rounds: int
    seed: int | None
    roles: dict[str, int]
    per_round: list[RoundReport]
    rewards_roe: dict[str, int]  # role -> total
    slashes_roe: dict[str, int]
    honest_slashed: list[dict[str, Any]]
    cheaters_gained: list[dict[str, Any]]
    honest_unpaid: list[dict[str, Any]]  # submitted, in a paid list, and given 0
    rounds_unpaid: list[int]  # no list paid: everyone's work went unpaid
    payout_retries: int
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sound(self) -> bool:
        """The two answers an author needs are both no: no honest node was slashed, and
        cheating never paid off."""
        return not self.honest_slashed and not self.cheaters_gained


class _Tally:
    def __init__(self, role_of: dict[str, Role]) -> None:
        self.role_of = role_of
        self.rewards: dict[str, int] = dict.fromkeys(map(str, Role), 0)
        self.slashes: dict[str, int] = dict.fromkeys(map(str, Role), 0)
        self.honest_slashed: list[dict[str, Any]] = []
        self.cheaters_gained: list[dict[str, Any]] = []
        self.honest_unpaid: list[dict[str, Any]] = []

    def role(self, key: str) -> str:
        return str(self.role_of.get(key, "unknown"))

    async def round(self, h: TaskHarness, n: int, records: dict[str, Any]) -> RoundReport:
        k2, task_id = h.k2, h.task_id
        info = await k2.get_round_sections(task_id, n, (*SUBMISSION_SECTIONS,))
        dist = await k2.get_round_sections(task_id, n, ("distribution_rewards_submission",))
        triggers = info["submissions_audit_trigger"][str(n)]
        against = sum(1 + sum(not v["is_valid"] for v in t["votes"]) for t in triggers.values())
        in_favour = sum(v["is_valid"] for t in triggers.values() for v in t["votes"])
        submitters = list(dist["distribution_rewards_submission"][str(n)])
        record = records.get(str(n))
        report = RoundReport(
            n,
            len(info["submissions"][str(n)]),
            len(triggers),
            against,
            in_favour,
            [f"{self.role(k)}:{k[:8]}" for k in submitters],
            record,
            len(submitters) > 1,
        )
        if record != PAYOUT_SUCCESSFUL or not submitters:
            return report
        paid_by = submitters[-1]
        if self.role_of.get(paid_by) == Role.GREEDY:
            self.cheaters_gained.append({"round": n, "role": str(Role.GREEDY), "key": paid_by})
        for key, amount in (await k2.get_distribution_list(task_id, paid_by, n) or {}).items():
            role = self.role(key)
            if amount > 0:
                report.rewarded[role] = report.rewarded.get(role, 0) + 1
                report.paid_roe += amount
                self.rewards[role] = self.rewards.get(role, 0) + amount
                if role in (Role.LIAR, Role.COLLUDER, Role.SILENT, Role.LATE):
                    self.cheaters_gained.append({"round": n, "role": role, "key": key})
            elif amount == 0 and role == Role.HONEST:
                self.honest_unpaid.append({"round": n, "key": key})
            elif amount < 0:
                report.slashed[role] = report.slashed.get(role, 0) + 1
                report.slashed_roe[role] = report.slashed_roe.get(role, 0) - amount
                self.slashes[role] = self.slashes.get(role, 0) - amount
                if role == Role.HONEST:
                    self.honest_slashed.append({"round": n, "key": key, "roe": -amount})
        return report


async def simulate(
    task: TaskSource,
    folder: Path,
    nodes: int,
    rounds: int,
    mix: dict[Role, float],
    seed: int | None = None,
    config: Path | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
) -> SimReport:
    started = time.perf_counter()
    if nodes < 1 or rounds < 1:
        raise ValueError("a simulation needs at least one node and one round")
    rng = random.Random(seed)
    roles = assign_roles(nodes, mix, rng)
    task_class = type(core_of(task))

    def core_for(i: int) -> CoreLogic:
        core = playing(roles[i], task_class)()
        core.audit_rng = random.Random(f"{seed}:audit:{i}" if seed is not None else None)
        return core

    async with TaskHarness.start(
        task_class, folder, nodes, config=config, seed=seed, core_for=core_for
    ) as h:
        assert h.schedule is not None
        role_of = {node.staking_key: roles[node.index] for node in h.nodes}
        colluders = frozenset(k for k, r in role_of.items() if r == Role.COLLUDER)
        for node in h.nodes:
            if isinstance(node.core, Adversary):
                plot_rng = random.Random(f"{seed}:plot:{node.index}" if seed is not None else None)
                node.core.plot = Plot(h.clock, h.k2, h.schedule, colluders, plot_rng)
        tally = _Tally(role_of)
        reports: list[RoundReport] = []
        with collected_between_rounds() as collect:
            for r in range(1, rounds + SETTLED_AFTER):  # round n is reported in round n + 4
                await h.advance_to_round(r)
                collect(r)
                n = r - SETTLED_AFTER
                if 0 <= n < rounds:
                    records = (
                        await h.k2.get_task_state(h.task_id, {"is_distribution_required": True})
                    )["distributions_audit_record"]
                    reports.append(await tally.round(h, n, records))
                    if on_round is not None:
                        on_round(reports[-1])
    counts: dict[str, int] = {}
    for role in roles:
        counts[str(role)] = counts.get(str(role), 0) + 1
    return SimReport(
        nodes,
        rounds,
        seed,
        counts,
        reports,
        {k: v for k, v in tally.rewards.items() if k in counts},
        {k: v for k, v in tally.slashes.items() if k in counts},
        tally.honest_slashed,
        tally.cheaters_gained,
        tally.honest_unpaid,
        [rep.round for rep in reports if rep.record != PAYOUT_SUCCESSFUL],
        sum(rep.retried for rep in reports),
        round(time.perf_counter() - started, 3),
    )


def koii(roe: int) -> str:
    return f"{roe / ROE_PER_KOII:,.4f}"
