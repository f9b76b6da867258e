"""Exactly once per round: a stop at any instant neither loses nor repeats an action."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from k2node.crypto import Keypair
from k2node.node.agent import TaskAgent
from k2node.node.ledger import CONFIRMED, PENDING, Action, Ledger
from k2node.settlement import wire
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import FakeClock, create_task, funded, stake


class Crash(BaseException):
    """The process dies here (not an error any code handles)."""


class CrashingK2:
    """Delegates to a local K2, dying just before or just after a transaction is sent."""

    def __init__(self, k2: LocalK2, when: str) -> None:
        self._k2 = k2
        self._when = when

    def __getattr__(self, name: str) -> Any:
        return getattr(self._k2, name)

    async def send(self, raw: bytes) -> str:
        if self._when == "before":
            raise Crash
        await self._k2.send(raw)
        raise Crash


async def _setup(tmp_path: Path, k2: LocalK2) -> tuple[str, Keypair, Keypair]:
    me = Keypair.generate()
    task_id = await create_task(k2, Keypair.generate())
    await stake(k2, me, task_id)
    return task_id, me, await funded(k2)


def _agent(
    task_id: str, k2: Any, store: Store, me: Keypair, main: Keypair, tmp_path: Path
) -> TaskAgent:
    return TaskAgent(task_id, k2, Ledger(store, k2), me, main, tmp_path / "task")


@pytest.mark.parametrize("when", ["before", "after"])
async def test_stop_between_submitting_and_confirming(
    tmp_path: Path, k2: LocalK2, clock: FakeClock, when: str
) -> None:
    task_id, me, main = await _setup(tmp_path, k2)
    clock.to_slot(k2, 20)
    store = Store.open(tmp_path / "node-db")
    dying = _agent(task_id, CrashingK2(k2, when), store, me, main, tmp_path)
    with pytest.raises(Crash):
        await dying.submit("value", 0)
    key = Ledger.key(task_id, "submit", 0)
    assert store.get(key)["status"] == PENDING  # written before the send
    store.close()

    # the restarted node
    store = Store.open(tmp_path / "node-db")
    ledger = Ledger(store, k2)
    confirmed, owed = await ledger.reconcile(task_id)
    assert (confirmed, owed) == ((1, 0) if when == "after" else (0, 1))
    sent_before = k2.tx_count.get("SubmitTask", 0)
    result = await _agent(task_id, k2, store, me, main, tmp_path).submit("value", 0)
    sent_now = k2.tx_count.get("SubmitTask", 0) - sent_before
    assert sent_now == (0 if when == "after" else 1)  # nothing twice, nothing lost
    assert result.get("already") is (True if when == "after" else None)
    assert store.get(key)["status"] == CONFIRMED
    state = await k2.get_task_state(task_id, {"is_submission_required": True})
    assert state["submissions"]["0"][me.pubkey]["submission_value"] == "value"
    store.close()


async def test_a_refused_action_may_be_asked_again(
    tmp_path: Path, k2: LocalK2, clock: FakeClock
) -> None:
    task_id, me, main = await _setup(tmp_path, k2)
    store = Store.open(tmp_path / "node-db")
    agent = _agent(task_id, k2, store, me, main, tmp_path)
    clock.to_slot(k2, 10)
    with pytest.raises(Exception, match="accepted in slots"):
        await agent.submit("early", 0)
    assert store.get(Ledger.key(task_id, "submit", 0))["status"] == "failed"
    clock.to_slot(k2, 20)
    signature = (await agent.submit("on time", 0))["signature"]
    assert await k2.transaction_applied(signature)
    store.close()


async def test_phase_marks_and_pruning(tmp_path: Path, k2: LocalK2) -> None:
    store = Store.open(tmp_path / "node-db")
    ledger = Ledger(store, k2)
    ledger.mark_phase("t", "executeTask", 3, "sent")
    assert not ledger.phase_done("t", "executeTask", 3)
    ledger.mark_phase("t", "executeTask", 3, "done")
    assert ledger.phase_done("t", "executeTask", 3)
    assert ledger.once("k") and not ledger.once("k")
    ledger.prune("t", 4)
    assert not ledger.phase_done("t", "executeTask", 3)
    store.close()


async def test_pruning_reads_only_stale_keys_of_every_kind(tmp_path: Path, k2: LocalK2) -> None:
    store = Store.open(tmp_path / "node-db")
    ledger = Ledger(store, k2)
    for r in (1, 5, 9):
        for action in Action:
            store.put(Ledger.key("t", action, r, "x"), {"status": CONFIRMED})
        ledger.mark_phase("t", "auditPayload", r, "done")
        assert ledger.once(f"logged/t/{r:010d}/payout-PayoutSuccessful")
    store.put(Ledger.key("other", "submit", 1), {"status": CONFIRMED})
    ranges: list[tuple[str, str]] = []
    between = store.keys_between

    def recorded(start: str, stop: str) -> list[str]:
        ranges.append((start, stop))
        return between(start, stop)

    store.keys_between = recorded  # type: ignore[method-assign]
    ledger.prune("t", 6)
    left = store.keys("ledger/t/") + store.keys("phase/t/") + store.keys("logged/t/")
    assert all("0000000009" in k for k in left) and len(left) == len(Action) + 2
    assert store.keys("ledger/other/")  # another task's entries are its own
    assert all(start.endswith("0000000000") for start, _ in ranges)
    # the next pruning reads on from where this one stopped, not from the first round
    ranges.clear()
    ledger.prune("t", 6)
    assert ranges == []
    ledger.prune("t", 10)
    assert ranges and all(
        start.endswith("0000000006") and stop.endswith("0000000010") for start, stop in ranges
    )
    assert store.keys("phase/t/") == []
    store.close()


async def test_latest_confirmed_round_reads_from_the_newest_end(
    tmp_path: Path, k2: LocalK2
) -> None:
    store = Store.open(tmp_path / "node-db")
    ledger = Ledger(store, k2)
    assert ledger.latest_confirmed_round("t", "submit") is None
    store.put(Ledger.key("t", "submit", 3), {"status": CONFIRMED})
    store.put(Ledger.key("t", "submit", 12), {"status": CONFIRMED})
    store.put(Ledger.key("t", "submit", 13), {"status": PENDING, "tx": {}})
    store.put(Ledger.key("t", "submit-other", 20), {"status": CONFIRMED})
    assert ledger.latest_confirmed_round("t", "submit") == 12
    store.close()


async def test_a_pending_action_is_resent_as_the_same_bytes_until_its_blockhash_expires(
    tmp_path: Path, k2: LocalK2, clock: FakeClock
) -> None:
    main, to = await funded(k2), Pubkey.new_unique()
    store = Store.open(tmp_path / "node-db")
    lamports = 0

    async def make_tx() -> wire.Signed:
        blockhash = Hash.from_string((await k2.latest_blockhash())[0])
        payer = wire.signer(main)
        move = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))
        return wire.sign([move], payer, [], blockhash)

    for expired in (False, True):
        lamports = 7 + expired  # two actions, two different transfers
        key = f"ledger/t/payout/{int(expired):010d}"
        with pytest.raises(Crash):  # the node dies before the transaction leaves
            await Ledger(store, CrashingK2(k2, "before")).send_once(key, make_tx)  # type: ignore[arg-type]
        pending = store.get(key)
        assert pending["status"] == PENDING
        if expired:
            clock.to_slot(k2, k2.current_slot() + 151)
        result = await Ledger(store, k2).send_once(key, make_tx)
        # the same bytes while they may still land; signed afresh once they cannot
        assert (result["signature"] == pending["signature"]) is not expired
        assert store.get(key) == {"status": CONFIRMED, "signature": result["signature"]}
    assert await k2.get_balance(str(to)) == 15  # each action once


async def test_two_callers_of_one_action_send_it_once(tmp_path: Path, k2: LocalK2) -> None:
    main, to = await funded(k2), Pubkey.new_unique()
    store = Store.open(tmp_path / "node-db")
    ledger = Ledger(store, k2)
    built = 0

    async def make_tx() -> wire.Signed:
        nonlocal built
        built += 1
        await asyncio.sleep(0)  # the other caller runs meanwhile
        blockhash = Hash.from_string((await k2.latest_blockhash())[0])
        payer = wire.signer(main)
        move = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=built))
        return wire.sign([move], payer, [], blockhash)

    first, second = await asyncio.gather(
        ledger.send_once("ledger/t/submit/0000000001", make_tx),
        ledger.send_once("ledger/t/submit/0000000001", make_tx),
    )
    assert built == 1 and second == {"signature": first["signature"], "already": True}
    store.close()
