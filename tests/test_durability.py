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

from k2node.crypto import Keypair
from k2node.node.agent import TaskAgent
from k2node.node.ledger import Ledger
from k2node.settlement.base import TransactionError
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import FakeClock, create_task, funded, sign_and_send, stake


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
    synced: list[int] = []
    real_sync = store.sync

    def sync() -> None:
        real_sync()
        synced.append(k2._seq)

    monkeypatch.setattr(store, "sync", sync)
    to = Keypair.generate().pubkey
    answered: list[tuple[int, int]] = []  # (entries synced when answered, entries then)

    async def one(payer: Keypair) -> None:
        await sign_and_send(k2, _move(payer, to, 1000), payer)
        answered.append((synced[-1] if synced else 0, k2._seq))

    await asyncio.gather(*(one(p) for p in payers))
    assert len(answered) == 20
    assert 1 <= len(synced) < 20  # grouped: fewer syncs than transactions
    # each was answered only once a sync had covered it
    for covered, _ in answered:
        assert covered >= 1
    assert synced[-1] == k2._seq and await k2.get_balance(to) == 20 * 1000


async def test_a_log_that_cannot_be_written_applies_nothing(
    k2: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = await funded(k2, 1)
    to = Keypair.generate().pubkey
    before = (await k2.get_balance(payer.pubkey), await k2.get_balance(to), k2._seq)
    real_put = k2._store.put

    def full(key: str, value: Any, sync: bool = False) -> None:
        if key.startswith("log/"):
            raise OSError(28, "No space left on device")
        real_put(key, value, sync)

    monkeypatch.setattr(k2._store, "put", full)
    with pytest.raises(TransactionError, match=r"could not write its log.*not applied"):
        await sign_and_send(k2, _move(payer, to, 5000), payer)
    after = (await k2.get_balance(payer.pubkey), await k2.get_balance(to), k2._seq)
    assert after == before  # memory did not run ahead of the disk
    monkeypatch.setattr(k2._store, "put", real_put)
    await sign_and_send(k2, _move(payer, to, 5000), payer)  # the disk back: it goes through
    assert await k2.get_balance(to) == 5000


async def test_a_sync_that_fails_is_an_error_to_the_sender(
    k2: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer = await funded(k2, 1)

    def broken() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(k2._store, "sync", broken)
    with pytest.raises(TransactionError, match="could not make its log durable"):
        await sign_and_send(k2, _move(payer, Keypair.generate().pubkey, 5000), payer)


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
