"""What the benchmarks share: starting a `k2node run` process, and reading a process's RSS."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


async def spawn_node(
    data_dir: Path, port: int, stdout: int, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`k2node run` on `data_dir` and `port` (0: any), with no settings but `env`'s."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "k2node",
        "run",
        "--env-file",
        str(data_dir / "none"),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        stdout=stdout,
        env={"PATH": os.environ["PATH"], **(env or {})},
        cwd=REPO,
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
