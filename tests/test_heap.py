"""The node's garbage collection: frozen after start, then run in the middle of slots."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from k2node.contract.units import SlotClock
from k2node.node import heap
from tests.conftest import FakeClock


async def test_collections_fall_mid_slot_and_the_collector_gives_gc_back(
    clock: FakeClock,
) -> None:
    slots = SlotClock(clock.now + 0.123, 400.0)
    timer = clock.timer(slots)
    seen: list[tuple[int, float]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append((info["generation"], clock.now))

    gc.callbacks.append(record)
    try:
        collector = asyncio.create_task(heap.collect_between_slots(timer))
        while len(seen) < heap.OLDER_EVERY + 1:
            await asyncio.sleep(0)
            assert not gc.isenabled()  # no collection at a time of Python's choosing
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    finally:
        gc.callbacks.remove(record)
    assert gc.isenabled()
    for _, at in seen:
        into_slot = (at - slots.genesis) % 0.4
        assert abs(into_slot - 0.2) < 1e-6, into_slot  # half a slot from either boundary
    generations = [g for g, _ in seen]
    assert generations[heap.OLDER_EVERY - 1] == 1 and set(generations[: heap.OLDER_EVERY - 1]) == {
        0
    }


def test_settle_freezes_what_start_up_made() -> None:
    kept = [object() for _ in range(10)]
    before = gc.get_freeze_count()
    heap.settle()
    try:
        assert gc.get_freeze_count() >= before + len(kept)
    finally:
        gc.unfreeze()


async def test_the_settling_collection_falls_mid_slot_too(clock: FakeClock) -> None:
    slots = SlotClock(clock.now + 0.123, 400.0)
    timer = clock.timer(slots)
    seen: list[tuple[int, float, int]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append((info["generation"], clock.now, gc.get_freeze_count()))

    kept = [object() for _ in range(10)]
    gc.unfreeze()
    gc.callbacks.append(record)
    try:
        collector = asyncio.create_task(heap.collect_between_slots(timer, settle_first=True))
        while len(seen) < 2:
            await asyncio.sleep(0)
            assert not gc.isenabled()
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()
    (first, at, frozen_before), (second, _, frozen_after) = seen
    assert first == 2 and frozen_before == 0  # the full collection, then the freeze
    assert frozen_after >= len(kept) and second == 0  # then the young ones as before
    assert abs((at - slots.genesis) % 0.4 - 0.2) < 1e-6
