from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k2node.config import Settings
from k2node.contract.units import ROE_PER_KOII, SlotClock
from k2node.crypto import Keypair
from k2node.node.clock import SlotTimer
from k2node.settlement.base import sign_tx
from k2node.settlement.local import LocalK2

REPO = Path(__file__).resolve().parents[1]
# Reference data from independent implementations, copied from the team's shared/vectors
VECTORS = REPO / "tests" / "vectors"
SHARED_VECTORS = REPO.parent / "shared" / "vectors"


class FakeClock:
    """Wall time the test moves by hand, or a sleep on `timer()` moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def to_slot(self, k2: LocalK2, slot: int) -> None:
        self.now = k2.wall_time_of_slot(slot) + 0.001

    def timer(self, slots: SlotClock) -> VirtualTimer:
        return VirtualTimer(slots, self)


class VirtualTimer(SlotTimer):
    """The scheduler's clock in virtual time: a sleep moves the time and returns at once."""

    def __init__(self, slots: SlotClock, clock: FakeClock) -> None:
        super().__init__(slots, clock)
        self._clock = clock

    async def sleep(self, seconds: float) -> None:
        self._clock.now += max(0.0, seconds)
        await asyncio.sleep(0)

    async def sleep_until_slot(self, slot: int) -> bool:
        if self.current_slot() >= slot:
            return False
        self._clock.now = self.wall_time_of_slot(slot) + 1e-6
        await asyncio.sleep(0)
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def k2(tmp_path: Path, clock: FakeClock) -> Iterator[LocalK2]:
    chain = LocalK2.open(tmp_path / "k2", slot_ms=1000, clock=clock)
    yield chain
    chain.close()


TASK_ARGS: dict[str, Any] = {
    "task_name": "test task",
    "task_description": "for tests",
    "task_executable_network": "DEVELOPMENT",
    "task_audit_program": "main",
    "round_time": 20,
    "submission_window": 8,
    "audit_window": 8,
    "minimum_stake_amount": 1 * ROE_PER_KOII,
    "total_bounty_amount": 100 * ROE_PER_KOII,
    "bounty_amount_per_round": 3 * ROE_PER_KOII,
    "allowed_failed_distributions": 1,
}


async def send(k2: LocalK2, key: Keypair, ix: str, task_id: str, **args: Any) -> dict[str, Any]:
    return await k2.send(sign_tx(key, ix, task_id, args, k2.current_slot()))


async def create_task(k2: LocalK2, manager: Keypair, **overrides: Any) -> str:
    args = TASK_ARGS | overrides
    await k2.airdrop(manager.pubkey, args["total_bounty_amount"])
    result = await k2.send(sign_tx(manager, "CreateTask", "", args, k2.current_slot()))
    return str(result["task_id"])


async def stake(k2: LocalK2, key: Keypair, task_id: str, amount: int = 2 * ROE_PER_KOII) -> None:
    await k2.airdrop(key.pubkey, amount)
    await send(k2, key, "Stake", task_id, amount=amount, ip_address="http://127.0.0.1:1")


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], within: float = 30.0, every: float = 0.05
) -> None:
    """Wait on a condition, never on a fixed sleep; fail with a clear message at the bound."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


class RecordingK2(LocalK2):
    """A local K2 that remembers every transaction it was sent, accepted or not."""

    sent: list[tuple[str, str, Any]]

    async def send(self, tx: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(self, "sent"):
            self.sent = []
        args = tx.get("args") if isinstance(tx, dict) else None
        round_ = args.get("round") if isinstance(args, dict) else None
        self.sent.append((str(tx.get("ix")), str(tx.get("signer")), round_))
        return await super().send(tx)

    def attempts(self, ix: str, signer: str) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for sent_ix, sent_signer, round_ in getattr(self, "sent", []):
            if sent_ix == ix and sent_signer == signer:
                counts[round_] = counts.get(round_, 0) + 1
        return counts


def node_settings(data_dir: Path, task_id: str, entry: str = "", **extra: Any) -> Settings:
    from k2node.config import DEFAULT_TASK_ENTRY

    return Settings(
        data_dir=data_dir,
        wallet_location=data_dir / "wallets" / "id.json",
        tasks=(task_id,),
        task_stakes=(2 * ROE_PER_KOII,),
        server_port=0,
        task_entry=entry or DEFAULT_TASK_ENTRY,
        **extra,
    )


def task_file(name: str) -> str:
    return str(REPO / "tests" / "tasks" / name)
