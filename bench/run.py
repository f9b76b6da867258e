"""k2node benchmarks: figures and ratios against baselines measured in the same run.

Run with `make bench`. Nothing here asserts a time; it prints what it measured.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import plyvel
from aiohttp import web
from endpoints import bench_endpoints  # bench/, beside this file
from nodes import REPO, rss_mb, spawn_node
from simulation import bench_simulation
from solders.hash import Hash
from solders.keypair import Keypair as SoldersKeypair
from solders.pubkey import Pubkey

from k2node.contract.distribution import default_distribution, select_distribution_submitter
from k2node.contract.launch import TASK_MODE, TaskArgs
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.http_errors import json_errors
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.unixfs import CHUNK_SIZE
from k2node.logs import configure_logging
from k2node.node.agent import TaskAgent
from k2node.node.clock import SlotTimer
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http.gateway import IpfsGateway
from k2node.node.ledger import Ledger
from k2node.node.process import TaskSpec
from k2node.node.running import RunningTask
from k2node.settlement import transactions, wire
from k2node.settlement.local import LocalK2
from k2node.settlement.wire import Ix
from k2node.store import Store


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _idle_timer_baseline(samples: int = 300) -> list[float]:
    delays = []
    for _ in range(samples):
        target = time.time() + 0.005
        await asyncio.sleep(0.005)
        delays.append((time.time() - target) * 1000)
    return delays


async def bench_dispatch(tmp: Path, tasks: int = 20, rounds: int = 8) -> None:
    """Delay from a window's first slot to the phase message leaving the node."""
    k2 = LocalK2.open(tmp / "k2-dispatch", slot_ms=20)
    manager = Keypair.generate()
    store = Store.open(tmp / "node-dispatch")
    ledger = Ledger(store, k2)
    schedulers = []
    for i in range(tasks):
        args = {
            "task_name": f"t{i}",
            "round_time": 10,
            "submission_window": 4,
            "audit_window": 4,
            "total_bounty_amount": 10,
            "bounty_amount_per_round": 1,
            "minimum_stake_amount": 0,
            "allowed_failed_distributions": 0,
        }
        task_id = await _create_task(k2, manager, args)
        staking = Keypair.generate()
        agent = TaskAgent(task_id, k2, ledger, staking, manager, tmp / task_id)
        # the node's own task object, its process never started: a phase goes nowhere
        context = TaskContext(agent, f"t{i}", "secret", 0, "http://127.0.0.1:1")
        argv = TaskArgs(f"t{i}", task_id, 0, TASK_MODE, "k", "secret", "u", "u", "0", 0)
        spec = TaskSpec(argv, "none:None", tmp / task_id / "task.log")
        task = RunningTask(context, spec, SlotTimer(k2), EventHub())
        schedulers.append(task.scheduler)
    burner = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    baseline = await _idle_timer_baseline()
    jobs = [asyncio.create_task(s.run()) for s in schedulers]
    await asyncio.sleep(rounds * 10 * 0.020)
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    burner.kill()
    await burner.wait()
    delays = [d for s in schedulers for d in s.delays_ms]
    print(f"dispatch: {tasks} tasks, {len(delays)} phases, one CPU burner beside the node")
    print(
        f"  phase delay p50 {_p(delays, 0.5):.3f} ms  p99 {_p(delays, 0.99):.3f} ms"
        f"  (target p99 <= 2 ms)"
    )
    print(f"  idle asyncio timer p99 {_p(baseline, 0.99):.3f} ms (baseline, same run)")
    store.close()
    k2.close()


def bench_store(tmp: Path, n: int = 100_000) -> None:
    raw = plyvel.DB(str(tmp / "raw"), create_if_missing=True)
    started = time.perf_counter()
    for i in range(n):
        raw.put(f"kv/k{i}".encode(), b'{"v":1}')
    raw_put = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        raw.get(f"kv/k{i}".encode())
    raw_get = time.perf_counter() - started
    raw.close()
    store = Store.open(tmp / "store")
    started = time.perf_counter()
    for i in range(n):
        store.put(f"kv/k{i}", {"v": 1})
    put = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        store.get(f"kv/k{i}")
    get = time.perf_counter() - started
    store.close()
    print(f"store: {n} keys")
    print(f"  raw plyvel put {n / raw_put:,.0f}/s get {n / raw_get:,.0f}/s")
    print(
        f"  Store      put {n / put:,.0f}/s get {n / get:,.0f}/s"
        f"  (slowdown put {put / raw_put:.2f}x get {get / raw_get:.2f}x; target <= 2x)"
    )


def bench_distribution(n: int = 100_000) -> None:
    keys = [Keypair.generate().pubkey for _ in range(min(n, 2000))]
    names = [f"{keys[i % len(keys)]}{i}" for i in range(n)]
    entries = {k: {"submission_value": f"v{i}", "slot": i, "round": 2} for i, k in enumerate(names)}
    submissions = {"0": entries, "1": entries, "2": entries}
    started = time.perf_counter()
    select_distribution_submitter(submissions, {}, {}, 2, False)
    selected = time.perf_counter() - started
    started = time.perf_counter()
    dist = default_distribution(entries, {}, dict.fromkeys(names, ROE_PER_KOII), 10**12)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    regenerated = default_distribution(entries, {}, dict.fromkeys(names, ROE_PER_KOII), 10**12)
    assert regenerated == dist
    audited = time.perf_counter() - started
    print(f"distribution: {n:,} submitters")
    print(
        f"  select {selected * 1000:.0f} ms  generate {generated * 1000:.0f} ms"
        f"  audit {audited * 1000:.0f} ms  total {(selected + generated + audited):.2f} s"
        f"  (target < 1 s)"
    )


async def _create_task(k2: LocalK2, manager: Keypair, args: dict[str, Any]) -> str:
    await k2.airdrop(manager.pubkey, args["total_bounty_amount"] + ROE_PER_KOII)
    task, pot = SoldersKeypair(), SoldersKeypair().pubkey()
    fields = {"task_description": "", "task_audit_program": "main", "task_metadata": ""}
    fields |= {"task_executable_network": "DEVELOPMENT", "local_vars": "", **args}
    payer = wire.signer(manager)
    built = transactions.create_task(payer.pubkey(), task.pubkey(), pot, fields, 1000)
    blockhash = Hash.from_string((await k2.latest_blockhash())[0])
    await k2.send(wire.sign(built, payer, [task], blockhash).wire)
    return str(task.pubkey())


async def _staked_load(path: Path, n: int) -> tuple[str, list[SoldersKeypair], Keypair]:
    """A task with `n` staked keys, made as if three minute-long slots ago: reopened now,
    round 0's submission window is open for a minute."""
    k2 = LocalK2.open(path, slot_ms=60_000, clock=lambda: time.time() - 180)
    args = {
        "task_name": "load",
        "round_time": 3,
        "submission_window": 1,
        "audit_window": 1,
        "total_bounty_amount": 10,
        "bounty_amount_per_round": 1,
        "minimum_stake_amount": 0,
        "allowed_failed_distributions": 0,
    }
    payer = Keypair.generate()
    task_id = await _create_task(k2, payer, args)
    await k2.airdrop(payer.pubkey, n * 2 * transactions.STAKING_EXTRA)
    pot = Pubkey.from_string((await k2.get_task_state(task_id))["stake_pot_account"])
    stakers = [SoldersKeypair() for _ in range(n)]
    blockhash = Hash.from_string((await k2.latest_blockhash())[0])
    task = Pubkey.from_string(task_id)
    for key in stakers:
        built = transactions.stake(
            wire.signer(payer).pubkey(), key.pubkey(), task, pot, 1, "", False
        )
        await k2.send(wire.sign(built, wire.signer(payer), [key], blockhash).wire)
    k2.close()
    return task_id, stakers, payer


def _submissions(
    task_id: str, stakers: list[SoldersKeypair], payer: Keypair, blockhash: str
) -> list[bytes]:
    task, recent, pays = (
        Pubkey.from_string(task_id),
        Hash.from_string(blockhash),
        wire.signer(payer),
    )
    return [
        wire.sign(
            [
                transactions.round_action(
                    Ix.SUBMIT_TASK, task, k.pubkey(), submission="x" * 64, round=0
                )
            ],
            pays,
            [k],
            recent,
        ).wire
        for k in stakers
    ]


async def bench_submissions(tmp: Path, n: int = 10_000) -> None:
    """K2 wire submissions: built and signed by the node, taken by the local K2 in process,
    and by `k2node k2` over HTTP JSON-RPC."""
    task_id, stakers, payer = await _staked_load(tmp / "k2-subs", n)
    k2 = LocalK2.open(tmp / "k2-subs", slot_ms=60_000)  # real time now: slot 3
    blockhash, _ = await k2.latest_blockhash()
    started = time.perf_counter()
    txs = _submissions(task_id, stakers, payer, blockhash)
    signing_ms = (time.perf_counter() - started) * 1000 / n
    started = time.perf_counter()
    pending = list(txs)

    async def sender() -> None:  # 32 at a time, as over HTTP: their syncs are shared
        while pending:
            await k2.send(pending.pop())

    await asyncio.gather(*(sender() for _ in range(32)))
    await k2.aclose()  # a snapshot the run started counts, as it does in the service
    in_process = time.perf_counter() - started
    print(f"K2 wire transactions, {n:,} submissions in one round")
    print(f"  the node builds and signs one in {signing_ms:.3f} ms (target < 1 ms)")
    print(
        f"  local K2 in process, 32 senders: {in_process:.2f} s ({n / in_process:,.0f}/s, "
        "checks and durable log included; target >= 3,000/s)"
    )
    task_id, stakers, payer = await _staked_load(tmp / "k2-service", n)
    port = _free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "k2node",
        "k2",
        "--port",
        str(port),
        "--data-dir",
        str(tmp / "k2-service"),
        "--slot-ms",
        "60000",
        "--log-format",
        "json",
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession() as session:
        await _wait_rpc(session, url)
        answer = await _post(session, url, "getLatestBlockhash")
        txs = _submissions(task_id, stakers, payer, answer["result"]["value"]["blockhash"])
        queue = [base64.b64encode(raw).decode() for raw in txs]
        refused = 0

        async def sender() -> None:
            nonlocal refused
            while queue:
                reply = await _post(
                    session, url, "sendTransaction", queue.pop(), {"encoding": "base64"}
                )
                refused += "error" in reply

        cpu_before = _cpu_seconds(service.pid)
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(32)))
        over_http = time.perf_counter() - started
        busy = (_cpu_seconds(service.pid) - cpu_before) / over_http
    service.terminate()
    await service.wait()
    print(
        f"  k2node k2 over HTTP, 32 connections: {over_http:.2f} s ({n / over_http:,.0f}/s,"
        f" {refused} refused; the service busy {busy:.0%} of a core, the load generator"
        " beside it)"
    )
    print(f"  target: within 2x of the in-process rate ({n / in_process / 2:,.0f}/s here)")


BASE64 = {"encoding": "base64"}


def _cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _post(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    async with session.post(url, json=body) as resp:
        return await resp.json()


async def _wait_rpc(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            await _post(session, url, "getHealth")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def bench_executable_fetch(tmp: Path, size: int = 20 * 1024 * 1024) -> None:
    """A 20 MB executable fetched from a peer's gateway and verified block by block."""
    holder = EmbeddedIpfs.open(tmp / "fetch-a")
    cid = await holder.publish(random.randbytes(size))
    app = web.Application(middlewares=[json_errors])
    app.router.add_routes(IpfsGateway(holder, lambda _: False, "a").routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    async def peers() -> list[str]:
        return [f"http://127.0.0.1:{port}"]

    async with aiohttp.ClientSession() as session:
        fetcher = EmbeddedIpfs.open(tmp / "fetch-b", session, peers)
        started = time.perf_counter()
        data = await fetcher.fetch(cid, max_bytes=size)
        took = time.perf_counter() - started
        fetcher.close()
    await runner.cleanup()
    holder.close()
    assert len(data) == size
    print(f"executable fetch: {size // 2**20} MB from a peer's gateway, every block verified")
    print(f"  {took:.2f} s (target < 0.5 s)")


def bench_ipfs_add(tmp: Path, size: int = 100 * 1024 * 1024) -> None:
    """Embedded add vs plain SHA-256 over the same bytes; peak memory adding 1 GB."""
    data = random.Random(0).randbytes(size)
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    sha = time.perf_counter() - started
    ipfs = EmbeddedIpfs.open(tmp / "ipfs-bench")
    started = time.perf_counter()
    ipfs.add_bytes(data)
    add = time.perf_counter() - started
    mb = size / 1e6
    print(f"ipfs add: {mb:.0f} MB")
    print(
        f"  sha256 {mb / sha:,.0f} MB/s  embedded add {mb / add:,.0f} MB/s"
        f"  (ratio {sha / add:.2f}; target >= 0.5)"
    )
    del data
    block = random.Random(1).randbytes(CHUNK_SIZE)
    gigabyte = 1024 * 1024 * 1024
    tracemalloc.start()
    ipfs.add_chunks(block for _ in range(gigabyte // CHUNK_SIZE))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ipfs.close()
    print(f"  adding 1 GB streamed: peak Python memory {peak / 1e6:.1f} MB (target: a few MB)")


async def bench_footprint(tmp: Path) -> None:
    """`k2node run` from nothing: time to the first finished phase; node and task RSS."""
    started = time.perf_counter()
    proc = await spawn_node(tmp / "footprint", 0, asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    task_pid = first_phase = None
    while first_phase is None:
        event = json.loads(await proc.stdout.readline())
        if event["event"] == "task_process_started":
            task_pid = event["pid"]
        if event["event"] == "phase_done":
            first_phase = time.perf_counter() - started
    await asyncio.sleep(2)
    node_rss = await asyncio.to_thread(rss_mb, proc.pid)
    task_rss = await asyncio.to_thread(rss_mb, task_pid) if task_pid else float("nan")
    proc.terminate()
    await proc.wait()
    print("footprint: k2node run on an empty data directory")
    print(f"  start to first finished phase {first_phase:.2f} s (target < 2 s)")
    print(f"  node RSS {node_rss:.0f} MB (target <= 80)  task RSS {task_rss:.0f} MB (target <= 50)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(url: str, connections: int = 32, seconds: float = 5.0) -> dict[str, float]:
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


def _load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "bench/load.py (no wrk here)"


async def _wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def bench_api(tmp: Path) -> None:
    """Requests proxied by the node to a task's server vs a bare aiohttp handler."""
    bare_port = _free_port()
    bare = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "bare_server.py"), str(bare_port)
    )
    await _wait_http(f"http://127.0.0.1:{bare_port}/")
    baseline = await _load(f"http://127.0.0.1:{bare_port}/")
    bare.terminate()
    await bare.wait()
    port = _free_port()
    node = await spawn_node(tmp / "api", port, asyncio.subprocess.DEVNULL)
    await _wait_http(f"http://127.0.0.1:{port}/")
    tasks_url = f"http://127.0.0.1:{port}/tasks"
    async with aiohttp.ClientSession() as session, session.get(tasks_url) as resp:
        task_id = (await resp.json())[0]["TaskID"]
    url = f"http://127.0.0.1:{port}/task/{task_id}/"
    await _wait_http(url)
    proxied = await _load(url)
    node.terminate()
    await node.wait()
    print(f"node API: 32 connections, 5 s each, load from {_load_tool()}")
    print(f"  bare aiohttp handler {baseline['rps']:,.0f} req/s p99 {baseline['p99_ms']:.1f} ms")
    print(
        f"  node -> task proxy   {proxied['rps']:,.0f} req/s p99 {proxied['p99_ms']:.1f} ms"
        f"  (ratio {proxied['rps'] / baseline['rps']:.2f}; target >= 0.5, p99 <= 5 ms)"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        await bench_dispatch(tmp)
        bench_store(tmp)
        bench_distribution()
        await bench_submissions(tmp)
        bench_ipfs_add(tmp)
        await bench_executable_fetch(tmp)
        await bench_footprint(tmp)
        await bench_api(tmp)
        await bench_endpoints(tmp)
        configure_logging("json", "error", sys.stderr)  # as `k2node simulate` logs
        await bench_simulation(tmp)


if __name__ == "__main__":
    # production logging (JSON), to a sink, so the figures measure the node and not a terminal
    with open(os.devnull, "w") as sink:
        configure_logging("json", "info", sink)
        asyncio.run(main())
