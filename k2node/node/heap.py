"""The garbage collector, kept away from the slot boundaries where phases are sent.

Python collects when allocations pass a threshold, whatever the loop is doing: a collection
of the young objects of a busy node (copies of task states, messages) takes milliseconds,
and one that falls on a window's first slot delays every phase due then. Once the node has
started, what start-up made is frozen out of the collector's sight, the automatic
collector is switched off, and the node collects in the middle of each slot instead, where
no window opens: the young objects every slot, the older ones every 20 slots, a full
collection every 600 (four minutes of 400 ms slots).
"""

from __future__ import annotations

import gc

from k2node.node.clock import Clock

OLDER_EVERY = 20
FULL_EVERY = 600


def settle() -> None:
    """Collect once, then freeze what is left: modules, tasks and wallets stay for good,
    and a full collection no longer walks them."""
    gc.collect()
    gc.freeze()


def unsettle() -> None:
    """At shutdown: what was frozen is the collector's again (a process that runs nodes one
    after another, as tests do, keeps no garbage of the stopped ones)."""
    gc.unfreeze()


async def collect_between_slots(clock: Clock, settle_first: bool = False) -> None:
    """Run for as long as the node does (cancel it to stop); the automatic collector is
    off meanwhile, and as it was before after. `settle_first`: the first collection is the
    settling one (`settle`), mid-slot too: the node's timers are already running then, and
    its full collection takes milliseconds."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        collections = 0
        while True:
            midpoint = clock.wall_time_of_slot(clock.current_slot() + 1) + clock.slot_ms / 2000
            await clock.sleep(max(0.0, midpoint - clock.time()))
            if settle_first:
                settle_first = False
                settle()
                continue
            collections += 1
            if collections % FULL_EVERY == 0:
                gc.collect(2)
            else:
                gc.collect(1 if collections % OLDER_EVERY == 0 else 0)
    finally:
        if was_enabled:
            gc.enable()
