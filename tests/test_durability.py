"""Durable promises: the local K2 answers only once its log entry is on disk (synced in
groups), and when the entry cannot be written the transaction is not applied; the node's
ledger has an action on disk before it leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from structlog.testing import capture_logs

from k2node.crypto import Keypair
from k2node.node.agent import TaskAgent
from k2node.node.ledger import Ledger
from k2node.settlement.base import LogNotDurable, TransactionError
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import FakeClock, create_task, full_disk, funded, sign_and_send, stake


def _move(payer: Keypair, to: str, lamports: int) -> list[Any]:
    params = TransferParams(
        from_pubkey=Pubkey.from_string(payer.pubkey),
        to_pubkey=Pubkey.from_string(to),
        lamports=lamports,
    )
    return [transfer(params)]


async def test_answers_wait_for_the_disk_and_share_its_syncs(
    k2: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    payers = [await funded(k2, 1) for _ in range(20)]
    store = k2._store
    synced: list[int] = []  # entries on disk after each synced batch
    real_put_many = store.put_many

    def put_many(
        items: dict[str, Any], delete: list[str] | None = None, sync: bool = False
    ) -> None:
        real_put_many(items, delete, sync)
        if sync:
            synced.append(k2.seq)

    monkeypatch.setattr(store, "put_many", put_many)
    to = Keypair.generate().pubkey
    answered: list[int] = []  # the entries on disk when each answer came

    async def one(payer: Keypair) -> None:
        await sign_and_send(k2, _move(payer, to, 1000), payer)
        answered.append(synced[-1] if synced else 0)

    await asyncio.gather(*(one(p) for p in payers))
    assert len(answered) == 20 and min(answered) >= 1  # none answered before a sync
    assert 1 <= len(synced) < 20  # grouped: fewer syncs than transactions
    assert synced[-1] == k2.seq and await k2.get_balance(to) == 20 * 1000


async def test_afull_disk_answers_not_durable_and_loses_nothing_once_it_recovers(
    tmp_path: Path, k2: LocalK2, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = await funded(k2, 1)
    to = Keypair.generate().pubkey
    real_put_many = k2._store.put_many

    monkeypatch.setattr(k2._store, "put_many", full_disk)
    with pytest.raises(LogNotDurable, match="could not get its log to disk"):
        await sign_and_send(k2, _move(payer, to, 5000), payer)  # not a refusal
    monkeypatch.setattr(k2._store, "put_many", real_put_many)
    await sign_and_send(k2, _move(payer, to, 7000), payer)  # the disk back: both go down
    k2.close()
    again = LocalK2.open(tmp_path / "k2", slot_ms=1000, clock=clock)
    try:
        assert await again.get_balance(to) == 12_000  # memory and disk agree after all
    finally:
        again.close()


async def test_a_disk_refusing_many_batches_is_logged_once_as_it_begins_and_clears(
    k2: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = await funded(k2, 1)
    to = Keypair.generate().pubkey
    real_put_many = k2._store.put_many
    monkeypatch.setattr(k2._store, "put_many", full_disk)
    with capture_logs() as logs:
        for lamports in range(1000, 6000, 1000):  # five batches, each refused
            with pytest.raises(LogNotDurable):
                await sign_and_send(k2, _move(payer, to, lamports), payer)
        assert k2._log_writer.disk.active
        monkeypatch.setattr(k2._store, "put_many", real_put_many)
        assert await k2._log_writer.disk.cleared(within_s=5)  # its probe writes them
    events = [e["event"] for e in logs if e["event"].startswith("k2_log")]
    assert events == ["k2_log_sync_failed", "k2_log_synced"]
    began = next(e for e in logs if e["event"] == "k2_log_sync_failed")
    assert "No space left" in began["error"] and began["unsynced"] == 1
    assert k2._log_writer._pending == {} and await k2.get_balance(to) == 15_000


async def test_the_ledger_keeps_an_action_owed_when_k2_could_not_store_it(
    tmp_path: Path, k2: LocalK2, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await create_task(k2, Keypair.generate())
    me = Keypair.generate()
    await stake(k2, me, task_id)
    store = Store.open(tmp_path / "node-db")
    agent = TaskAgent(task_id, k2, Ledger(store, k2), me, await funded(k2), tmp_path / "t")
    clock.to_slot(k2, 21)  # round 0's submission window (the tests' 20-slot rounds)
    real_put_many = k2._store.put_many

    monkeypatch.setattr(k2._store, "put_many", full_disk)
    with pytest.raises(LogNotDurable):
        await agent.submit("a value", 0)
    (entry,) = [e for _, e in store.items("ledger/")]
    assert entry["status"] == "pending"  # owed, not failed: it may stand
    monkeypatch.setattr(k2._store, "put_many", real_put_many)
    first = entry["signature"]
    assert (await agent.submit("a value", 0))["signature"] == first  # the same, once
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert me.pubkey in state["submissions"]["0"]
    store.close()


async def test_a_refused_airdrop_is_not_logged(k2: LocalK2) -> None:
    seq = k2.seq
    with pytest.raises(TransactionError):
        await k2.airdrop(Keypair.generate().pubkey, 0)
    assert k2.seq == seq


async def test_the_ledger_has_an_action_on_disk_before_it_leaves(
    tmp_path: Path, k2: LocalK2, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await create_task(k2, Keypair.generate())
    me = Keypair.generate()
    await stake(k2, me, task_id)
    store = Store.open(tmp_path / "node-db")
    order: list[str] = []
    real_put, real_send = store.put, k2.send

    def put(key: str, value: Any, sync: bool = False) -> None:
        if key.startswith("ledger/"):
            order.append(f"{value['status']}{' synced' if sync else ''}")
        real_put(key, value, sync)

    async def send(raw: bytes) -> str:
        order.append("sent")
        return await real_send(raw)

    monkeypatch.setattr(store, "put", put)
    monkeypatch.setattr(k2, "send", send)
    agent = TaskAgent(task_id, k2, Ledger(store, k2), me, await funded(k2), tmp_path / "t")
    clock.to_slot(k2, 21)  # round 0's submission window (the tests' 20-slot rounds)
    await agent.submit("a value", 0)
    store.close()
    assert order == ["pending synced", "sent", "confirmed synced"]
