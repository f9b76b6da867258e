"""What the fuzz suite (test_fuzz_routes.py) found, one plain test each: the exact request
that was answered with a 500, or logged as one, or quoted the client back at length."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from k2node.crypto import Keypair
from k2node.http_errors import MAX_MESSAGE
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.agent import TaskAgent
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.ledger import Ledger
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import create_task
from tests.namespace_env import StoppedTask

SECRET = "s3cret-s3cret-s3cret"


@dataclass
class Served:
    url: str
    task_id: str
    ipfs: EmbeddedIpfs


@pytest.fixture
async def node(tmp_path: Path, k2: LocalK2) -> AsyncIterator[Served]:
    manager, me = Keypair.generate(), Keypair.generate()
    task_id = await create_task(k2, manager)
    store = Store.open(tmp_path / "node-db")
    agent = TaskAgent(task_id, k2, Ledger(store, k2), me, manager, tmp_path / "task")
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    ctx = TaskContext(agent, "test task", SECRET, 10, "http://127.0.0.1:1", ipfs)
    api = NodeApi({task_id: StoppedTask(ctx)}, manager.pubkey, "", EventHub(), ipfs)
    server = TestServer(api.app())
    await server.start_server()
    yield Served(f"http://127.0.0.1:{server.port}", task_id, ipfs)
    await server.close()
    ipfs.close()
    store.close()


async def _raw(node: Served, request: str) -> tuple[int, bytes, bytes]:
    """`request` sent as it is, on a connection of its own: the status, head and body."""
    host, port = node.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request.encode())
        answer = await asyncio.wait_for(reader.read(), 10)  # to the end: the node closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


async def test_an_add_with_no_content_type_is_a_400(node: Served) -> None:
    # was a 500: aiohttp's multipart reader looked the missing header up (KeyError)
    status, _, body = await _raw(
        node,
        "POST /api/v0/add?wrap-with-directory=false HTTP/1.1\r\nHost: n\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert status == 400 and b"multipart" in body


async def test_a_head_of_a_file_is_its_headers_alone(node: Served) -> None:
    # the gateway sent the whole file after a HEAD's headers; the client, done at the
    # headers, closed, and the writes that followed were logged as a 500 (http_error)
    cid = node.ipfs.add_bytes(b"x" * (1 << 20))
    with capture_logs() as logs:
        status, _, body = await _raw(
            node, f"HEAD /ipfs/{cid} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n"
        )
    assert status == 200 and body == b""
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_a_refusal_does_not_quote_a_huge_argument_back(node: Served) -> None:
    # the refusal quoted the whole argument (4 KB here; up to the 8 MiB body) to the client
    # and into the log
    body = {"args": ["getTaskSubmissionInfo", [0] * 2000], "taskId": node.task_id}
    with capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{node.url}/namespace-wrapper", json=body | {"secret": SECRET}) as resp,
        ):
            assert resp.status == 422
            message = (await resp.json())["message"]
    assert message.startswith("getTaskSubmissionInfo: round must be a non-negative integer")
    assert len(message) <= MAX_MESSAGE
    refused = [e for e in logs if e["event"] == "rpc_refused"]
    assert refused and all(len(e["error"]) <= MAX_MESSAGE for e in refused)


async def test_a_request_refused_before_any_route_is_one_short_event(
    node: Served, caplog: pytest.LogCaptureFixture
) -> None:
    # each such request was a traceback on stderr from aiohttp's HTTP layer (its own
    # logger, not the node's JSON lines): a client could write them at will
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with capture_logs() as logs:
        status, _, body = await _raw(
            node,
            "POST /namespace-wrapper HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\n"
            "Content-Encoding: br\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
    assert status == 400 and b"content-encoding" in body
    assert [e["event"] for e in logs] == ["http_refused"]
    assert "content-encoding" in logs[0]["reason"] and "\n" not in logs[0]["reason"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
