"""IPFS between nodes: fetching from peers verified and bounded, the gateway, CAR files, and
the kubo backend against the node's kubo RPC."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k2node.http_errors import json_errors
from k2node.ipfs import IpfsError, NotFound
from k2node.ipfs import embedded as embedded_module
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.kubo import KuboIpfs
from k2node.ipfs.unixfs import CHUNK_SIZE, Cid
from k2node.node.http.gateway import IpfsGateway


# -- peers, gateways, CAR ---------------------------------------------------------------------
async def _gateway(ipfs: EmbeddedIpfs) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[json_errors])
    app.router.add_routes(IpfsGateway(ipfs, lambda _: True, "node-a").routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def _peer_of(url: str) -> Any:
    async def peers() -> list[str]:
        return [url]

    return peers


async def test_node_b_fetches_through_node_a_gateway_and_verifies(tmp_path: Path) -> None:
    a = EmbeddedIpfs.open(tmp_path / "a")
    client = await _gateway(a)
    data = random.Random(2).randbytes(CHUNK_SIZE * 2 + 11)
    directory = a.add_directory({"submissionValues0.json": data})
    b = EmbeddedIpfs.open(tmp_path / "b", client.session, _peer_of(str(client.make_url(""))))
    assert await b.fetch(str(directory), "submissionValues0.json") == data
    assert b.has(directory)  # kept, verified, for the next reader
    await client.close()
    a.close()
    b.close()


@asynccontextmanager
async def _fetching_from(tmp_path: Path, peer: Any) -> AsyncIterator[EmbeddedIpfs]:
    """A store whose only peer is a gateway answering with `peer`."""
    app = web.Application()
    app.router.add_get("/ipfs/{cid}", peer)
    client = TestClient(TestServer(app))
    await client.start_server()
    ipfs_store = EmbeddedIpfs.open(
        tmp_path / "b", client.session, _peer_of(str(client.make_url("")))
    )
    try:
        yield ipfs_store
    finally:
        await client.close()
        ipfs_store.close()


async def test_a_peer_serving_wrong_bytes_is_caught_and_nothing_stored(tmp_path: Path) -> None:
    cid = Cid.of(b"the real content", 0, "dag-pb")

    async def liar(_: web.Request) -> web.Response:
        return web.Response(body=b"something else")

    async with _fetching_from(tmp_path, liar) as b:
        with pytest.raises(NotFound, match=str(cid)):
            await b.fetch(str(cid))
        assert not b.has(cid)


async def test_an_oversized_block_from_a_peer_is_refused(tmp_path: Path) -> None:
    huge = b"x" * (embedded_module.MAX_BLOCK_BYTES + 10)
    cid = Cid.of(huge, 1, "raw")

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=huge)

    async with _fetching_from(tmp_path, serve) as b:
        with pytest.raises(NotFound, match="over"):
            await b.fetch(str(cid))
        assert not b.has(cid)


async def test_a_hanging_gateway_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_module, "FETCH_TIMEOUT_S", 0.3)
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"")

    async with _fetching_from(tmp_path, hang) as b:
        with pytest.raises(NotFound, match="TimeoutError"):
            await asyncio.wait_for(b.fetch(str(Cid.of(b"never", 0, "dag-pb"))), 5)
        release.set()


async def _chunks(blob: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(blob), size):
        yield blob[start : start + size]


async def test_car_round_trip_and_truncation(tmp_path: Path, ipfs_store: EmbeddedIpfs) -> None:
    data = random.Random(4).randbytes(CHUNK_SIZE * 4)
    cid = ipfs_store.add_bytes(data)
    car = b"".join([piece async for piece in ipfs_store.car(cid)])
    whole = EmbeddedIpfs.open(tmp_path / "whole")
    assert await whole.import_car(cid, _chunks(car)) == 5
    assert await whole.cat_bytes(cid) == data
    cut = EmbeddedIpfs.open(tmp_path / "cut")
    with pytest.raises(IpfsError, match="truncated"):
        await cut.import_car(cid, _chunks(car[:-1000]))
    # a CAR cut exactly between blocks parses, but the DAG is incomplete
    first_section_end = len(car) - len(data) // 4 - 40
    sections = EmbeddedIpfs.open(tmp_path / "sections")
    header_and_root = b"".join([piece async for piece in _first(ipfs_store.car(cid), 2)])
    with pytest.raises(IpfsError, match="incomplete"):
        await sections.import_car(cid, _chunks(header_and_root))
    assert first_section_end > 0
    with pytest.raises(IpfsError, match="header"):
        await sections.import_car(cid, _chunks(b"\xff\xff\xff\xff\x0f"))
    for other in (whole, cut, sections):
        other.close()


async def _first(pieces: AsyncIterator[bytes], n: int) -> AsyncIterator[bytes]:
    count = 0
    async for piece in pieces:
        if count == n:
            return
        count += 1
        yield piece


async def test_gateway_formats(tmp_path: Path, ipfs_store: EmbeddedIpfs) -> None:
    client = await _gateway(ipfs_store)
    data = random.Random(5).randbytes(CHUNK_SIZE + 3)
    directory = ipfs_store.add_directory({"f.bin": data}, 1)
    resp = await client.get(f"/ipfs/{directory}/f.bin")
    assert resp.status == 200 and await resp.read() == data
    resp = await client.get(f"/ipfs/{directory}?format=raw")
    block = await resp.read()
    directory.verify(block)
    resp = await client.get(f"/ipfs/{directory}", headers={"Accept": "application/vnd.ipld.car"})
    other = EmbeddedIpfs.open(tmp_path / "other")
    assert await other.import_car(directory, _chunks(await resp.read())) >= 3
    assert await other.cat_bytes(directory, "f.bin") == data
    for url, status in (
        ("/ipfs/not-a-cid", 400),
        (f"/ipfs/{Cid.of(b'absent', 0, 'dag-pb')}", 404),
        (f"/ipfs/{directory}/f.bin?format=raw", 400),
        (f"/ipfs/{directory}?format=tar", 400),
        (f"/ipfs/{directory}/missing", 404),
    ):
        resp = await client.get(url)
        assert resp.status == status, url
        assert "message" in await resp.json()
    await client.close()
    other.close()


# -- the kubo backend, through aioipfs, against the node's kubo RPC subset ----------------------
async def test_kubo_backend_against_the_node_rpc(ipfs_store: EmbeddedIpfs) -> None:
    client = await _gateway(ipfs_store)
    kubo = KuboIpfs(str(client.make_url("")).rstrip("/"), timeout_s=10)
    await kubo.start()
    data = random.Random(6).randbytes(CHUNK_SIZE * 2 + 1)
    for version in (0, 1):
        cid = await kubo.publish(data, version)
        assert cid == str(ipfs_store.add_bytes(data, version))
        assert await kubo.fetch(cid) == data
        await kubo.pin(cid)
    directory = await kubo.publish_directory({"x.json": b'{"k":1}'}, 1)
    assert directory == str(ipfs_store.add_directory({"x.json": b'{"k":1}'}, 1))
    assert await kubo.fetch(directory, "x.json") == b'{"k":1}'
    with pytest.raises(IpfsError):
        await kubo.fetch(str(Cid.of(b"absent", 0, "dag-pb")))
    await kubo.close()
    await client.close()


async def test_kubo_backend_reports_a_daemon_that_is_down() -> None:
    kubo = KuboIpfs("http://127.0.0.1:9", timeout_s=2, retries=2, backoff_s=0.01)
    await kubo.start()
    with pytest.raises(IpfsError, match=r"failed after 2 tries"):
        await kubo.publish(b"x")
    await kubo.close()
    with pytest.raises(ValueError, match="IPFS_API"):
        KuboIpfs("ftp://example")


async def test_the_kubo_rpc_takes_admin_requests_only(ipfs_store: EmbeddedIpfs) -> None:
    app = web.Application(middlewares=[json_errors])
    app.router.add_routes(IpfsGateway(ipfs_store, lambda _: False, "n").routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    resp = await client.post("/api/v0/add", data=b"x")
    assert resp.status == 403
    admin = await _gateway(ipfs_store)
    for query, status in (("?cid-version=abc", 400), ("?cid-version=2", 400), ("", 400)):
        resp = await admin.post(f"/api/v0/add{query}", data=b"not multipart")
        assert resp.status == status, query
    await admin.close()
    cid = ipfs_store.add_bytes(b"public")
    resp = await client.get(f"/ipfs/{cid}")  # the gateway itself is public
    assert await resp.read() == b"public"
    await client.close()


async def test_a_hanging_peer_costs_a_fetch_one_timeout_not_one_per_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_module, "FETCH_TIMEOUT_S", 0.3)
    a = EmbeddedIpfs.open(tmp_path / "a")
    good = await _gateway(a)
    data = random.Random(5).randbytes(CHUNK_SIZE * 6)  # six blocks and a root
    cid = a.add_bytes(data)
    asked = 0
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        nonlocal asked
        asked += 1
        await release.wait()
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_get("/ipfs/{cid}", hang)
    slow = TestClient(TestServer(app))
    await slow.start_server()

    async def peers() -> list[str]:  # the hanging one listed first
        return [str(slow.make_url("")), str(good.make_url(""))]

    b = EmbeddedIpfs.open(tmp_path / "b", good.session, peers)
    assert await asyncio.wait_for(b.fetch(str(cid), max_bytes=len(data)), 10) == data
    assert asked == 1  # then it rested, and the peer that answered was asked first
    release.set()
    await slow.close()
    await good.close()
    a.close()
    b.close()
