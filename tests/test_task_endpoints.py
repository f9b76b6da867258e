"""A Python task's own routes through a running node: reached only through the node (its
Unix socket, in a folder of the node's user alone), WebSockets relayed, and a task process
killed mid-stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import create_task, node_settings, npm_modules, task_file, wait_for


async def test_a_python_tasks_routes_and_websockets_through_the_node(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), round_time=200)
    entry = task_file("socket_task.py") + ":SocketTask"
    settings = node_settings(tmp_path / "n", task_id, entry)
    async with Node.manage(settings, fast_chain, restart_backoff_s=0.05) as node:
        task = node.tasks[task_id]
        base = f"http://127.0.0.1:{node.port}/task/{task_id}"
        socket_path = task.server_socket
        assert socket_path is not None
        async with aiohttp.ClientSession() as http:

            async def answers() -> bool:
                try:
                    async with http.get(f"{base}/") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(answers, within=30)  # so its namespace secret worked
            # the secret is on no command line and in no environment another user may read
            task_pid = task.process.pid
            for part in ("cmdline", "environ"):
                seen = await asyncio.to_thread(Path(f"/proc/{task_pid}/{part}").read_bytes)
                assert task.context.secret.encode() not in seen, part
            # only through the node: no TCP port, a socket in a folder of this user alone
            mode = stat.S_IMODE(socket_path.parent.stat().st_mode)
            assert stat.S_ISSOCK(socket_path.stat().st_mode) and mode == 0o700
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", task.server_port)
            except OSError:
                pass
            else:
                writer.close()
                raise AssertionError("the Python task listens on its TCP port")
            # the task asked for a 1 KiB body limit over its channel
            await wait_for(lambda: task.max_request_body == 1024, within=10)
            async with http.post(f"{base}/upload", data=b"x" * 1000) as resp:
                assert await resp.json() == {"bytes": 1000}
            async with http.post(f"{base}/upload", data=b"x" * 2000) as resp:
                assert resp.status == 413

            ws = await http.ws_connect(f"{base}/echo")
            await ws.send_str("through the node")
            assert (await asyncio.wait_for(ws.receive(), 10)).data == "through the node"
            pid = task.process.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # the task process dies mid-stream
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == WSMsgType.CLOSE and msg.data == 1011
            await ws.close()
            async with http.get(f"http://127.0.0.1:{node.port}/") as resp:
                assert resp.status == 200  # the node carries on
            # and the restarted task serves its socket again
            await wait_for(lambda: task.process.pid not in (None, pid), within=30)
            await wait_for(answers, within=30)
            async with http.ws_connect(f"{base}/echo") as again:
                await again.send_str("back")
                assert (await asyncio.wait_for(again.receive(), 10)).data == "back"
    assert not socket_path.parent.exists()  # the node removes its socket folder


WS_PACKAGE = "ws@8.18.0"


@pytest.fixture(scope="module")
def ws_modules() -> Path:
    return npm_modules(WS_PACKAGE, "ws", "ws")


async def test_a_javascript_tasks_websocket_through_the_node(
    tmp_path: Path, fast_chain: LocalK2, ws_modules: Path
) -> None:
    # the task beside its node_modules, as a bundle's dependencies would be
    folder = tmp_path / "js"
    folder.mkdir()
    shutil.copy(task_file("ws_task.js"), folder / "main.js")
    (folder / "node_modules").symlink_to(ws_modules)
    task_id = await create_task(fast_chain, Keypair.generate(), round_time=200)
    settings = node_settings(tmp_path / "n", task_id, str(folder / "main.js"))
    async with Node.manage(settings, fast_chain) as node, aiohttp.ClientSession() as http:
        task = node.tasks[task_id]
        assert task.server_socket is None  # JavaScript tasks keep the contract's port
        url = f"http://127.0.0.1:{node.port}/task/{task_id}/feed"

        async def connect() -> aiohttp.ClientWebSocketResponse | None:
            try:
                return await http.ws_connect(url)
            except aiohttp.ClientError:
                return None

        ws = None

        async def connected() -> bool:
            nonlocal ws
            ws = await connect()
            return ws is not None

        await wait_for(connected, within=30)
        assert ws is not None
        assert (await asyncio.wait_for(ws.receive(), 10)).data == "hello via the node"
        for i in range(1_000):
            await ws.send_str(f"text {i}")
            await ws.send_bytes(i.to_bytes(2, "big"))
        for i in range(1_000):
            assert (await asyncio.wait_for(ws.receive(), 10)).data == f"text {i}"
            assert (await asyncio.wait_for(ws.receive(), 10)).data == i.to_bytes(2, "big")
        await ws.send_str("close-me")
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "asked to")
        await ws.close()


async def test_peers_audit_through_feeds_and_bad_feeds_delay_nothing(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    rounds: dict[str, Any] = {"round_time": 40, "submission_window": 16, "audit_window": 16}
    task_id = await create_task(fast_chain, Keypair.generate(), **rounds)
    entries = [
        "",
        "",
        "",
        task_file("feed_peers.py") + ":GarbageFeedTask",
        task_file("feed_peers.py") + ":SilentFeedTask",
    ]
    settled = range(3)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.manage(node_settings(tmp_path / f"node{i}", task_id, entry), fast_chain)
            )
            for i, entry in enumerate(entries)
        ]
        keys = [n.staking.pubkey for n in nodes]

        async def all_settled() -> bool:
            state = await fast_chain.get_task_state(task_id, {"is_distribution_required": True})
            return all(str(r) in state["distributions_audit_record"] for r in settled)

        await wait_for(all_settled, within=90)
        async with aiohttp.ClientSession() as http:
            used = []
            for node in nodes[:3]:  # the honest feeds' owners audit through feeds
                url = f"http://127.0.0.1:{node.port}/task/{task_id}/feed/stats"
                async with http.get(url) as resp:
                    used.append((await resp.json())["auditsFromFeed"])
        audits_done = [
            all(n.ledger.phase_done(task_id, "auditPayload", r) for r in settled) for n in nodes
        ]
    assert all(count > 0 for count in used), used
    assert all(audits_done), audits_done  # every audit finished within its window
    state = await fast_chain.get_task_state(
        task_id, {"is_submission_required": True, "is_distribution_required": True}
    )
    for r in settled:
        assert state["distributions_audit_record"][str(r)] == "PayoutSuccessful", r
        # no one was accused: not the garbage feed's owner, not the silent one's
        assert state["submissions_audit_trigger"].get(str(r), {}) == {}, r
        submitter = next(iter(state["distribution_rewards_submission"][str(r)]))
        paid = await fast_chain.get_distribution_list(task_id, submitter, r)
        assert paid is not None and all(paid[k] > 0 for k in keys), (r, paid)
