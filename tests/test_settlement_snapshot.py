"""Snapshots of the local K2: written off the event loop, and replayed exactly on reopen."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import base58
import pytest

from k2node.contract.task_state import PAYOUT_SUCCESSFUL
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.settlement import local, program, snapshot
from k2node.settlement.local import LocalK2
from k2node.settlement.round_ix import KEEP_ROUNDS
from k2node.settlement.world import TaskPrivate, World, new_task_state
from k2node.store import Store, StoreError
from tests.conftest import TASK_ARGS, FakeClock, create_task, send, stake

# The longest the event loop may go unserved while a snapshot is written: generous for a
# noisy 2-core CI machine, and far below what encoding the whole world at once takes.
STALL_BOUND_S = 0.05


def _key() -> str:
    return base58.b58encode(os.urandom(32)).decode()


def _large_world(nodes: int = 10_000, rounds: int = KEEP_ROUNDS) -> World:
    """One task at full size: `nodes` submissions and a distribution list in each kept round."""
    keys = [_key() for _ in range(nodes)]
    checked = TASK_ARGS | {
        "task_description": "",
        "task_audit_program": "main",
        "task_metadata": "",
        "task_vars": {},
    }
    state = new_task_state("task", keys[0], "pot", 0, checked)
    private = TaskPrivate()
    for r in range(rounds):
        rkey = str(r)
        state["submissions"][rkey] = {
            k: {"submission_value": f"bafy{os.urandom(26).hex()}", "slot": 20 * r, "round": r}
            for k in keys
        }
        state["submissions_audit_trigger"][rkey] = {
            k: {"trigger_by": keys[0], "slot": 20 * r, "votes": []} for k in keys[1:100]
        }
        state["distribution_rewards_submission"][rkey] = {
            keys[0]: {"submission_value": keys[0], "slot": 20 * r, "round": r}
        }
        state["distributions_audit_record"][rkey] = PAYOUT_SUCCESSFUL
        private.lists[rkey] = {keys[0]: dict.fromkeys(keys, 1_000)}
        private.attempt_submitters[rkey] = {"0": keys[0]}
    state["stake_list"] = dict.fromkeys(keys, 2 * ROE_PER_KOII)
    state["ip_address_list"] = dict.fromkeys(keys, "http://127.0.0.1:1")
    private.last_submission = dict.fromkeys(keys, rounds - 1)
    signatures = {base58.b58encode(os.urandom(64)).decode(): 100 for _ in range(2 * nodes)}
    return World(dict.fromkeys(keys, ROE_PER_KOII), {"task": state}, {"task": private}, signatures)


async def test_a_snapshot_leaves_the_event_loop_free(tmp_path: Path) -> None:
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=1000, clock=FakeClock())
    k2._world = _large_world()
    await k2.airdrop(_key(), 1)
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await k2.snapshot()
    took = time.perf_counter() - started
    done.set()
    await ticker
    k2.close()  # nothing new since: no second snapshot
    # the work really was large enough to stall the loop had it been done on it at once
    assert took > STALL_BOUND_S, f"the world is too small to tell: snapshot took {took:.3f} s"
    assert max(gaps) < STALL_BOUND_S, f"loop stalled {max(gaps):.3f} s in a {took:.3f} s snapshot"


def _everything(k2: LocalK2) -> str:
    """The whole world as text: equal texts mean equal values in the same key order."""
    return json.dumps(k2._world.to_json())


async def _play_rounds(k2: LocalK2, clock: FakeClock, keys: dict[str, Keypair]) -> None:
    """A task run through more rounds than are kept: stakes, submissions, audits, payouts."""

    async def tx(name: str, ix: str, slot: int, **args: Any) -> None:
        clock.to_slot(k2, slot)
        await send(k2, keys[name], ix, task_id, **args)
        await asyncio.sleep(0)  # as a server does between requests: a due snapshot starts

    task_id = await create_task(k2, keys["manager"])
    for name in ("a", "b", "c"):
        await stake(k2, keys[name], task_id)
    a, b, c = (keys[n].pubkey for n in "abc")
    for r in range(KEEP_ROUNDS + 3):
        start = 20 * (r + 1)
        for name in ("c", "a", "b"):  # not sorted: key order must survive
            await tx(name, "SubmitTask", start, submission=f"{name}{r}", round=r)
        await tx("b", "AuditSubmissions", start + 8, candidate=a, is_valid=False, round=r)
        if r >= 1:  # the previous round's distribution and payout
            await tx("a", "UploadDistributionList", start, list={a: 5, b: 5, c: -1}, round=r - 1)
            await tx("a", "SubmitDistributionList", start, round=r - 1)
            await tx("c", "Payout", start + 16, round=r - 1)


async def test_snapshots_then_more_transactions_reopen_to_the_same_state(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny pieces, frequent snapshots, and signatures soon forgotten: many snapshots, some of
    # them in fewer pieces than the one before.
    monkeypatch.setattr(snapshot, "CHUNK_ENTRIES", 2)
    monkeypatch.setattr(local, "SNAPSHOT_EVERY", 5)
    monkeypatch.setattr(local, "SNAPSHOT_SHARE", 10**9)  # every 5 however large the world
    monkeypatch.setattr(program, "SIGNATURE_MEMORY_SLOTS", 10)
    counts: list[int] = []
    write = snapshot.Snapshots.write

    def counting_write(self: snapshot.Snapshots, world: World, seq: int) -> None:
        write(self, world, seq)
        counts.append(len(self._store.keys("snapshot/")))

    monkeypatch.setattr(snapshot.Snapshots, "write", counting_write)
    keys = {name: Keypair.generate() for name in ("manager", "a", "b", "c")}
    path = tmp_path / "k2"
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    await _play_rounds(k2, clock, keys)
    await k2.snapshot()  # the writes after it wait for any snapshot still running
    assert len(counts) > 10 and any(b < a for a, b in itertools.pairwise(counts))
    for _ in range(3):  # after the snapshot, only in the log
        await k2.airdrop(Keypair.generate().pubkey, 5)
    seq, before = k2.seq, _everything(k2)
    k2._store.close()  # a crash: the last snapshot and the log after it

    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    assert (k2.seq, _everything(k2)) == (seq, before)
    store = k2._store
    assert [key for key, _ in store.items("log/")] == [
        snapshot.log_key(s) for s in (seq - 2, seq - 1, seq)
    ]
    k2.close()  # the final snapshot covers the whole log

    store = Store.open(path)
    assert store.keys("log/") == []
    header = store.get("snapshot")
    assert header["seq"] == seq
    # no piece left over from larger snapshots before
    assert len(store.keys("snapshot/")) == header["pieces"]
    store.close()
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    assert (k2.seq, _everything(k2)) == (seq, before)
    k2.close()


async def test_transactions_wait_for_a_snapshot_in_progress(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "SNAPSHOT_EVERY", 3)
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=1000, clock=clock)
    k2._world = _large_world(nodes=2_000, rounds=3)
    keys = [Keypair.generate().pubkey for _ in range(6)]
    for key in keys[:3]:  # the third starts a snapshot in the background
        await k2.airdrop(key, 1)
    task = k2._snapshot_task
    assert task is not None
    await asyncio.sleep(0)  # it starts: takes the lock, hands the world to its thread
    assert not task.done()
    # the next writes queue behind it, and the snapshot holds the world as of the third
    await asyncio.gather(*(k2.airdrop(key, 1) for key in keys[3:]))
    assert task.done()
    assert all([await k2.get_balance(key) == 1 for key in keys])
    store = k2._store
    assert store.get("snapshot")["seq"] == 3
    assert [key for key, _ in store.items("log/")] == [snapshot.log_key(s) for s in (4, 5, 6)]
    k2.close()


async def test_snapshots_are_spaced_in_proportion_to_the_world(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A large world is snapshotted after a quarter of its entries, not every SNAPSHOT_EVERY.
    monkeypatch.setattr(local, "SNAPSHOT_EVERY", 3)
    path = tmp_path / "k2"
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    k2._world = _large_world(nodes=200, rounds=1)
    await k2.snapshot()
    header = k2._store.get("snapshot")
    assert header["entries"] == k2._snapshots.entries >= 200 * 3  # balance, stake, address
    spacing = header["entries"] // local.SNAPSHOT_SHARE
    for _ in range(spacing - 1):
        await k2.airdrop(_key(), 1)
    assert k2._snapshot_task is None and k2._store.get("snapshot")["seq"] == header["seq"]
    await k2.airdrop(_key(), 1)
    assert k2._snapshot_task is not None
    await k2._snapshot_task
    assert k2._store.get("snapshot")["seq"] == header["seq"] + spacing
    entries = k2._snapshots.entries
    k2.close()
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)  # the spacing survives a restart
    assert k2._snapshots.entries == entries
    k2.close()


async def test_a_cancelled_snapshot_keeps_the_world_still_until_its_thread_is_done(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "k2"
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    k2._world = _large_world(nodes=5_000, rounds=3)
    await k2.airdrop(_key(), 1)
    task = asyncio.create_task(k2.snapshot())
    await asyncio.sleep(0)  # its thread is reading the world
    task.cancel()
    late = _key()
    await k2.airdrop(late, 1)  # waits for the thread, not just for the cancellation
    assert task.cancelled()
    assert k2._store.get("snapshot")["seq"] == 1
    before = _everything(k2)
    k2._store.close()  # a crash: the snapshot as of seq 1, then the log
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    assert await k2.get_balance(late) == 1
    assert _everything(k2) == before
    k2.close()


def test_a_local_k2_of_an_older_k2node_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "k2"
    store = Store.open(path)
    store.put("meta", {"genesis": 1.0, "slot_ms": 400.0})  # JSON transactions, before K2's wire
    store.close()
    with pytest.raises(StoreError, match="older k2node"):
        LocalK2.open(path, slot_ms=400)
    reopened = Store.open(path)  # left as it was, and closed
    assert reopened.get("meta") == {"genesis": 1.0, "slot_ms": 400.0}
    reopened.close()


async def test_closing_at_shutdown_starts_no_snapshot_and_loses_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "k2"
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    k2._world = _large_world(nodes=5_000, rounds=3)
    keys = [_key() for _ in range(3)]
    for key in keys:
        await k2.airdrop(key, 1)
    started = time.perf_counter()
    await k2.aclose()  # in a time that does not grow with the world
    took = time.perf_counter() - started
    store = Store.open(path)
    assert store.get("snapshot") is None  # none written: the log holds the three
    assert [k for k, _ in store.items("log/")] == [snapshot.log_key(s) for s in (1, 2, 3)]
    store.close()
    k2 = LocalK2.open(path, slot_ms=1000, clock=clock)
    assert [await k2.get_balance(key) for key in keys] == [1, 1, 1]
    assert took < STALL_BOUND_S
    k2.close()
