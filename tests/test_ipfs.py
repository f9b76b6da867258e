"""IPFS in one store: kubo-identical CIDs, files and paths read back, recent files held in
memory, corrupted blocks, CID parsing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aleph_cid
import cid as cidlib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from k2node.ipfs import IpfsError, NotFound, TooLarge
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.recent import SMALL_FILE_BYTES, RecentFiles
from k2node.ipfs.unixfs import CHUNK_SIZE, MAX_LINKS, Cid, UnixFsError
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


@pytest.mark.parametrize("case", CIDS, ids=lambda c: c["name"])
def test_cids_match_kubo(ipfs_store: EmbeddedIpfs, case: dict[str, Any]) -> None:
    data = _content(case)
    assert str(ipfs_store.add_bytes(data)) == case["cid_v0"]
    assert str(ipfs_store.add_bytes(data, cid_version=1)) == case["cid_v1_raw_leaves"]


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
    ipfs_store: EmbeddedIpfs, tmp_path: Path, size: int
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
        assert str(ipfs_store.add_path(source, cid_version=version)) == expected.finalize()


def test_directories_match_an_independent_implementation(
    ipfs_store: EmbeddedIpfs, tmp_path: Path
) -> None:
    files = {"submissionValues3.json": b'{"a":1}', "b.txt": b"hi", "zz": b"x" * 300_000}
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    for version in (0, 1):
        assert str(ipfs_store.add_directory(files, version)) == aleph_cid.hash_folder(
            str(folder), cid_version=version
        )
    with pytest.raises(IpfsError, match="bad file name"):
        ipfs_store.add_directory({"../x": b""})


async def test_cat_and_paths(ipfs_store: EmbeddedIpfs) -> None:
    data = random.Random(1).randbytes(CHUNK_SIZE * 3 + 5)
    cid = ipfs_store.add_bytes(data)
    assert await ipfs_store.cat_bytes(cid) == data
    directory = ipfs_store.add_directory({"a.json": b"{}", "big": data}, 1)
    assert await ipfs_store.cat_bytes(directory, "big") == data
    assert await ipfs_store.fetch(str(directory), "a.json") == b"{}"
    with pytest.raises(NotFound, match="no entry 'nope'"):
        await ipfs_store.cat_bytes(directory, "nope")
    with pytest.raises(IpfsError, match="is a directory"):
        await ipfs_store.cat_bytes(directory)
    with pytest.raises(TooLarge):
        await ipfs_store.cat_bytes(cid, max_bytes=CHUNK_SIZE)
    with pytest.raises(IpfsError, match="not a CID"):
        await ipfs_store.fetch("QmNotACid")


async def test_a_small_file_read_again_comes_from_memory_a_large_one_from_its_blocks(
    ipfs_store: EmbeddedIpfs,
) -> None:
    big = random.Random(2).randbytes(SMALL_FILE_BYTES + 1)
    directory = str(ipfs_store.add_directory({"s.json": b'{"a":1}', "big": big}))
    assert await ipfs_store.fetch(directory, "s.json") == b'{"a":1}'
    assert await ipfs_store.fetch(directory, "big") == big
    with pytest.raises(TooLarge):  # kept, and still refused past the asker's limit
        await ipfs_store.fetch(directory, "s.json", max_bytes=3)
    for cid, _block in [pair async for pair in ipfs_store.reader.walk(Cid.parse(directory))]:
        ipfs_store._blocks.drop(cid.multihash)  # the blocks are gone: only memory can answer
    assert await ipfs_store.fetch(directory, "s.json") == b'{"a":1}'
    assert ipfs_store.recent.hits == 1
    published = await ipfs_store.publish_directory({"p.json": b"[1]"})
    assert await ipfs_store.fetch(published, "p.json") == b"[1]" and ipfs_store.recent.hits == 2
    with pytest.raises(NotFound):
        await ipfs_store.fetch(directory, "big")
    with pytest.raises(NotFound):  # another path under the same CID is another file
        await ipfs_store.fetch(directory, "")


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
    ipfs_store: EmbeddedIpfs, tmp_path: Path
) -> None:
    small = ipfs_store.add_bytes(b"precious")  # a small block: in LevelDB
    ipfs_store._blocks.put(small.multihash, b"tampered")
    with pytest.raises(IpfsError, match=f"{small} is corrupt"):
        await ipfs_store.cat_bytes(small)
    assert not ipfs_store.has(small)  # dropped: nothing serves it to peers
    assert ipfs_store.add_bytes(b"precious") == small
    assert await ipfs_store.cat_bytes(small) == b"precious"
    # large blocks lie in their add's pack; cut short, as a failing disk could leave it
    data = random.Random(5).randbytes(CHUNK_SIZE * 2)
    big = ipfs_store.add_bytes(data, 1)
    (pack,) = (tmp_path / "ipfs" / "packs").iterdir()
    with pack.open("r+b") as opened:
        opened.truncate(CHUNK_SIZE + 1000)
    leaf = Cid.of(data[CHUNK_SIZE:], 1, "raw")
    with pytest.raises(IpfsError, match=f"{leaf} is corrupt"):
        await ipfs_store.cat_bytes(big)
    assert not ipfs_store.has(leaf)
    ipfs_store.add_bytes(data, 1)
    assert await ipfs_store.cat_bytes(big) == data


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
