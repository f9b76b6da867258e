"""IPFS: kubo-identical CIDs, verified retrieval, the gateway, CAR files, the kubo backend."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aleph_cid
import cid as cidlib
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from k2node.http_errors import json_errors
from k2node.ipfs import IpfsError, NotFound, TooLarge
from k2node.ipfs import embedded as embedded_module
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.kubo import KuboIpfs
from k2node.ipfs.recent import SMALL_FILE_BYTES, RecentFiles
from k2node.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, Cid, UnixFsError
from k2node.node.http.gateway import IpfsGateway
from tests.conftest import SHARED_VECTORS, VECTORS

CIDS = json.loads((VECTORS / "ipfs-cids.json").read_text())["cases"]


def _content(case: dict[str, Any]) -> bytes:
    if case["content"] != "bytes(range(256)) repeated":
        return str(case["content"]).encode()
    data = (bytes(range(256)) * (case["size"] // 256 + 1))[: case["size"]]
    if case["name"] == "pattern-262145":
        data = bytes(range(256)) * 1024 + b"x"
    assert len(data) == case["size"]
    return data


@pytest.fixture
def store(tmp_path: Path) -> Any:
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    yield ipfs
    ipfs.close()


@pytest.mark.parametrize("case", CIDS, ids=lambda c: c["name"])
def test_cids_match_kubo(store: EmbeddedIpfs, case: dict[str, Any]) -> None:
    data = _content(case)
    assert str(store.add_bytes(data)) == case["cid_v0"]
    assert str(store.add_bytes(data, cid_version=1)) == case["cid_v1_raw_leaves"]


@pytest.mark.skipif(not (SHARED_VECTORS / "ipfs-cids.json").exists(), reason="no shared/ beside")
def test_vector_copy_matches_the_shared_one() -> None:
    assert (VECTORS / "ipfs-cids.json").read_bytes() == (
        SHARED_VECTORS / "ipfs-cids.json"
    ).read_bytes()


@pytest.mark.parametrize(
    "size",
    [3 * 1024 * 1024 + 7, MAX_LINKS * CHUNK_SIZE, (MAX_LINKS + 1) * CHUNK_SIZE + 1],
    ids=["few-MB-random", "exactly-174-chunks", "second-DAG-level"],
)
def test_large_cids_match_an_independent_implementation(
    store: EmbeddedIpfs, tmp_path: Path, size: int
) -> None:
    data = random.Random(size).randbytes(size)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    for version, hasher in (
        (0, aleph_cid.CidHasher.for_ipfs),
        (1, aleph_cid.CidHasher.for_ipfs_v1_raw_leaves),
    ):
        expected = hasher()
        expected.update(data)
        assert str(store.add_path(source, cid_version=version)) == expected.finalize()


def test_directories_match_an_independent_implementation(
    store: EmbeddedIpfs, tmp_path: Path
) -> None:
    files = {"submissionValues3.json": b'{"a":1}', "b.txt": b"hi", "zz": b"x" * 300_000}
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    for version in (0, 1):
        assert str(store.add_directory(files, version)) == aleph_cid.hash_folder(
            str(folder), cid_version=version
        )
    with pytest.raises(IpfsError, match="bad file name"):
        store.add_directory({"../x": b""})


async def test_cat_and_paths(store: EmbeddedIpfs) -> None:
    data = random.Random(1).randbytes(CHUNK_SIZE * 3 + 5)
    cid = store.add_bytes(data)
    assert await store.cat_bytes(cid) == data
    directory = store.add_directory({"a.json": b"{}", "big": data}, 1)
    assert await store.cat_bytes(directory, "big") == data
    assert await store.fetch(str(directory), "a.json") == b"{}"
    with pytest.raises(NotFound, match="no entry 'nope'"):
        await store.cat_bytes(directory, "nope")
    with pytest.raises(IpfsError, match="is a directory"):
        await store.cat_bytes(directory)
    with pytest.raises(TooLarge):
        await store.cat_bytes(cid, max_bytes=CHUNK_SIZE)
    with pytest.raises(IpfsError, match="not a CID"):
        await store.fetch("QmNotACid")


async def test_a_small_file_read_again_comes_from_memory_a_large_one_from_its_blocks(
    store: EmbeddedIpfs,
) -> None:
    big = random.Random(2).randbytes(SMALL_FILE_BYTES + 1)
    directory = str(store.add_directory({"s.json": b'{"a":1}', "big": big}))
    assert await store.fetch(directory, "s.json") == b'{"a":1}'
    assert await store.fetch(directory, "big") == big
    with pytest.raises(TooLarge):  # kept, and still refused past the asker's limit
        await store.fetch(directory, "s.json", max_bytes=3)
    for cid, _block in [pair async for pair in store.reader.walk(Cid.parse(directory))]:
        store._blocks.drop(cid.multihash)  # the blocks are gone: only memory can answer
    assert await store.fetch(directory, "s.json") == b'{"a":1}'
    assert store.recent.hits == 1
    published = await store.publish_directory({"p.json": b"[1]"})
    assert await store.fetch(published, "p.json") == b"[1]" and store.recent.hits == 2
    with pytest.raises(NotFound):
        await store.fetch(directory, "big")
    with pytest.raises(NotFound):  # another path under the same CID is another file
        await store.fetch(directory, "")


def test_recent_files_keep_the_most_recently_read_within_their_bytes() -> None:
    recent = RecentFiles(file_bytes=10, kept_bytes=25)
    for name in "abc":
        recent.keep("cid", name, name.encode() * 10)
    assert len(recent) == 2 and recent.get("cid", "a", 100) is None  # the oldest went
    assert recent.get("cid", "b", 100) == b"b" * 10
    recent.keep("cid", "d", b"d" * 10)  # c is now the least recently read
    assert recent.get("cid", "c", 100) is None and recent.get("cid", "b", 100) == b"b" * 10
    recent.keep("cid", "e", b"e" * 11)  # over a file's share: not kept
    assert recent.get("cid", "e", 100) is None
    assert recent.get("cid", "b", 9) is None  # over the asker's limit: the reader says so


async def test_a_corrupted_block_is_an_error_naming_its_cid_then_is_written_again(
    store: EmbeddedIpfs, tmp_path: Path
) -> None:
    small = store.add_bytes(b"precious")  # a small block: in LevelDB
    store._blocks.put(small.multihash, b"tampered")
    with pytest.raises(IpfsError, match=f"{small} is corrupt"):
        await store.cat_bytes(small)
    assert not store.has(small)  # dropped: nothing serves it to peers
    assert store.add_bytes(b"precious") == small
    assert await store.cat_bytes(small) == b"precious"
    # large blocks lie in their add's pack; cut short, as a failing disk could leave it
    data = random.Random(5).randbytes(CHUNK_SIZE * 2)
    big = store.add_bytes(data, 1)
    (pack,) = (tmp_path / "ipfs" / "packs").iterdir()
    with pack.open("r+b") as opened:
        opened.truncate(CHUNK_SIZE + 1000)
    leaf = Cid.of(data[CHUNK_SIZE:], 1, "raw")
    with pytest.raises(IpfsError, match=f"{leaf} is corrupt"):
        await store.cat_bytes(big)
    assert not store.has(leaf)
    store.add_bytes(data, 1)
    assert await store.cat_bytes(big) == data


@given(
    st.binary(min_size=32, max_size=32), st.sampled_from([(0, "dag-pb"), (1, "dag-pb"), (1, "raw")])
)
def test_cid_text_and_bytes_agree_with_the_general_cid_library(
    digest: bytes, kind: tuple[int, str]
) -> None:
    version, codec = kind
    cid = Cid(version, codec, digest)
    multihash = b"\x12\x20" + digest
    lib = cidlib.CIDv0(multihash) if version == 0 else cidlib.CIDv1(codec, multihash)
    text = lib.encode().decode() if version == 0 else lib.encode("base32").decode()
    assert str(cid) == text and cid.binary == bytes(lib.buffer)
    assert Cid.parse(text) == Cid.parse(cid.binary) == cid
    if version == 1:  # other multibases of the same CID: the general parser reads them
        assert Cid.parse(lib.encode("base58btc").decode()) == cid
        assert Cid.parse(lib.encode("base32upper").decode()) == cid


def test_cid_parsing_refuses_what_it_cannot_verify() -> None:
    for bad in (
        "",
        "hello",
        "bafkqaaa",
        "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXE",
        "zdpuAyvkgEDQm9TenwGkd5eNaosSxjgEYd8QatfPetgB1CdEZ",
    ):
        with pytest.raises(UnixFsError):
            Cid.parse(bad)


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
    store = EmbeddedIpfs.open(tmp_path / "b", client.session, _peer_of(str(client.make_url(""))))
    try:
        yield store
    finally:
        await client.close()
        store.close()


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


async def test_car_round_trip_and_truncation(tmp_path: Path, store: EmbeddedIpfs) -> None:
    data = random.Random(4).randbytes(CHUNK_SIZE * 4)
    cid = store.add_bytes(data)
    car = b"".join([piece async for piece in store.car(cid)])
    whole = EmbeddedIpfs.open(tmp_path / "whole")
    assert await whole.import_car(cid, _chunks(car)) == 5
    assert await whole.cat_bytes(cid) == data
    cut = EmbeddedIpfs.open(tmp_path / "cut")
    with pytest.raises(IpfsError, match="truncated"):
        await cut.import_car(cid, _chunks(car[:-1000]))
    # a CAR cut exactly between blocks parses, but the DAG is incomplete
    first_section_end = len(car) - len(data) // 4 - 40
    sections = EmbeddedIpfs.open(tmp_path / "sections")
    header_and_root = b"".join([piece async for piece in _first(store.car(cid), 2)])
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


async def test_gateway_formats(tmp_path: Path, store: EmbeddedIpfs) -> None:
    client = await _gateway(store)
    data = random.Random(5).randbytes(CHUNK_SIZE + 3)
    directory = store.add_directory({"f.bin": data}, 1)
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
async def test_kubo_backend_against_the_node_rpc(store: EmbeddedIpfs) -> None:
    client = await _gateway(store)
    kubo = KuboIpfs(str(client.make_url("")).rstrip("/"), timeout_s=10)
    await kubo.start()
    data = random.Random(6).randbytes(CHUNK_SIZE * 2 + 1)
    for version in (0, 1):
        cid = await kubo.publish(data, version)
        assert cid == str(store.add_bytes(data, version))
        assert await kubo.fetch(cid) == data
        await kubo.pin(cid)
    directory = await kubo.publish_directory({"x.json": b'{"k":1}'}, 1)
    assert directory == str(store.add_directory({"x.json": b'{"k":1}'}, 1))
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


async def test_the_kubo_rpc_takes_admin_requests_only(store: EmbeddedIpfs) -> None:
    app = web.Application(middlewares=[json_errors])
    app.router.add_routes(IpfsGateway(store, lambda _: False, "n").routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    resp = await client.post("/api/v0/add", data=b"x")
    assert resp.status == 403
    admin = await _gateway(store)
    for query, status in (("?cid-version=abc", 400), ("?cid-version=2", 400), ("", 400)):
        resp = await admin.post(f"/api/v0/add{query}", data=b"not multipart")
        assert resp.status == status, query
    await admin.close()
    cid = store.add_bytes(b"public")
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
