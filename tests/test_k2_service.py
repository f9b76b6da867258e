"""The local K2 as a JSON-RPC service, and nodes sharing it over the network."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from solders.hash import Hash
from solders.instruction import Instruction
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from k2node.config import Settings
from k2node.contract.task_state import DISTRIBUTION_SECTIONS
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement import wire
from k2node.settlement.base import DuplicateTransaction, TransactionError
from k2node.settlement.local import LocalK2
from k2node.settlement.rpc import K2Unreachable, RpcSettlement
from k2node.settlement.service import K2Service
from tests.conftest import (
    REPO,
    TASK_ARGS,
    FakeClock,
    create_task,
    full_disk,
    node_settings,
    wait_for,
)

# base58 of `{"is_allowlisted":true`: the Desktop node's filter for task accounts
ALLOWLISTED = "aRN1MbEZhbr2W97MTP3RhQjjqHgoZN"


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
    await rpc.airdrop(manager.pubkey, 1000 * ROE_PER_KOII)
    assert await rpc.get_balance(manager.pubkey) == 1000 * ROE_PER_KOII
    task_id = await create_task(rpc, manager)  # type: ignore[arg-type]
    state = await rpc.get_task_state(task_id, {"is_stake_list_required": True})
    assert state["task_name"] == TASK_ARGS["task_name"] and state["stake_list"] == {}
    assert state == await k2.get_task_state(task_id, {"is_stake_list_required": True})
    sections = await rpc.get_round_sections(task_id, 0, ("submissions",))
    assert sections == {"submissions": {"0": {}}}
    info = await rpc.get_round_sections(task_id, 0, DISTRIBUTION_SECTIONS)
    assert info == {s: {"0": {}} for s in DISTRIBUTION_SECTIONS}
    assert await rpc.get_distribution_list(task_id, manager.pubkey, 0) is None
    for section in ("distributions_audit_record", "stake_list", "submissions"):
        assert await rpc.get_section(task_id, section) == await k2.get_section(task_id, section)
    account = await rpc.get_account(task_id)
    assert account is not None and account.owner == str(wire.PROGRAM_ID)
    assert account.data.startswith(b'{"is_allowlisted":true,')  # what the Desktop node finds
    with pytest.raises(TransactionError, match="does not exist"):
        await rpc.get_task_state(str(Pubkey.new_unique()))
    # one task program account among the program's, found as the Desktop node finds tasks
    listing = await client.post(
        "/",
        json=_rpc(
            "getProgramAccounts",
            str(wire.PROGRAM_ID),
            {"encoding": "base64", "filters": [{"memcmp": {"offset": 0, "bytes": ALLOWLISTED}}]},
        ),
    )
    found = (await listing.json())["result"]
    assert [a["pubkey"] for a in found] == [task_id]


def _rpc(method: str, *params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}


async def test_refused_transactions_are_clear_rpc_errors_and_change_nothing(
    k2: LocalK2, clock: FakeClock
) -> None:
    client = TestClient(TestServer(K2Service(k2).app()))
    await client.start_server()
    rpc = await RpcSettlement.connect(_url(client), client.session)
    payer, other = Keypair.generate(), Keypair.generate()
    await rpc.airdrop(payer.pubkey, ROE_PER_KOII)
    blockhash = Hash.from_string((await rpc.latest_blockhash())[0])
    to = Pubkey.from_string(other.pubkey)
    move = transfer(
        TransferParams(from_pubkey=Pubkey.from_string(payer.pubkey), to_pubkey=to, lamports=5)
    )
    good = wire.sign([move], wire.signer(payer), [], blockhash)
    await rpc.send(good.wire)
    with pytest.raises(DuplicateTransaction):
        await rpc.send(good.wire)  # replayed
    assert await rpc.transaction_applied(good.signature)
    balance = await rpc.get_balance(payer.pubkey)
    wrong_key = Transaction.populate(
        good.transaction.message, [wire.signer(other).sign_message(bytes(good.transaction.message))]
    )
    again = transfer(
        TransferParams(from_pubkey=Pubkey.from_string(payer.pubkey), to_pubkey=to, lamports=6)
    )
    stale = wire.sign([again], wire.signer(payer), [], blockhash)
    unknown = wire.sign(
        [Instruction(Pubkey.new_unique(), b"", [])], wire.signer(payer), [], blockhash
    )
    cases = {
        "signature verification failed": [
            bytes(Transaction.new_unsigned(good.transaction.message)),
            bytes(wrong_key),
        ],
        "malformed": [bytes(good.wire)[:40]],
        "at most 1232": [bytes(good.wire) + bytes(1200)],
        "does not exist on this K2": [unknown.wire],
    }
    for message, raws in cases.items():
        for raw in raws:
            with pytest.raises(TransactionError, match=message):
                await rpc.send(raw)
    clock.to_slot(k2, k2.current_slot() + 151)  # its blockhash is too old now
    with pytest.raises(TransactionError, match="Blockhash not found"):
        await rpc.send(stale.wire)
    assert await rpc.get_balance(payer.pubkey) == balance
    resp = await client.post("/", json=_rpc("sendTransaction", "%%%", {"encoding": "base64"}))
    assert (await resp.json())["error"]["code"] == -32602
    await client.close()


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
        (b'{"jsonrpc": "2.0", "id": 1, "method": "getRoundSections", "params": []}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": ["x"]}', -32002),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": [5]}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "getFeeForMessage", "params": ["%%%"]}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "getFeeForMessage", "params": ["AAAA"]}', -32602),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getMinimumBalanceForRentExemption", '
            b'"params": [-1]}',
            -32602,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getTaskAccountInfo", "params": ["nope"]}',
            -32602,
        ),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "requestAirdrop", "params": ["bad", 1]}', -32602),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getProgramAccounts", '
            b'"params": ["Koiitask22222222222222222222222222222222222", {"filters": [5]}]}',
            -32602,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getProgramAccounts", "params": '
            b'["Koiitask22222222222222222222222222222222222", '
            b'{"filters": [{"memcmp": {"offset": 0, "bytes": "0OIl"}}]}]}',
            -32602,
        ),
        (b"[" * 100_000, -32700),  # nested past Python's recursion limit
        (b'{"jsonrpc": "2.0", "id": NaN, "method": "getSlot"}', -32700),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "requestAirdrop", '
            b'"params": ["11111111111111111111111111111112", 10000000000000000000000]}',
            -32602,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getProgramAccounts", "params": '
            b'["Koiitask22222222222222222222222222222222222", '
            b'{"filters": [{"memcmp": {"offset": 0, "bytes": "' + b"z" * 20_000 + b'"}}]}]}',
            -32602,
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "getProgramAccounts", "params": '
            b'["Koiitask22222222222222222222222222222222222", {"filters": ['
            + b",".join([b'{"dataSize": 1}'] * 5)
            + b"]}]}",
            -32602,
        ),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "getSlot"}, 5]', None),
    ],
)
async def test_bad_requests_get_json_rpc_errors(
    service: tuple[TestClient[Any, Any], LocalK2], body: bytes, code: int | None
) -> None:
    client, _ = service
    resp = await client.post("/", data=body)
    assert resp.status == 200
    answer = await resp.json()
    if code is None:  # a batch: one answer each, the bad one an error
        assert "result" in answer[0] and answer[1]["error"]["code"] == -32600
        return
    assert answer["error"]["code"] == code and answer["error"]["message"]


async def test_get_health_says_unhealthy_while_the_log_cannot_be_written(
    service: tuple[TestClient[Any, Any], LocalK2], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, k2 = service

    async def health() -> dict[str, Any]:
        return dict(await (await client.post("/", json=_rpc("getHealth"))).json())

    assert (await health())["result"] == "ok" and await _compose_healthcheck(client) == 0
    real_put_many = k2._store.put_many
    monkeypatch.setattr(k2._store, "put_many", full_disk)
    airdrop = await client.post("/", json=_rpc("requestAirdrop", Keypair.generate().pubkey, 5))
    assert airdrop.status == 503  # applied, not yet on disk: ask again
    error = (await health())["error"]
    assert error["code"] == -32005 and "log cannot be written" in error["message"]
    assert error["data"] == {"numSlotsBehind": None}
    assert await _compose_healthcheck(client) == 1  # docker marks the container unhealthy
    monkeypatch.setattr(k2._store, "put_many", real_put_many)
    assert await k2._log_writer.disk.cleared(within_s=5)
    assert (await health())["result"] == "ok" and await _compose_healthcheck(client) == 0


async def _compose_healthcheck(client: TestClient[Any, Any]) -> int:
    """The exit status of docker-compose.yml's health check of its K2, run here against
    `client`'s service."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    command = compose["services"]["k2"]["healthcheck"]["test"]
    assert command[:3] == ["CMD", "python3", "-c"]
    code = command[3].replace("http://127.0.0.1:8899", _url(client).rstrip("/"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_an_unreachable_service_is_a_clear_error() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(K2Unreachable, match=r"127\.0\.0\.1:9"):
            await RpcSettlement.connect("http://127.0.0.1:9/", session)


async def test_three_nodes_share_a_k2_service(
    tmp_path: Path, service: tuple[TestClient[Any, Any], LocalK2]
) -> None:
    client, k2 = service
    task_id = await create_task(k2, Keypair.generate())
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.manage(node_settings(tmp_path / f"n{i}", task_id, k2_node_url=_url(client)))
            )
            for i in range(3)
        ]
        keys = [n.staking.pubkey for n in nodes if n.staking]

        async def paid() -> bool:
            state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
            return all(state["available_balances"].get(k, 0) > 0 for k in keys)

        await wait_for(paid, within=60)
    # every action went over the wire as K2's own transactions
    assert {"Stake", "SubmitTask", "UploadDistributionList", "SubmitDistributionList"} <= set(
        k2.tx_count
    )
    assert k2.tx_count["Payout"] >= 1
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
    assert started["pubsub"].startswith("ws://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


async def test_the_embedded_k2_is_served_to_tasks_that_read_it_themselves(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, wallet_location=tmp_path / "id.json", server_port=0, slot_ms=50
    )
    async with Node.manage(settings) as node, aiohttp.ClientSession() as http:
        ((task_id, task),) = node.tasks.items()
        url = task.context.rpc_url  # what getRpcUrl answers, and the task's K2 URL argument
        assert url == f"http://127.0.0.1:{node.port}/k2" and task.process.spec.args.k2_url == url
        async with http.post(
            url, json=_rpc("getTaskAccountInfo", task_id, {"stake": True})
        ) as resp:
            value = (await resp.json())["result"]["value"]
        state = json.loads(base64.b64decode(value["data"][0]))  # as the wrapper parses it
        assert state["task_id"] == task_id and node.staking.pubkey in state["stake_list"]
        async with http.post(url, data=b"not json") as resp:
            assert resp.status == 200 and (await resp.json())["error"]["code"] == -32700


async def test_nodes_survive_a_service_restart_mid_round(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
    task_id = await create_task(k2, Keypair.generate())
    server = TestServer(K2Service(k2).app(), port=port)
    await server.start_server()
    url = f"http://127.0.0.1:{port}/"
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.manage(node_settings(tmp_path / f"n{i}", task_id, k2_node_url=url))
            )
            for i in range(2)
        ]
        keys = [n.staking.pubkey for n in nodes]

        async def submitted(round_: int) -> bool:
            state = await k2.get_task_state(task_id, {"is_submission_required": True})
            return set(keys) <= set(state["submissions"].get(str(round_), {}))

        await wait_for(lambda: submitted(0), within=30)
        # the service goes away mid-round and comes back on its data a second later
        await server.close()
        k2.close()
        await asyncio.sleep(1.0)  # the outage itself
        k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
        server = TestServer(K2Service(k2).app(), port=port)
        await server.start_server()

        async def paid() -> bool:
            state = await k2.get_task_state(task_id, {"is_available_balances_required": True})
            return all(state["available_balances"].get(k, 0) > 0 for k in keys)

        await wait_for(paid, within=60)
        current = k2.current_slot() // 20
        await wait_for(lambda: submitted(current), within=30)  # and they go on submitting
    await server.close()
    k2.close()
