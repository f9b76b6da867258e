"""`k2node simulate` at scale, as a user runs it: the command itself, one process per run,
the example task with 10% liars through 100 rounds at 100, 300 and 1,000 nodes (wall time,
start-up included), the time per node and round as the network grows (linear growth keeps
that figure flat), and a harness round of 4 nodes."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from common import record  # bench/, beside this file
from nodes import REPO

from k2node.examples.hello_task import HelloTask
from k2node.testing import TaskHarness
from k2node.testing.simulation import SETTLED_AFTER

ROUNDS = 100
NODES = (100, 300, 1000)
TARGET_S = 60.0  # 1,000 nodes x 100 rounds
TASK = "k2node/examples/hello_task.py:HelloTask"


async def _simulate(nodes: int) -> tuple[float, dict[str, object]]:
    """One `k2node simulate --json` run: its wall time and its report."""
    command = [sys.executable, "-m", "k2node", "simulate", TASK, "--nodes", str(nodes)]
    command += ["--rounds", str(ROUNDS), "--liars", "0.1", "--seed", "1", "--json"]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await process.communicate()
    took = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"k2node simulate --nodes {nodes} exited {process.returncode}")
    report: dict[str, object] = json.loads(out)
    return took, report


async def bench_simulation(tmp: Path) -> None:
    print(f"simulate: `k2node simulate {TASK} --rounds {ROUNDS} --liars 0.1`, one process each")
    costs: list[tuple[int, float]] = []
    figures: dict[str, float] = {}
    for nodes in NODES:
        took, report = await _simulate(nodes)
        simulated = ROUNDS + SETTLED_AFTER - 1  # the last round's payout settles 3 later
        per = took / (nodes * simulated) * 1000
        costs.append((nodes, per))
        figures[f"wall_s_{nodes}"] = round(took, 2)
        figures[f"ms_per_node_round_{nodes}"] = round(per, 3)
        honest = "never" if not report["honest_slashed"] else "SLASHED"
        print(
            f"  {nodes:>5} nodes x {ROUNDS} rounds: {took:6.1f} s wall ({report['elapsed_s']} s "
            f"simulating), {per:.2f} ms per node-round (honest slashed: {honest})"
        )
    (n0, c0), (n1, c1) = costs[0], costs[-1]
    print(f"  per node-round cost grows {c1 / c0:.2f}x from {n0} to {n1} nodes (linear: 1.00x)")
    print(f"  target: 1,000 nodes x {ROUNDS} rounds under {TARGET_S:g} s")
    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        async with TaskHarness.start(HelloTask, Path(folder), nodes=4, seed=1) as h:
            started = time.perf_counter()
            await h.run_rounds(7)
            took = time.perf_counter() - started
    print(f"  harness: 7 rounds of 4 nodes in {took:.2f} s ({took / 7 * 1000:.0f} ms a round)")
    figures["growth_100_to_1000"] = round(c1 / c0, 2)
    figures["harness_ms_per_round_4_nodes"] = round(took / 7 * 1000, 1)
    record("simulation", **figures)
