"""The local K2 as a JSON-RPC service, and nodes sharing it over the network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.base import DuplicateTransaction, TransactionError, sign_tx
from k2node.settlement.local import LocalK2
from k2node.settlement.rpc import K2Unreachable, RpcSettlement
from k2node.settlement.service import K2Service
from tests.conftest import REPO, TASK_ARGS, node_settings, wait_for


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], LocalK2]]:
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
    client = TestClient(TestServer(K2Service(k2).app()))
    await client.start_server()
    yield client, k2
    await client.close()
    k2.close()


def _url(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("/"))


async def test_rpc_settlement_speaks_to_the_service(
    service: tuple[TestClient[Any, Any], LocalK2],
) -> None:
    client, k2 = service
    rpc = await RpcSettlement.connect(_url(client), client.session)
    assert abs(rpc.current_slot() - k2.current_slot()) <= 1
    assert rpc.wall_time_of_slot(10) == k2.wall_time_of_slot(10)
    manager = Keypair.generate()
    await rpc.airdrop(manager.pubkey, TASK_ARGS["total_bounty_amount"])
    assert await rpc.get_balance(manager.pubkey) == TASK_ARGS["total_bounty_amount"]
    tx = sign_tx(manager, "CreateTask", "", dict(TASK_ARGS), rpc.current_slot())
    task_id = (await rpc.send(tx))["task_id"]
    assert await rpc.transaction_applied(tx["signature"])
    with pytest.raises(DuplicateTransaction):
        await rpc.send(tx)
    with pytest.raises(TransactionError, match="insufficient balance"):
        await rpc.send(sign_tx(manager, "CreateTask", "", dict(TASK_ARGS), rpc.current_slot()))
    state = await rpc.get_task_state(task_id, {"is_stake_list_required": True})
    assert state["task_name"] == TASK_ARGS["task_name"] and state["stake_list"] == {}
    sections = await rpc.get_round_sections(task_id, 0, ("submissions",))
    assert sections == {"submissions": {"0": {}}}
    assert await rpc.get_distribution_list(task_id, manager.pubkey, 0) is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", -32700),
        (b"[]", -32600),
        (b'{"jsonrpc": "1.0", "method": "getSlot"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "mint"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "getSlot", "params": {}}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": []}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": [5]}', -32602),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getRoundSections", '
            b'"params": ["t", 0, ["stake_list"]]}',
            -32602,
        ),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": ["x"]}', -32000),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getTaskAccountInfo", "params": ["nope"]}',
            -32000,
        ),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "requestAirdrop", "params": ["bad", 1]}', -32000),
    ],
)
async def test_bad_requests_get_json_rpc_errors(
    service: tuple[TestClient[Any, Any], LocalK2], body: bytes, code: int
) -> None:
    client, _ = service
    resp = await client.post("/", data=body)
    answer = await resp.json()
    assert answer["error"]["code"] == code and answer["error"]["message"]


async def test_an_unreachable_service_is_a_clear_error() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(K2Unreachable, match=r"127\.0\.0\.1:9"):
            await RpcSettlement.connect("http://127.0.0.1:9/", session)


async def test_two_nodes_share_a_k2_service(
    tmp_path: Path, service: tuple[TestClient[Any, Any], LocalK2]
) -> None:
    client, k2 = service
    manager = Keypair.generate()
    await k2.airdrop(manager.pubkey, TASK_ARGS["total_bounty_amount"])
    args = dict(TASK_ARGS) | {"round_time": 20, "submission_window": 8, "audit_window": 8}
    task_id = (await k2.send(sign_tx(manager, "CreateTask", "", args, k2.current_slot())))[
        "task_id"
    ]
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.manage(node_settings(tmp_path / f"n{i}", task_id, k2_node_url=_url(client)))
            )
            for i in range(2)
        ]
        keys = [n.staking.pubkey for n in nodes if n.staking]

        async def paid() -> bool:
            state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
            return all(state["available_balances"].get(k, 0) > 0 for k in keys)

        await wait_for(paid, within=60)
    state = await k2.get_task_state(task_id, {"is_stake_list_required": True})
    assert all(state["stake_list"][k] == 2 * ROE_PER_KOII for k in keys)


def test_k2_command_serves_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k2node",
            "k2",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
            "--log-format",
            "json",
        ],
        cwd=REPO,
        env={"PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = None
    while started is None:
        event = json.loads(proc.stdout.readline())
        if event["event"] == "k2_service_started":
            started = event
    assert started["url"].startswith("http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
