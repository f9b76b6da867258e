"""A task's calls to its peers: good, garbage, oversized, silent, flaky and absent peers,
each answered or failed by name within the caller's deadline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from k2node.task.namespace import NamespaceWrapper
from k2node.task.peers import Peer, PeerError, get_json, peers_of, websocket

TASK = "Task1111111111111111111111111111111111111111"


def test_peers_are_the_other_nodes_with_usable_urls() -> None:
    listed = {
        "me": "http://127.0.0.1:1",
        "b": "https://b.example:8443/",
        "a": "http://10.0.0.1:30017",
        "file": "file:///etc/passwd",
        "junk": "not a url",
        "number": 7,
        "nohost": "http://",
    }
    assert peers_of(listed, "me") == [
        Peer("a", "http://10.0.0.1:30017"),
        Peer("b", "https://b.example:8443/"),
    ]
    assert Peer("b", "https://b.example:8443/").task_url(TASK, "/proof/3") == (
        f"https://b.example:8443/task/{TASK}/proof/3"
    )


@pytest.fixture
async def peer_nodes() -> AsyncIterator[dict[str, Peer]]:
    flaky = {"left": 2}

    async def proof(_: web.Request) -> web.Response:
        return web.json_response({"round": 3})

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"[" + b"1," * 3_000_000 + b"1]")

    async def flaky_proof(_: web.Request) -> web.Response:
        if flaky["left"]:
            flaky["left"] -= 1
            return web.Response(status=503)
        return web.json_response({"round": 3})

    async def feed(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"round": 3})
        await ws.close()
        return ws

    app = web.Application()
    path = f"/task/{TASK}"
    app.router.add_get(f"{path}/good/proof", proof)
    app.router.add_get(f"{path}/garbage/proof", garbage)
    app.router.add_get(f"{path}/huge/proof", huge)
    app.router.add_get(f"{path}/flaky/proof", flaky_proof)
    app.router.add_get(f"{path}/good/feed", feed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]

    done = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await done.wait()  # reads nothing, says nothing, until the test ends
        writer.close()
        await writer.wait_closed()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    # each "peer" is a node; its task routes live under a folder of this one server
    yield {
        name: Peer(name, f"http://127.0.0.1:{port}")
        for name in ("good", "garbage", "huge", "flaky")
    } | {
        "silent": Peer("silent", f"http://127.0.0.1:{silent_port}"),
        "absent": Peer("absent", f"http://127.0.0.1:{closed_port}"),
    }
    done.set()
    await asyncio.sleep(0)
    silent.close()
    await silent.wait_closed()
    await runner.cleanup()


def _path(name: str) -> str:
    return f"{name}/proof" if name not in ("silent", "absent") else "good/proof"


async def test_each_kind_of_peer_answers_or_fails_by_name_within_the_deadline(
    peer_nodes: dict[str, Peer],
) -> None:
    async with aiohttp.ClientSession() as session:
        ns = NamespaceWrapper(TASK, "s", "http://127.0.0.1:9", session)

        async def listed() -> list[Peer]:
            return list(peer_nodes.values())

        ns.peers = listed  # type: ignore[method-assign]
        answers: dict[str, Any] = {}
        started = time.monotonic()
        for name, peer in peer_nodes.items():
            try:
                answers[name] = await ns.peer_json(peer, _path(name), timeout_s=1.5)
            except PeerError as exc:
                answers[name] = exc
        assert time.monotonic() - started < 6 * 1.5 + 1
        assert answers["good"] == answers["flaky"] == {"round": 3}  # flaky: two 503s, retried
        for name, reason in (
            ("garbage", "bad answer"),
            ("huge", "over"),
            ("silent", "within 1.5 s"),
            ("absent", "no answer"),
        ):
            assert isinstance(answers[name], PeerError), name
            assert reason in str(answers[name]) and name in str(answers[name])

        # all at once: bounded by one deadline, not their sum
        started = time.monotonic()
        together = await ns.ask_peers("good/proof", timeout_s=1.0)
        assert time.monotonic() - started < 2.0
        assert together["good"] == together["garbage"] == {"round": 3}  # same server, good path
        assert isinstance(together["silent"], PeerError)
        assert isinstance(together["absent"], PeerError)

        ws = await websocket(
            session, peer_nodes["good"], peer_nodes["good"].task_url(TASK, "good/feed")
        )
        assert await ws.receive_json() == {"round": 3}
        await ws.close()
        with pytest.raises(PeerError, match=r"no WebSocket within 0\.5 s"):
            await websocket(
                session,
                peer_nodes["silent"],
                peer_nodes["silent"].task_url(TASK, "feed"),
                timeout_s=0.5,
            )
        with pytest.raises(PeerError, match="HTTP 404"):
            await get_json(session, peer_nodes["good"], peer_nodes["good"].task_url(TASK, "nope"))
