"""k2node.testing: the task's code on simulated nodes in virtual time, driving the node's own
scheduler, agent and ledger; compared with real nodes on the wall clock."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair as SoldersKeypair

from k2node.contract.distribution import select_distribution_submitter
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.examples.hello_task import HelloTask
from k2node.node.provision import deploy_task
from k2node.node.runtime import Node
from k2node.task.core import CoreLogic
from k2node.testing import StuckError, TaskHarness
from k2node.testing.tasks import core_of
from tests.conftest import RecordingK2, node_settings, task_file, wait_for

LIAR = task_file("liar_task.py") + ":LiarTask"
SETTLED = range(4)
BOUNTY_KOII = 3
CONFIG = f"""
task_name: "harness test"
task_description: "hello task, fast rounds"
task_executable_network: "DEVELOPMENT"
task_audit_program: "main"
round_time: 20
submission_window: 8
audit_window: 8
minimum_stake_amount: 1
total_bounty_amount: 100
bounty_amount_per_round: {BOUNTY_KOII}
allowed_failed_distributions: 1
space: 1
"""


def _write_wallet(path: Path, pair: Keypair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(pair.secret_bytes)))


def _outcome(state: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """What the rounds decided: submissions, votes, the list's submitter and whether the
    selection rule names it, the record, and the paid list."""
    out: dict[int, dict[str, Any]] = {}
    lists = state["distribution_rewards_submission"]
    for n in SETTLED:
        triggers = state["submissions_audit_trigger"].get(str(n), {})
        votes = {
            candidate: sorted(
                {(t["trigger_by"], False)} | {(v["voter"], v["is_valid"]) for v in t["votes"]}
            )
            for candidate, t in triggers.items()
        }
        submitters = list(lists[str(n)])
        out[n] = {
            "submissions": {
                k: v["submission_value"] for k, v in state["submissions"][str(n)].items()
            },
            "votes": votes,
            "selected": submitters
            == [select_distribution_submitter(state["submissions"], {}, {}, n, False)],
            "record": state["distributions_audit_record"][str(n)],
        }
    return out


async def _lists(get: Any, state: dict[str, Any]) -> dict[int, Any]:
    lists = state["distribution_rewards_submission"]
    return {n: await get(next(iter(lists[str(n)])), n) for n in SETTLED}


ALL = {
    "is_submission_required": True,
    "is_distribution_required": True,
    "is_stake_list_required": True,
    "is_available_balances_required": True,
}


async def test_virtual_rounds_decide_what_real_nodes_decide(tmp_path: Path) -> None:
    """Three honest nodes and a liar, the same keys and task: real nodes on the wall clock
    (100 ms slots) and the harness in virtual time submit the same values, vote the same
    votes, select by the same rule and pay the same lists."""
    config = tmp_path / "config-task.yml"
    config.write_text(CONFIG)
    task_key, manager = Keypair.generate(), Keypair.generate()
    keys = [(Keypair.generate(), Keypair.generate()) for _ in range(4)]
    entries = ["", "", "", LIAR]

    chain = RecordingK2.open(tmp_path / "k2", slot_ms=100.0)
    try:
        solders_key = SoldersKeypair.from_seed(task_key.secret_bytes[:32])
        task_id = await deploy_task(chain, manager, config, task_key=solders_key)
        async with AsyncExitStack() as stack:
            for i, ((main, staking), entry) in enumerate(zip(keys, entries, strict=True)):
                data = tmp_path / f"node{i}"
                _write_wallet(data / "wallets" / "id.json", main)
                _write_wallet(data / "wallets" / "staking.json", staking)
                await stack.enter_async_context(
                    Node.manage(node_settings(data, task_id, entry), chain)
                )

            async def all_settled() -> bool:
                state = await chain.get_task_state(task_id, {"is_distribution_required": True})
                return all(str(n) in state["distributions_audit_record"] for n in SETTLED)

            await wait_for(all_settled, within=60)
        real = await chain.get_task_state(task_id, ALL)
        real_lists = await _lists(lambda k, n: chain.get_distribution_list(task_id, k, n), real)
    finally:
        chain.close()

    def core_for(i: int) -> CoreLogic:
        return core_of(LIAR if i == 3 else HelloTask)

    started = time.perf_counter()
    async with TaskHarness.start(
        HelloTask,
        tmp_path / "virtual",
        nodes=4,
        config=config,
        core_for=core_for,
        keys=keys,
        task_key=task_key,
        stake=2 * ROE_PER_KOII,
    ) as h:
        assert h.task_id == task_id
        await h.run_rounds(max(SETTLED) + 3)
        virtual = await h.state()
        virtual_lists = await _lists(
            lambda k, n: h.k2.get_distribution_list(task_id, k, n), virtual
        )
        # the virtual clock went through the rounds; the wall clock did not wait for them
        assert h.current_round == max(SETTLED) + 3
    print(f"harness: {max(SETTLED) + 3} rounds of 4 nodes in {time.perf_counter() - started:.2f} s")

    assert _outcome(virtual) == _outcome(real)
    assert virtual_lists == real_lists
    liar = keys[3][1].pubkey
    honest = [staking.pubkey for _, staking in keys[:3]]
    for n in SETTLED:
        assert _outcome(real)[n]["record"] == "PayoutSuccessful"
        assert _outcome(real)[n]["selected"]
        assert all(real_lists[n][k] == BOUNTY_KOII * ROE_PER_KOII // 3 for k in honest)
        # slashed while it still had stake enough to submit (70% of 2 KOII leaves too little)
        assert real_lists[n].get(liar, -1) < 0
    assert real_lists[0][liar] < 0
    for section in ("available_balances", "stake_list"):
        assert virtual[section] == real[section]


async def test_timers_off_phases_by_hand(tmp_path: Path) -> None:
    async with TaskHarness.start(HelloTask, tmp_path, nodes=2, timers=False, seed=7) as h:
        await h.advance_to_round(3)
        assert h.nodes[0].ledger.store.keys("phase/") == []  # no timer sent anything
        node = h.nodes[0]
        assert (await node.phase("executeTask", 3))["ok"]
        result = await node.store_get("result:3")
        assert result["digest"].startswith("000")
        # round 3's submission is refused before its window, taken in it
        early = await node.phase("submitPayload", 3)
        assert not early["ok"] and "is accepted in slots" in early["error"]
        await h.advance_to_window("submission", 3)
        assert (await node.phase("submitPayload", 3))["ok"]
        state = await h.state()
        assert node.staking_key in state["submissions"]["3"]
        assert h.nodes[1].staking_key not in state["submissions"]["3"]
        async with node.client() as client:
            resp = await client.get("/proof/3")
            assert resp.status == 200 and await resp.json() == result


async def test_the_same_seed_gives_the_same_rounds(tmp_path: Path) -> None:
    states = []
    for run in range(2):
        async with TaskHarness.start(HelloTask, tmp_path / str(run), nodes=3, seed=42) as h:
            await h.run_rounds(5)
            states.append(await h.state())
    assert states[0]["submissions"] == states[1]["submissions"]
    assert (
        states[0]["distribution_rewards_submission"] == states[1]["distribution_rewards_submission"]
    )


class _Hangs(HelloTask):
    async def task(self, round_: int) -> None:
        if round_ >= 1:
            await asyncio.Event().wait()


async def test_a_phase_that_never_ends_is_reported_not_hung(tmp_path: Path) -> None:
    async with TaskHarness.start(_Hangs, tmp_path, nodes=1) as h:
        h.clock.settle_timeout_s = 0.5
        with pytest.raises(StuckError, match=r"phase\(s\) still run"):
            await h.run_rounds(2)


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one node"):
        async with TaskHarness.start(HelloTask, tmp_path, nodes=0):
            pass
    async with TaskHarness.start(HelloTask, tmp_path / "w", nodes=1) as h:
        with pytest.raises(ValueError, match="window must be one of"):
            await h.advance_to_window("lunch", 0)


class _BrokenSetup(HelloTask):
    async def setup(self) -> None:
        raise RuntimeError("the task's setup failed")


async def test_a_task_whose_setup_fails_stops_the_harness_with_its_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the task's setup failed"):
        async with asyncio.timeout(30):
            async with TaskHarness.start(_BrokenSetup, tmp_path, nodes=2):
                pass
