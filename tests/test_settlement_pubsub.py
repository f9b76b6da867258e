"""K2's PubSub WebSocket: `k2node k2` announces slots and applied signatures, and a node
following a K2 keeps its slot clock in step (by WebSocket, or by polling without one)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from k2node.contract.units import SlotClock
from k2node.settlement import pubsub as pubsub_module
from k2node.settlement.local import LocalK2
from k2node.settlement.pubsub import pubsub
from k2node.settlement.rpc import RpcSettlement
from k2node.settlement.service import K2Service
from k2node.settlement.slots import SlotFollower, pubsub_url
from tests.conftest import wait_for


@pytest.fixture
def fast_k2(tmp_path: Path) -> Any:
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=50)
    yield k2
    k2.close()


def test_the_pubsub_url_is_the_rpc_port_plus_one() -> None:
    assert pubsub_url("http://127.0.0.1:8899") == "ws://127.0.0.1:8900"
    assert pubsub_url("https://testnet.example/") == "wss://testnet.example/"


async def test_slots_and_signatures_are_announced(fast_k2: LocalK2) -> None:
    async with pubsub(fast_k2, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:

            async def ask(method: str, *params: Any) -> Any:
                await ws.send(
                    json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
                )
                while True:
                    answer = json.loads(await ws.recv())
                    if answer.get("id") == 7:
                        return answer

            slots = (await ask("slotSubscribe"))["result"]
            await fast_k2.airdrop("11111111111111111111111111111112", 5, "5" * 88)
            signatures = (await ask("signatureSubscribe", "5" * 88))["result"]
            seen: dict[str, list[Any]] = {"slotNotification": [], "signatureNotification": []}
            while len(seen["slotNotification"]) < 3 or not seen["signatureNotification"]:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                seen[message["method"]].append(message["params"])
            announced = [p["result"]["slot"] for p in seen["slotNotification"]]
            assert announced == sorted(announced) and len(set(announced)) == len(announced)
            assert {p["subscription"] for p in seen["slotNotification"]} == {slots}
            (done,) = seen["signatureNotification"]
            assert done["subscription"] == signatures and done["result"]["value"]["err"] is None
            assert (await ask("slotUnsubscribe", slots))["result"] is True
            assert (await ask("slotUnsubscribe", slots))["result"] is False
            assert (await ask("mint"))["error"]["code"] == -32601
            assert (await ask("signatureSubscribe", 5))["error"]["code"] == -32602
            await ws.send("not json")
            assert json.loads(await ws.recv())["error"]["code"] == -32700


async def test_a_node_follows_the_k2s_slots_with_or_without_pubsub(fast_k2: LocalK2) -> None:
    server = TestServer(K2Service(fast_k2).app())
    await server.start_server()
    url = str(server.make_url("/"))
    async with aiohttp.ClientSession() as session, pubsub(fast_k2, "127.0.0.1", 0) as ws_server:
        ws_port = next(iter(ws_server.sockets)).getsockname()[1]
        rpc = await RpcSettlement.connect(url, session)
        rpc._slots = SlotClock(rpc.slots.genesis - 60, rpc.slot_ms)  # a minute off
        assert rpc.current_slot() - fast_k2.current_slot() > 100
        follower = SlotFollower(rpc, f"ws://127.0.0.1:{ws_port}")
        job = asyncio.create_task(follower.run())
        await wait_for(lambda: abs(rpc.current_slot() - fast_k2.current_slot()) <= 1, within=10)
        assert follower.announced > 0
        job.cancel()
        # no WebSocket at all: polling getSlot keeps the clock in step
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead = sock.getsockname()[1]
        rpc._slots = SlotClock(rpc.slots.genesis + 60, rpc.slot_ms)
        polling = SlotFollower(rpc, f"ws://127.0.0.1:{dead}")
        job = asyncio.create_task(polling.run())
        await wait_for(lambda: abs(rpc.current_slot() - fast_k2.current_slot()) <= 1, within=10)
        assert polling.announced == 0
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
    await server.close()


async def test_connections_past_the_cap_are_turned_away(
    fast_k2: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubsub_module, "MAX_CONNECTIONS", 2)
    async with pubsub(fast_k2, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        async with connect(url) as first, connect(url) as second, connect(url) as third:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(third.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            for kept in (first, second):
                await kept.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "slotSubscribe"}))
                assert json.loads(await asyncio.wait_for(kept.recv(), 5))["result"] == 1
