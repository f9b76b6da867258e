"""The JavaScript Koii node's HTTP stack, the peer of the node API benchmark's proxy figure.

koii-node forwards `/task/<id>/...` to each task's own Express server with express-http-proxy;
bench/js_proxy/ holds that setup and a bare Express task server, run here under `node`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from common import free_port, stop, wait_http  # bench/, beside this file

HERE = Path(__file__).resolve().parent / "js_proxy"
# shaped like a K2 task id (a base58 public key)
TASK_ID = "Bench1111111111111111111111111111111111111111"


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "k2node-bench" / "js_proxy"


def _install(cache: Path) -> str | None:
    """The npm dependencies in `cache`, installed again only when package.json changed.
    Returns why they could not be installed, or None."""
    wanted = (HERE / "package.json").read_bytes()
    stamp = cache / "package.json"
    if (cache / "node_modules").is_dir() and stamp.is_file() and stamp.read_bytes() == wanted:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache / "node_modules", ignore_errors=True)
    (cache / "package-lock.json").unlink(missing_ok=True)
    stamp.write_bytes(wanted)
    args = ["npm", "install", "--no-audit", "--no-fund", "--omit=dev"]
    done = subprocess.run(args, cwd=cache, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        stamp.unlink()  # so that the next run tries again
        lines = (done.stdout + done.stderr).strip().splitlines()
        return f"npm install failed: {lines[-1] if lines else done.returncode}"
    return None


def _log(path: Path) -> IO[bytes]:
    return path.open("wb")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-500:]


async def _start(tmp: Path, cache: Path, script: str, *args: str) -> asyncio.subprocess.Process:
    # the scripts stay in the repo, NODE_PATH lets their require() find the cached packages;
    # production, as a packaged koii-node runs
    env = {"PATH": os.environ["PATH"], "NODE_PATH": str(cache / "node_modules")}
    env["NODE_ENV"] = "production"
    with _log(tmp / f"{script}.log") as log:  # node keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            "node", str(HERE / script), *args, env=env, stdout=log, stderr=log
        )


async def _wait_http(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    try:
        await wait_http(url, proc)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}: {_tail(log)}") from None


async def bench_js_proxy(
    tmp: Path, load: Callable[[str], Awaitable[dict[str, float]]]
) -> dict[str, float] | None:
    """A bare Express task server, then the same server behind the JS node's proxy."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        print(f"  JavaScript: skipped, {' and '.join(missing)} not on PATH")
        return None
    cache = _cache_dir()
    failed = await asyncio.to_thread(_install, cache)
    if failed:
        print(f"  JavaScript: skipped, {failed}")
        return None
    task_port, proxy_port = free_port(), free_port()
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(await _start(tmp, cache, "task_server.js", str(task_port)))
        bare_url = f"http://127.0.0.1:{task_port}/"
        await _wait_http(bare_url, procs[0], tmp / "task_server.js.log")
        args = [str(proxy_port), TASK_ID, str(task_port)]
        procs.append(await _start(tmp, cache, "node_proxy.js", *args))
        proxied_url = f"http://127.0.0.1:{proxy_port}/task/{TASK_ID}/"
        await _wait_http(proxied_url, procs[1], tmp / "node_proxy.js.log")
        bare = await load(bare_url)
        proxied = await load(proxied_url)
    finally:
        for proc in procs:
            await stop(proc, 5)
    versions = json.loads((HERE / "package.json").read_text())["dependencies"]
    print(
        f"  JavaScript: express {versions['express']}, express-http-proxy"
        f" {versions['express-http-proxy']}, as koii-node forwards /task/<id>/"
    )
    print(
        f"  JavaScript: bare Express {bare['rps']:,.0f} req/s p99 {bare['p99_ms']:.1f} ms;"
        f" behind express-http-proxy {proxied['rps']:,.0f} req/s p99 {proxied['p99_ms']:.1f} ms"
        f" (ratio {proxied['rps'] / bare['rps']:.2f})"
    )
    return {
        "express_rps": bare["rps"],
        "express_p99_ms": bare["p99_ms"],
        "express_proxy_rps": proxied["rps"],
        "express_proxy_p99_ms": proxied["p99_ms"],
    }
