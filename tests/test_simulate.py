"""`k2node simulate`: the example task among cheaters, each kind alone and all together."""

from __future__ import annotations

import json
import math
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k2node.contract.distribution import SLASH_SHARE
from k2node.contract.task_state import PAYOUT_SUCCESSFUL
from k2node.contract.units import ROE_PER_KOII
from k2node.examples.hello_task import HelloTask
from k2node.testing.adversaries import Role
from k2node.testing.simulation import SimReport, assign_roles, simulate
from tests.conftest import REPO

NODES, ROUNDS = 12, 6
STAKE = 1 * ROE_PER_KOII  # the example's minimum stake, what each simulated node stakes
ALL_TOGETHER = {
    Role.LIAR: 0.1,
    Role.SILENT: 0.1,
    Role.LATE: 0.1,
    Role.GREEDY: 0.1,
    Role.ACCUSER: 0.1,
    Role.COLLUDER: 0.2,
}


async def _run(tmp_path: Path, mix: dict[Role, float], seed: int = 3) -> SimReport:
    return await simulate(HelloTask, tmp_path, NODES, ROUNDS, mix, seed)


def _never_gained_or_lost_honestly(report: SimReport) -> None:
    assert report.honest_slashed == []
    assert report.cheaters_gained == []
    assert report.slashes_roe.get(Role.HONEST, 0) == 0
    assert report.rewards_roe[Role.HONEST] > 0
    for rep in report.per_round:
        assert rep.record == PAYOUT_SUCCESSFUL, rep


# Colluders outvote the honest auditors of a fellow when few of those sample it (five
# samples each): two of twelve cannot, three sometimes can (below).
SHARES = {role: 2 / NODES if role is Role.COLLUDER else 3 / NODES for role in Role}


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.HONEST])
async def test_each_adversary_alone(tmp_path: Path, role: Role) -> None:
    report = await _run(tmp_path, {role: SHARES[role]})
    count = report.roles[role]
    assert count == round(SHARES[role] * NODES) and report.roles[Role.HONEST] == NODES - count
    _never_gained_or_lost_honestly(report)
    first = report.per_round[0]
    if role in (Role.LIAR, Role.COLLUDER):
        # caught in round 0 and slashed 70% of its stake (a colluder whose fellow's vote
        # evened the count is neither paid nor slashed); never paid
        caught = first.slashed[role]
        assert caught == count if role is Role.LIAR else 1 <= caught <= count
        assert first.slashed_roe[role] == caught * math.floor(STAKE * SLASH_SHARE)
        assert report.rewards_roe.get(role, 0) == 0
    if role in (Role.SILENT, Role.LATE):
        assert first.submissions == NODES - count
        assert report.rewards_roe.get(role, 0) == report.slashes_roe.get(role, 0) == 0
    if role is Role.GREEDY:
        greedy_first = [r for r in report.per_round if r.distributors[0].startswith(role)]
        assert greedy_first, "no greedy node was selected: choose another seed"
        for rep in greedy_first:  # voted down, and the retry by another node paid the round
            assert rep.retried and not rep.distributors[-1].startswith(role), rep
    if role is Role.ACCUSER:
        assert sum(r.audit_triggers for r in report.per_round) > 0  # they did accuse


async def test_enough_colluders_gain_and_the_report_says_so(tmp_path: Path) -> None:
    report = await _run(tmp_path, {Role.COLLUDER: 5 / NODES})
    assert report.cheaters_gained, "five colluders of twelve were never paid for a lie"
    assert {g["role"] for g in report.cheaters_gained} == {Role.COLLUDER}
    assert report.rewards_roe[Role.COLLUDER] > 0


async def test_all_adversaries_together(tmp_path: Path) -> None:
    report = await _run(tmp_path, ALL_TOGETHER)
    assert set(report.roles) == {str(r) for r in Role}
    _never_gained_or_lost_honestly(report)
    liars = report.roles[Role.LIAR] + report.roles[Role.COLLUDER]
    first = report.per_round[0]
    assert first.slashed.get(Role.LIAR, 0) + first.slashed.get(Role.COLLUDER, 0) == liars


async def test_the_same_seed_gives_the_same_report(tmp_path: Path) -> None:
    one = (await _run(tmp_path / "a", ALL_TOGETHER, seed=11)).to_json()
    two = (await _run(tmp_path / "b", ALL_TOGETHER, seed=11)).to_json()
    one.pop("elapsed_s"), two.pop("elapsed_s")
    assert one == two


def test_roles_are_placed_by_share() -> None:
    roles = assign_roles(10, {Role.LIAR: 0.3, Role.SILENT: 0.01}, random.Random(1))
    assert roles.count(Role.LIAR) == 3 and roles.count(Role.SILENT) == 1
    assert roles.count(Role.HONEST) == 6
    with pytest.raises(ValueError, match="more than the 4 nodes"):
        assign_roles(4, {Role.LIAR: 0.8, Role.SILENT: 0.5}, random.Random(1))


HELLO = "k2node/examples/hello_task.py:HelloTask"


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own (it sets up logging for the whole process)."""
    return subprocess.run(
        [sys.executable, "-m", "k2node", "simulate", HELLO, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_command_json() -> None:
    run = _simulate("--nodes", "4", "--rounds", "2", "--liars", "0.25", "--seed", "5", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr == ""  # on a pipe: the report alone, no bar
    report = json.loads(run.stdout)
    assert report["nodes"] == 4 and report["rounds"] == 2 and report["seed"] == 5
    assert report["roles"] == {"liar": 1, "honest": 3}
    assert [r["round"] for r in report["per_round"]] == [0, 1]
    assert report["honest_slashed"] == [] and report["cheaters_gained"] == []


@pytest.mark.skipif(shutil.which("script") is None, reason="no `script` to give it a terminal")
def test_command_json_on_a_terminal_counts_the_rounds_on_a_bar() -> None:
    args = [sys.executable, "-m", "k2node", "simulate", HELLO, "--nodes", "4", "--rounds", "3"]
    command = shlex.join([*args, "--seed", "5", "--json"])
    run = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    shown = run.stdout
    assert "simulating" in shown and "━" in shown and "3/3" in shown
    assert '"rounds": 3' in shown  # and the report after it


def test_command_text() -> None:
    run = _simulate("--nodes", "3", "--rounds", "1", "--seed", "1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "round 0: 3 submissions" in run.stdout
    assert "honest nodes slashed: never" in run.stdout
    assert "cheating paid off: never" in run.stdout


def test_check_fails_when_cheating_pays_off() -> None:
    run = _simulate("--nodes", "12", "--rounds", "6", "--colluders", "0.42", "--seed", "3",
                    "--check")  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:]
    assert "cheating paid off: yes" in run.stdout
    honest = _simulate("--nodes", "4", "--rounds", "2", "--liars", "0.25", "--seed", "5", "--check")
    assert honest.returncode == 0, honest.stdout[-2000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--liars", "1.5"], "--liars must be a share from 0 to 1"),
        (["--liars", "0.7", "--silent", "0.7"], "add up to more than"),
        (["--nodes", "0"], "at least one node"),
    ],
)
def test_command_refuses_bad_input(args: list[str], message: str) -> None:
    run = _simulate("--rounds", "1", *args)
    assert run.returncode == 2 and message in run.stderr


def test_command_refuses_an_unknown_task() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "k2node", "simulate", "no/such/file.py:Task", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "cannot import task entry" in run.stderr
