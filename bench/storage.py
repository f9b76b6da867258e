"""The node's storage: the LevelDB store against raw plyvel, the embedded IPFS add against
SHA-256 over the same bytes (durable: the add's blocks are synced before its CID returns),
and an executable fetched from a peer and verified block by block."""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import time
import tracemalloc
from pathlib import Path

import aiohttp
import plyvel
from aiohttp import web
from common import free_port, record  # bench/, beside this file

from k2node.http_errors import json_errors
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.unixfs import CHUNK_SIZE
from k2node.node.http.gateway import IpfsGateway
from k2node.store import Store

RUNS = 3  # each ratio is the median of this many runs, baseline and store side by side


def _store_once(tmp: Path, n: int) -> tuple[float, float, float, float]:
    tmp.mkdir()
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
    return raw_put, raw_get, put, get


async def bench_store(tmp: Path, n: int = 100_000) -> None:
    runs = [_store_once(tmp / f"store-{i}", n) for i in range(RUNS)]
    raw_put, raw_get, put, get = (statistics.median(r[i] for r in runs) for i in range(4))
    put_ratio = statistics.median(r[2] / r[0] for r in runs)
    get_ratio = statistics.median(r[3] / r[1] for r in runs)
    print(f"store: {n:,} keys of small JSON values, median of {RUNS} runs")
    print(f"  raw plyvel put {n / raw_put:,.0f}/s get {n / raw_get:,.0f}/s")
    print(
        f"  Store      put {n / put:,.0f}/s get {n / get:,.0f}/s"
        f"  (slowdown put {put_ratio:.2f}x get {get_ratio:.2f}x; target <= 1.5x)"
    )
    record("store", put_slowdown=put_ratio, get_slowdown=get_ratio, raw_put_per_s=n / raw_put)


def _add_once(tmp: Path, data: bytes, name: str) -> tuple[float, float, float]:
    os.sync()  # what earlier runs left dirty is written out now, not during this add
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    sha = time.perf_counter() - started
    ipfs = EmbeddedIpfs.open(tmp / name)
    started = time.perf_counter()
    ipfs.add_bytes(data)
    add = time.perf_counter() - started
    source = tmp / f"{name}.file"
    source.write_bytes(data)
    started = time.perf_counter()
    ipfs.add_path(source)  # the same blocks: only hashed, found, and not written again
    again = time.perf_counter() - started
    ipfs.close()
    return sha, add, again


async def bench_ipfs_add(tmp: Path, size: int = 100 * 1024 * 1024) -> None:
    """Embedded add vs plain SHA-256 over the same bytes; peak memory adding 1 GB."""
    data = random.Random(0).randbytes(size)
    runs = [_add_once(tmp, data, f"ipfs-add-{i}") for i in range(RUNS)]
    del data
    mb = size / 1e6
    sha, add, again = (statistics.median(r[i] for r in runs) for i in range(3))
    ratio = statistics.median(r[0] / r[1] for r in runs)
    print(f"ipfs add: {mb:.0f} MB, median of {RUNS} runs, each in a new store")
    print(
        f"  sha256 {mb / sha:,.0f} MB/s  embedded add {mb / add:,.0f} MB/s, synced before its"
        f" CID returns (ratio {ratio:.2f}; target >= 0.5)"
    )
    print(f"  the same file added again from disk: {mb / again:,.0f} MB/s (nothing to write)")
    block = random.Random(1).randbytes(CHUNK_SIZE)
    gigabyte = 1024 * 1024 * 1024
    ipfs = EmbeddedIpfs.open(tmp / "ipfs-stream")
    tracemalloc.start()
    ipfs.add_chunks(block for _ in range(gigabyte // CHUNK_SIZE))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ipfs.close()
    print(f"  adding 1 GB streamed: peak Python memory {peak / 1e6:.1f} MB (target: a few MB)")
    record("ipfs_add", ratio_to_sha256=ratio, add_mb_per_s=mb / add, sha256_mb_per_s=mb / sha)
    record("ipfs_add", stream_1gb_peak_mb=peak / 1e6)


async def bench_executable_fetch(tmp: Path, size: int = 20 * 1024 * 1024) -> None:
    """A 20 MB executable fetched from a peer's gateway and verified block by block."""
    holder = EmbeddedIpfs.open(tmp / "fetch-a")
    cid = await holder.publish(random.randbytes(size))
    app = web.Application(middlewares=[json_errors])
    app.router.add_routes(IpfsGateway(holder, lambda _: False, "a").routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
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
    record("executable_fetch", seconds_20mb=took)
