"""The local K2's task state: its sections as asked for, each read following every change,
what survives a restart or a crash, and old rounds pruned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k2node.settlement.base import TransactionError
from k2node.settlement.local import LocalK2
from k2node.settlement.reads import SharedReads
from k2node.settlement.round_ix import KEEP_ROUNDS
from tests.conftest import (
    FakeClock,
    send,
    staked_task,
    submit_all,
)


async def test_task_state_sections_follow_options(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
    bare = await k2.get_task_state(task_id, {})
    assert bare["submissions"] == {} and bare["stake_list"] == {}
    assert bare["task_name"] == "test task" and bare["current_round"] == 1
    full = await k2.get_task_state(
        task_id, {"is_submission_required": True, "is_stake_list_required": True}
    )
    assert len(full["submissions"]["0"]) == 4 and len(full["stake_list"]) == 4
    with pytest.raises(TypeError, match="read-only"):  # shared by its readers
        full["submissions"]["0"].clear()
    with pytest.raises(TypeError, match="read-only"):
        full["stake_list"]["x"] = 1
    assert dict(full["stake_list"]) | {"x": 1} != full["stake_list"]  # a copy of one's own
    assert (await k2.get_task_state(task_id, {"is_submission_required": True}))["submissions"]
    with pytest.raises(TransactionError, match="does not exist"):
        await k2.get_task_state("nope")


async def test_a_state_read_follows_every_change_scalars_too(
    k2: LocalK2, clock: FakeClock, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SharedReads, "check", False)  # this test compares by itself
    task_id = await staked_task(k2, keys)
    wanted = {"is_submission_required": True}
    before = await k2.get_task_state(task_id, wanted)
    again = await k2.get_task_state(task_id, wanted)
    assert again == before and again is not before  # the same values, a dict of one's own
    again["is_active"] = "mine"
    assert (await k2.get_task_state(task_id, wanted))["is_active"] is True
    # SetActive changes a plain field, no shared part: the next read shows it all the same
    await send(k2, keys["manager"], "SetActive", task_id, is_active=False)
    assert (await k2.get_task_state(task_id, wanted))["is_active"] is False
    assert (await k2.get_task_state(task_id, {}))["is_active"] is False
    await send(k2, keys["manager"], "SetActive", task_id, is_active=True)
    await submit_all(k2, clock, keys, task_id, 0)
    state = await k2.get_task_state(task_id, wanted)
    assert state["is_active"] is True and len(state["submissions"]["0"]) == 4
    assert (await k2.get_task_state(task_id, {}))["submissions"] == {}


async def test_state_survives_restart(tmp_path: Path, clock: FakeClock, keys: Any) -> None:
    path = tmp_path / "chain"
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    task_id = await staked_task(k2, keys)
    await submit_all(k2, clock, keys, task_id, 0)
    before = await k2.get_task_state(
        task_id, {"is_submission_required": True, "is_stake_list_required": True}
    )
    k2.close()  # writes a snapshot
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    assert (
        await k2.get_task_state(
            task_id, {"is_submission_required": True, "is_stake_list_required": True}
        )
        == before
    )
    clock.to_slot(k2, 28)
    await send(
        k2,
        keys["b"],
        "AuditSubmissions",
        task_id,
        candidate=keys["a"].pubkey,
        is_valid=False,
        round=0,
    )
    k2._store.close()  # a crash: no snapshot, only the log
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert keys["a"].pubkey in state["submissions_audit_trigger"]["0"]
    assert k2.current_slot() == 28  # the slot clock continues from the same genesis
    k2.close()


async def test_old_rounds_are_pruned(k2: LocalK2, clock: FakeClock, keys: Any) -> None:
    task_id = await staked_task(k2, keys)
    for round_ in range(KEEP_ROUNDS + 6):
        clock.to_slot(k2, 20 * (round_ + 1))
        await send(k2, keys["a"], "SubmitTask", task_id, submission="x", round=round_)
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    rounds = sorted(int(r) for r in state["submissions"])
    assert len(rounds) <= KEEP_ROUNDS + 1
    assert rounds[-1] == KEEP_ROUNDS + 5
