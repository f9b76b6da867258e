"""Whole rounds: real nodes, real task processes, one local K2 with fast slots."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from k2node.contract.distribution import select_distribution_submitter
from k2node.contract.rounds import Schedule
from k2node.contract.units import ROE_PER_KOII
from k2node.contract.votes import count_votes
from k2node.crypto import Keypair
from k2node.node.runtime import Node
from tests.conftest import RecordingK2, create_task, node_settings, task_file, wait_for

SLOT_MS = 100.0
FAST_ROUNDS: dict[str, Any] = {"round_time": 20, "submission_window": 8, "audit_window": 8}
LIAR = task_file("liar_task.py") + ":LiarTask"


@pytest.fixture
def chain(tmp_path: Path) -> Any:
    k2 = RecordingK2.open(tmp_path / "k2", slot_ms=SLOT_MS)
    yield k2
    k2.close()


async def _records(chain: RecordingK2, task_id: str) -> dict[str, str]:
    state = await chain.get_task_state(task_id, {"is_distribution_required": True})
    records: dict[str, str] = state["distributions_audit_record"]
    return records


async def test_three_honest_nodes_and_a_liar(tmp_path: Path, chain: RecordingK2) -> None:
    bounty = 3 * ROE_PER_KOII
    task_id = await create_task(
        chain, Keypair.generate(), bounty_amount_per_round=bounty, **FAST_ROUNDS
    )
    settled = range(4)
    with capture_logs() as logs:
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    Node.manage(node_settings(tmp_path / f"node{i}", task_id, entry), chain)
                )
                for i, entry in enumerate(["", "", "", LIAR])
            ]
            honest = [n.staking.pubkey for n in nodes[:3] if n.staking]
            liar = nodes[3].staking.pubkey if nodes[3].staking else ""

            async def all_settled() -> bool:
                records = await _records(chain, task_id)
                return all(str(n) in records for n in settled)

            await wait_for(all_settled, within=60)
            state = await chain.get_task_state(
                task_id,
                {
                    "is_submission_required": True,
                    "is_distribution_required": True,
                    "is_stake_list_required": True,
                    "is_available_balances_required": True,
                },
            )
            phases_done = {
                n.staking.pubkey: [
                    n.ledger.phase_done(task_id, "distributionListAudit", r) for r in settled
                ]
                for n in nodes
                if n.ledger and n.staking
            }

    # each node logged each settled payout once, with its own reward or slash
    share = bounty // 3
    for n in (0, 1):
        events = [e for e in logs if e["event"] == "payout_settled" and e["round"] == n]
        by_key = {e["staking_key"]: e for e in events}
        assert len(events) == len(by_key) == 4, events
        assert all(by_key[k]["reward"] == share and by_key[k]["slash"] == 0 for k in honest)
        assert all(e["submitted"] for e in events), (n, events)  # each node took part
        assert by_key[liar]["reward"] == 0 and by_key[liar]["slash"] > 0, (n, by_key[liar])
        assert {e["outcome"] for e in events} == {"PayoutSuccessful"}
    submitted_lists = state["distribution_rewards_submission"]
    for n in settled:
        assert state["distributions_audit_record"][str(n)] == "PayoutSuccessful", n
        # the list came from the node every node selects
        expected = select_distribution_submitter(
            state["submissions"], submitted_lists, {}, n, False
        )
        submitters = list(submitted_lists[str(n)])
        assert submitters == [expected], n
        dist = await chain.get_distribution_list(task_id, submitters[0], n)
        assert dist is not None
        for key in honest:  # every honest node is paid every round
            assert dist[key] == bounty // 3, (n, key)
        if liar in dist:
            assert dist[liar] < 0, n  # audited, found wrong, slashed
        # the others audited the list
        for key, done in phases_done.items():
            if key != submitters[0] and key in honest:
                assert done[n], (n, key)
    for key in honest:
        assert state["available_balances"][key] == len(settled) * (bounty // 3)
        assert state["stake_list"][key] == 2 * ROE_PER_KOII
    assert liar not in state["available_balances"]
    assert state["stake_list"][liar] <= 2 * ROE_PER_KOII * 3 // 10
    # the liar was caught in round 0 by a trigger and false votes from the honest nodes
    trigger = state["submissions_audit_trigger"]["0"][liar]
    assert {trigger["trigger_by"], *(v["voter"] for v in trigger["votes"])} == set(honest)
    assert not any(v["is_valid"] for v in trigger["votes"])
    # nothing was ever sent twice
    for key in [*honest, liar]:
        assert all(c == 1 for c in chain.attempts("SubmitTask", key).values())


async def test_restarted_node_repeats_nothing_and_catches_up(
    tmp_path: Path, chain: RecordingK2
) -> None:
    task_id = await create_task(chain, Keypair.generate(), **FAST_ROUNDS)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            Node.manage(node_settings(tmp_path / "steady", task_id), chain)
        )
        settings = node_settings(tmp_path / "restarted", task_id)

        async def submitted(key: str, round_: int) -> bool:
            state = await chain.get_task_state(task_id, {"is_submission_required": True})
            return key in state["submissions"].get(str(round_), {})

        async with Node.manage(settings, chain) as node:
            assert node.staking is not None
            key = node.staking.pubkey
            await wait_for(lambda: submitted(key, 1), within=30)
        # stopped inside round 2's submission window, right after submitting round 1
        async with Node.manage(settings, chain):
            await wait_for(lambda: submitted(key, 3), within=30)
    attempts = chain.attempts("SubmitTask", key)
    assert attempts and all(count == 1 for count in attempts.values()), attempts
    assert set(attempts) >= {0, 1, 2, 3}


async def test_timers_off_sends_nothing_and_phases_run_by_hand(
    tmp_path: Path, chain: RecordingK2
) -> None:
    task_id = await create_task(chain, Keypair.generate(), **FAST_ROUNDS)
    settings = node_settings(tmp_path / "manual", task_id, global_timers=False)
    async with Node.manage(settings, chain) as node:
        assert node.ledger and node.staking
        base = f"http://127.0.0.1:{node.port}"
        async with aiohttp.ClientSession() as http:

            async def task_up() -> bool:
                async with http.get(f"{base}/task/{task_id}/") as resp:
                    return resp.status == 200

            await wait_for(task_up, within=30)
            # a whole round and a submission window go by: the timers would have fired
            later = chain.current_slot() + FAST_ROUNDS["round_time"] + 8
            await wait_for(lambda: chain.current_slot() >= later, within=30)
            assert node.ledger.store.keys(f"phase/{task_id}/") == []
            assert chain.attempts("SubmitTask", node.staking.pubkey) == {}
            round_ = chain.current_slot() // 20 - 1  # the round whose work is owed now
            body = {"functionCall": "executeTask", "roundNumber": round_}
            async with http.post(f"{base}/admin/tasks/{task_id}/phase", json=body) as resp:
                assert await resp.json() == {"delivered": True}

            async def proof_stored() -> bool:
                async with http.get(f"{base}/task/{task_id}/proof/{round_}") as resp:
                    found = await resp.json()
                    return isinstance(found, dict) and found["digest"].startswith("000")

            await wait_for(proof_stored, within=20)


async def test_events_stream_each_step(tmp_path: Path, chain: RecordingK2) -> None:
    task_id = await create_task(chain, Keypair.generate(), **FAST_ROUNDS)
    async with Node.manage(node_settings(tmp_path / "events", task_id), chain) as node:
        url = f"http://127.0.0.1:{node.port}/events"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as socket:
            seen: list[dict[str, Any]] = []

            async def submission_seen() -> bool:
                message = await socket.receive_json(timeout=30)
                seen.append(message)
                return message["event"] == "rpc_action" and (
                    message["method"] == "checkSubmissionAndUpdateRound"
                )

            await wait_for(submission_seen, within=30, every=0)
    names = {m["event"] for m in seen}
    assert {"phase_sent", "phase_done"} <= names, names
    sent = next(m for m in seen if m["event"] == "phase_sent")
    assert sent["task_id"] == task_id and "round" in sent and "phase" in sent


async def test_a_bad_list_fails_its_payout_and_the_retry_pays(
    tmp_path: Path, chain: RecordingK2
) -> None:
    """Every node pays itself the bounty when first selected and plays fair on the retry:
    the others must vote each first list down, and the re-selected node must pay the round."""
    bounty = 4 * ROE_PER_KOII
    task_id = await create_task(
        chain, Keypair.generate(), bounty_amount_per_round=bounty, **FAST_ROUNDS
    )
    greedy = task_file("greedy_distributor.py") + ":GreedyDistributor"
    rounds = range(3)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.manage(node_settings(tmp_path / f"node{i}", task_id, greedy), chain)
            )
            for i in range(4)
        ]
        keys = [n.staking.pubkey for n in nodes if n.staking]
        schedule = Schedule.of(await chain.get_task_state(task_id))
        # the retry of round 2 is paid out at the end of round 5's audit window
        await wait_for(
            lambda: chain.current_slot() >= schedule.payout_opens(2, attempt=1) + 2, within=60
        )
        state = await chain.get_task_state(
            task_id,
            {
                "is_submission_required": True,
                "is_distribution_required": True,
                "is_available_balances_required": True,
            },
        )
    lists = state["distribution_rewards_submission"]
    paid_rounds = 0
    for n in rounds:
        first = next(iter(lists[str(n)]))
        assert first == select_distribution_submitter(state["submissions"], {}, {}, n, False)
        votes = state["distributions_audit_trigger"][str(n)][first]
        assert count_votes(votes) < 0, (n, votes)  # the other nodes caught the greedy list
        retry = select_distribution_submitter(
            state["submissions"],
            {str(n): {first: {}}},
            {str(n): "PayoutFailed"},
            n,
            True,
        )
        if retry is None:  # the template's retry walk may select nobody
            assert list(lists[str(n)]) == [first], n
            assert state["distributions_audit_record"][str(n)] == "PayoutFailed", n
            continue
        assert list(lists[str(n)]) == [first, retry], n
        assert state["distributions_audit_record"][str(n)] == "PayoutSuccessful", n
        paid = await chain.get_distribution_list(task_id, retry, n)
        assert paid == dict.fromkeys(keys, bounty // 4), n
        paid_rounds += 1
    for key in keys:  # nobody got a greedy list paid
        assert state["available_balances"].get(key, 0) <= (paid_rounds + 1) * bounty // 4
