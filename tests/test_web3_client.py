"""An unmodified JavaScript client, @solana/web3.js, against `k2node k2` and against the K2
URL a task gets from getRpcUrl in the embedded default. Runs where Node.js and npm are
installed (the package is installed once into ~/.cache/k2node-tests); skipped elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from k2node.config import Settings
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from k2node.settlement.service import K2Service
from tests.conftest import REPO, create_task, npm_modules, stake

WEB3 = "@solana/web3.js@1.98.0"
SCRIPT = REPO / "tests" / "js" / "web3_client.js"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return npm_modules(WEB3, "web3js", "@solana/web3.js")


async def _client(node_modules: Path, url: str, task_id: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        url,
        task_id,
        env={"PATH": os.environ["PATH"], "NODE_PATH": str(node_modules)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    seen: dict[str, Any] = json.loads(out)
    return seen


def _check(seen: dict[str, Any], task_id: str, name: str) -> None:
    assert seen["slot"] >= 0 and seen["airdropped"] == 2 * ROE_PER_KOII
    assert seen["transfer"] is None and seen["received"] == 12345
    assert seen["payerAfter"] == 2 * ROE_PER_KOII - 12345 - LAMPORTS_PER_SIGNATURE
    assert seen["fee"] == LAMPORTS_PER_SIGNATURE  # one signature
    assert seen["taskName"] == name and seen["stakers"] == 1
    assert seen["listed"] == [task_id]


async def test_web3_js_against_k2node_k2(node_modules: Path, tmp_path: Path) -> None:
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
    task_id = await create_task(k2, Keypair.generate())
    await stake(k2, Keypair.generate(), task_id)
    server = TestServer(K2Service(k2).app())
    await server.start_server()
    try:
        seen = await _client(node_modules, str(server.make_url("/")), task_id)
    finally:
        await server.close()
        k2.close()
    _check(seen, task_id, "test task")


async def test_web3_js_against_the_url_a_task_gets(node_modules: Path, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, wallet_location=tmp_path / "id.json", server_port=0, slot_ms=100
    )
    async with Node.manage(settings) as node:
        ((task_id, task),) = node.tasks.items()
        seen = await _client(node_modules, task.context.rpc_url, task_id)
    _check(seen, task_id, "k2node hello")
