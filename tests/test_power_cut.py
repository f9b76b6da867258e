"""Power cuts: the node's and its embedded K2's databases lose the writes not yet synced
(tests/powercut.py) at hundreds of chosen writes, at random across rounds and at each
write of a round in turn, with three nodes on one machine (tests/powercut_net.py); after
each cut they restart from what survived. Nothing is sent twice, nothing is lost, and the
K2's supply adds up. `make soak` cuts thousands of times."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

import k2node.settlement.local
import k2node.store
from k2node.crypto import Keypair, load_or_create_wallet, load_wallet
from k2node.settlement.local import LocalK2
from k2node.settlement.snapshot import LOG_PREFIX
from k2node.store import Store
from tests.conftest import FakeClock
from tests.powercut import Machine, PowerCut, Survival
from tests.powercut_checks import (
    applied_signatures,
    check_each_action_once,
    check_none_lost,
    check_supply,
    final_world,
    history,
)
from tests.powercut_net import Net

# Each cut keeps, at random: the synced writes alone (twice as often: the worst case),
# everything up to each database's last sync, some of the rest, or all (kill -9).
MODES = (Survival.SYNCED, Survival.SYNCED, Survival.LOGGED, Survival.SOME, Survival.ALL)
CLEAN_ROUNDS = 4  # after the last cut: the rounds then in flight are all paid


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Net]:
    machine = Net(tmp_path / "machine", seed=7)
    monkeypatch.setattr(k2node.store, "open_database", machine.machine.open)
    # snapshots every few rounds, so that cuts fall inside them too
    monkeypatch.setattr(k2node.settlement.local, "SNAPSHOT_EVERY", 40)
    yield machine
    machine.machine.close()


def _check(net: Net, rounds: range) -> None:
    """What must hold at the end of a run of cuts, for `rounds`."""
    try:
        world, _round = final_world(net)
        entries = history(net.journal)
        check_supply(world, entries)
        applied = applied_signatures(entries)
        check_each_action_once(net.journal, applied)
        check_none_lost(net.journal, applied, net.staking_keys, rounds)
        assert net.journal.refused == [], net.journal.refused[:5]
        # a phase done whose mark was lost is logged missed when its window has closed
        problems = [p for p in net.journal.problems if p["event"] != "phase_missed"]
        assert problems == [], problems[:5]
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last cuts: {net.cuts[-3:]}") from None


def _power_cuts(net: Net, cuts: int, gap: int, seed: int) -> None:
    """`cuts` cuts, each 1 to `gap` writes after the restart before it; then clean rounds."""
    rng = random.Random(seed)
    for _ in range(cuts):
        cut_at = net.machine.writes + rng.randint(1, gap)
        assert net.life(net.round + 2, cut_at, rng.choice(MODES), rng)  # (cut on the way)
    end = net.round + 1 + CLEAN_ROUNDS
    assert not net.life(end, None, rng.choice(MODES), rng)
    _check(net, range(0, end - 2))  # (a round's list and payout come two rounds after it)


def test_power_cuts_across_rounds(net: Net) -> None:
    _power_cuts(net, cuts=200, gap=20, seed=1)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_thousands_of_power_cuts(net: Net) -> None:
    _power_cuts(net, cuts=3000, gap=30, seed=2)


def _sweep(net: Net, at_round: int, rounds: int, modes: tuple[Survival, ...]) -> int:
    """A cut at each write of `rounds` rounds from round `at_round` in turn, in each of
    `modes`, every time from the same start; after each, the rounds owed are run to their
    payouts and checked. Returns the number of cuts."""
    rng = random.Random(at_round)
    assert not net.life(at_round, None, Survival.ALL, rng)
    back = net.checkpoint()
    start = net.machine.writes
    end = at_round + rounds
    assert not net.life(end, None, Survival.ALL, rng)
    writes = net.machine.writes - start
    for k in range(1, writes + 1):
        for mode in modes:
            back()
            assert net.life(end + 1, start + k, mode, rng)
            assert not net.life(end + 2, None, Survival.ALL, rng)
            _check(net, range(0, end))
    return writes * len(modes)


def test_a_cut_at_every_write_of_a_round(net: Net) -> None:
    """Round 3 (its work, round 2's submissions and audits, round 1's list and payout) cut
    at each of its writes in turn, in the worst case: only the synced writes left."""
    assert _sweep(net, 3, 1, (Survival.SYNCED,)) > 50


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_a_cut_at_every_write_of_three_rounds_in_every_mode(net: Net) -> None:
    assert _sweep(net, 3, 3, tuple(Survival)) > 600


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    power = Machine()
    monkeypatch.setattr(k2node.store, "open_database", power.open)
    yield power
    power.close()


async def test_the_k2_keeps_its_genesis_through_a_power_cut(
    tmp_path: Path, machine: Machine
) -> None:
    clock = FakeClock()
    k2 = LocalK2.open(tmp_path / "k2", 1000, clock=clock)
    await k2.airdrop(Keypair.generate().pubkey, 5)  # its log entry synced
    machine.switch_off()
    machine.restore(Survival.SYNCED, random.Random(0))
    clock.now += 3600  # started again an hour later: the slots go on from the same genesis
    again = LocalK2.open(tmp_path / "k2", 1000, clock=clock)
    assert again.slots == k2.slots and again.current_slot() == 3600


async def test_a_k2_restarted_before_each_snapshot_is_due_still_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k2node.settlement.local, "SNAPSHOT_EVERY", 5)
    clock = FakeClock()
    for _ in range(3):  # 3 changes a life, each life closed as the node closes it
        k2 = LocalK2.open(tmp_path / "k2", 1000, clock=clock)
        for _ in range(3):
            await k2.airdrop(Keypair.generate().pubkey, 5)
        await k2.aclose()
    store = Store.open(tmp_path / "k2")
    try:  # the log replayed at an open stays under the spacing, however often it restarts
        assert len(store.keys(LOG_PREFIX)) < 5
    finally:
        store.close()


def _writes(tmp_path: Path) -> tuple[Store, Store]:
    store, other = Store.open(tmp_path / "db"), Store.open(tmp_path / "other")
    store.put("a", 1)
    store.put("b", 2, sync=True)  # carries "a" to disk too, unless the log switched between
    store.put_many({"c": 3, "d": 4})  # one batch: whole or not at all
    other.put("x", 1)  # another database, another log
    store.put("a", 5)
    return store, other


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Survival.SYNCED, {"a": None, "b": 2, "c": None, "d": None, "x": None}),
        (Survival.LOGGED, {"a": 1, "b": 2, "c": None, "d": None, "x": None}),
        (Survival.ALL, {"a": 5, "b": 2, "c": 3, "d": 4, "x": 1}),
    ],
)
def test_a_cut_keeps_what_leveldb_promises(
    tmp_path: Path, machine: Machine, mode: Survival, expected: dict[str, int | None]
) -> None:
    store, other = _writes(tmp_path)
    machine.switch_off()
    machine.restore(mode, random.Random(0))
    found = {k: store.get(k) for k in "abcd"} | {"x": other.get("x")}
    assert found == expected


def test_some_of_the_unsynced_writes_survive_and_a_batch_stays_whole(
    tmp_path: Path, machine: Machine
) -> None:
    seen: set[tuple[int | None, ...]] = set()
    machine.checkpoint()
    for seed in range(40):
        store, other = _writes(tmp_path)
        machine.switch_off()
        machine.restore(Survival.SOME, random.Random(seed))
        found = (store.get("a"), store.get("b"), store.get("c"), store.get("d"), other.get("x"))
        assert found[1] == 2 and found[2] in (None, 3) and (found[2] is None) == (found[3] is None)
        seen.add(found)
        machine.rollback()  # (to the empty databases)
    assert len(seen) > 4  # not always the same few


def test_the_cut_write_and_every_one_after_it_are_lost(tmp_path: Path, machine: Machine) -> None:
    store = Store.open(tmp_path / "db")
    view = store.view("v/")
    store.put("kept", 1, sync=True)
    machine.cut_at = machine.writes + 2
    view.put("also", 2, sync=True)  # a prefixed view's writes are its database's
    with pytest.raises(PowerCut, match="power cut at write"):
        store.put("cut", 3, sync=True)
    with pytest.raises(PowerCut, match="off"):
        store.put("after", 4, sync=True)
    assert store.get("cut") is None and store.get("after") is None
    machine.restore(Survival.SYNCED, random.Random(0))
    assert (store.get("kept"), view.get("also"), store.get("v/also")) == (1, 2, 2)
    store.put("after", 4)  # on again
    assert store.get("after") == 4


def test_a_new_wallet_is_on_disk_before_it_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside LevelDB: a wallet created at the first start is synced, file and folder."""
    synced: set[int] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "wallets" / "id.json"
    pair, created = load_or_create_wallet(path)
    assert created and load_wallet(path) == pair
    folders = (path.parent, tmp_path)  # (the one it made, and the one that holds it)
    assert {path.stat().st_ino, *(f.stat().st_ino for f in folders)} <= synced
