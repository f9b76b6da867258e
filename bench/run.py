"""k2node benchmarks: figures and ratios against baselines measured in the same run.

Run with `make bench` (every section), or `python bench/run.py SECTION...` for some of them.
Nothing here asserts a time; it prints what it measured and writes the figures to
`bench/results/<date>.json`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from api import bench_api  # bench/, beside this file
from common import write_results
from dispatch import bench_dispatch
from distribution import bench_distribution
from endpoints import bench_endpoints
from footprint import bench_footprint, bench_many_tasks
from k2load import bench_submissions
from nodes import REPO
from simulation import bench_simulation
from storage import bench_executable_fetch, bench_ipfs_add, bench_store

from k2node.logs import configure_logging


async def _simulation(tmp: Path) -> None:
    configure_logging("json", "error", sys.stderr)  # as `k2node simulate` logs
    await bench_simulation(tmp)


SECTIONS: dict[str, Callable[[Path], Awaitable[None]]] = {
    "dispatch": bench_dispatch,
    "store": bench_store,
    # the disk's own: before the K2 section's 100,000 synced writes, which the disk is still
    # working off for a while after (an add measured after them gave 0.18-0.50, alone 0.57-0.69)
    "ipfs": bench_ipfs_add,
    "fetch": bench_executable_fetch,
    "distribution": bench_distribution,
    "k2": bench_submissions,
    "footprint": bench_footprint,
    "tasks": bench_many_tasks,
    "api": bench_api,
    "endpoints": bench_endpoints,
    "simulation": _simulation,  # last: it changes the logging
}


async def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"no section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    with tempfile.TemporaryDirectory() as tmp_name:
        for name in names or list(SECTIONS):
            folder = Path(tmp_name) / name
            folder.mkdir()
            await SECTIONS[name](folder)
    day = datetime.date.today().isoformat()
    written = write_results(REPO / "bench" / "results", day)
    print(f"figures written to {written.relative_to(REPO)}")


if __name__ == "__main__":
    # production logging (JSON), to a sink, so the figures measure the node and not a terminal
    with open(os.devnull, "w") as sink:
        configure_logging("json", "info", sink)
        asyncio.run(main(sys.argv[1:]))
