"""`k2node simulate` at scale: the example task with 10% liars, time per node and round as
the network grows (linear growth keeps that figure flat), and a harness round of 4 nodes."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from k2node.examples.hello_task import HelloTask
from k2node.testing import TaskHarness
from k2node.testing.adversaries import Role
from k2node.testing.simulation import SETTLED_AFTER, simulate

# (nodes, rounds): bounded so that the whole section takes a few minutes
RUNS = ((100, 10), (300, 10), (1000, 3))
TARGET = "1,000 nodes x 100 rounds in under 60 s: 0.6 ms per node-round"


async def bench_simulation(tmp: Path) -> None:
    print("simulate: hello task, 10% liars")
    costs: list[tuple[int, float]] = []
    for nodes, rounds in RUNS:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=tmp) as folder:
            report = await simulate(HelloTask, Path(folder), nodes, rounds, {Role.LIAR: 0.1}, 1)
        took = time.perf_counter() - started
        simulated = rounds + SETTLED_AFTER - 1  # the last round's payout settles 3 later
        per = took / (nodes * simulated) * 1000
        costs.append((nodes, per))
        honest = "never" if not report.honest_slashed else "SLASHED"
        print(
            f"  {nodes:>5} nodes x {rounds} rounds ({simulated} simulated): {took:6.1f} s, "
            f"{per:.2f} ms per node-round, setup included (honest slashed: {honest})"
        )
    (n0, c0), (n1, c1) = costs[0], costs[-1]
    print(f"  per node-round cost grows {c1 / c0:.2f}x from {n0} to {n1} nodes (linear: 1.00x)")
    print(f"  target: {TARGET}")
    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        async with TaskHarness.start(HelloTask, Path(folder), nodes=4, seed=1) as h:
            started = time.perf_counter()
            await h.run_rounds(7)
            took = time.perf_counter() - started
    print(f"  harness: 7 rounds of 4 nodes in {took:.2f} s ({took / 7 * 1000:.0f} ms a round)")
