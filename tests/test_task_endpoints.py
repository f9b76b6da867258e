"""A Python task's own routes through a running node: reached only through the node (its
Unix socket, in a folder of the node's user alone), WebSockets relayed, and a task process
killed mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType

from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import create_task, node_settings, task_file, wait_for


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

            await wait_for(answers, within=30)
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
