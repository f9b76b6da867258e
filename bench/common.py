"""What the benchmark sections share: percentiles, ports, load generation, K2 tasks, and the
figures each section records for `bench/results/<date>.json`."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
from nodes import REPO  # bench/, beside this file
from solders.hash import Hash
from solders.keypair import Keypair as SoldersKeypair

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.settlement import transactions, wire
from k2node.settlement.local import LocalK2

RESULTS: dict[str, dict[str, Any]] = {}


def record(section: str, **figures: Any) -> None:
    """Keep figures for the results file (printing stays with each section)."""
    RESULTS.setdefault(section, {}).update(figures)


def write_results(folder: Path, day: str) -> Path:
    """The day's figures, those of sections not run this time kept from an earlier run."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{day}.json"
    known: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    known.update(RESULTS)
    path.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def growth(points: list[tuple[float, float]]) -> str:
    """How a cost grows with its size, from the first and last measurements: the exponent k
    of cost ~ size^k (1: linear), in words."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    k = math.log(y1 / y0) / math.log(x1 / x0) if y0 > 0 and y1 > 0 and x1 != x0 else float("nan")
    if k < 0.2:
        word = "flat"
    elif k < 1.15:
        word = "linear" if k > 0.85 else "sublinear"
    else:
        word = "superlinear"
    return f"{word} (cost ~ size^{k:.2f} from {x0:,.0f} to {x1:,.0f})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(url: str, connections: int = 32, seconds: float = 5.0) -> dict[str, float]:
    """Requests per second and p99 latency: wrk where it is installed (Debian's package),
    else bench/load.py, a Python load generator that is itself the limit on two cores."""
    if shutil.which("wrk"):
        threads = min(2, connections)
        args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", url]
    else:
        args = [sys.executable, str(REPO / "bench" / "load.py"), url, str(connections)]
        args.append(str(seconds))
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if not shutil.which("wrk"):
        result: dict[str, float] = json.loads(out)
        return result
    text = out.decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    if rps is None or p99 is None:
        raise RuntimeError(f"wrk said: {text}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"rps": float(rps.group(1)), "p99_ms": float(p99.group(1)) * scale}


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "bench/load.py (no wrk here)"


async def wait_http(url: str, proc: asyncio.subprocess.Process | None = None) -> None:
    """Until `url` answers 200; RuntimeError if `proc` (what serves it) exits first."""
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"{url}: its process exited ({proc.returncode})")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def stop(proc: asyncio.subprocess.Process, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; returns once the process is gone."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def rpc_post(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    async with session.post(url, json=body) as resp:
        return await resp.json()


async def wait_rpc(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            await rpc_post(session, url, "getHealth")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def create_task(k2: LocalK2, manager: Keypair, args: dict[str, Any]) -> str:
    """A task on `k2`, made by `manager` (funded here) with the given launch fields."""
    await k2.airdrop(manager.pubkey, args["total_bounty_amount"] + ROE_PER_KOII)
    task, pot = SoldersKeypair(), SoldersKeypair().pubkey()
    fields = {"task_description": "", "task_audit_program": "main", "task_metadata": ""}
    fields |= {"task_executable_network": "DEVELOPMENT", "local_vars": "", **args}
    payer = wire.signer(manager)
    built = transactions.create_task(payer.pubkey(), task.pubkey(), pot, fields, 1000)
    blockhash = Hash.from_string((await k2.latest_blockhash())[0])
    await k2.send(wire.sign(built, payer, [task], blockhash).wire)
    return str(task.pubkey())
