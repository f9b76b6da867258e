"""The embedded IPFS block store: small blocks in LevelDB, an add's large ones in its pack."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from k2node.ipfs.blocks import SMALL_BLOCK_BYTES, BlockStore
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.unixfs import CHUNK_SIZE, Cid, FileBuilder, leaf_pieces
from tests.conftest import full_disk


def _packs(path: Path) -> list[Path]:
    return sorted((path / "packs").iterdir())


def test_large_blocks_of_an_add_go_to_one_pack_and_read_back(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(CHUNK_SIZE * 5 + 123)
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    cid = ipfs.add_bytes(data)
    ipfs.close()
    (pack,) = _packs(tmp_path / "ipfs")
    assert CHUNK_SIZE * 5 < pack.stat().st_size < CHUNK_SIZE * 5 + 200  # 5 leaves and heads
    again = EmbeddedIpfs.open(tmp_path / "ipfs")  # reopened: the pack was committed
    assert again.local_block(cid) is not None
    assert again.add_bytes(data) == cid  # a second add of the same bytes writes no pack
    assert len(_packs(tmp_path / "ipfs")) == 1
    again.close()


async def test_every_block_reads_back_whole(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(CHUNK_SIZE * 3)
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    for version in (0, 1):
        cid = ipfs.add_bytes(data, version)
        assert await ipfs.cat_bytes(cid) == data
    ipfs.close()


def test_a_repeated_chunk_is_packed_once(tmp_path: Path) -> None:
    chunk = random.Random(3).randbytes(CHUNK_SIZE)
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    ipfs.add_chunks(chunk for _ in range(20))
    ipfs.close()
    (pack,) = _packs(tmp_path / "ipfs")
    assert pack.stat().st_size < 2 * CHUNK_SIZE


def test_an_abandoned_add_leaves_nothing_and_a_crashed_one_goes_at_open(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    batch = store.batch()
    block = random.Random(4).randbytes(SMALL_BLOCK_BYTES + 1)
    cid = Cid.of(block, 1, "raw")
    batch.put(cid.multihash, [block])
    small = b"small block"
    batch.put(Cid.of(small, 1, "raw").multihash, [small])
    assert len(_packs(tmp_path / "blocks")) == 1  # being written
    batch.abandon()  # the upload was cut short, say
    assert _packs(tmp_path / "blocks") == []
    assert store.get(cid.multihash) is None and not store.has(cid.multihash)
    assert not store.has(Cid.of(small, 1, "raw").multihash)
    store.close()
    # a crash mid-add leaves a pack that no committed add names: gone at the next open
    stray = tmp_path / "blocks" / "packs" / f"{'ab' * 16}.pack"
    stray.write_bytes(block)
    BlockStore(tmp_path / "blocks").close()
    assert _packs(tmp_path / "blocks") == []


def test_a_dropped_block_is_gone_and_can_be_stored_again(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks")
    block = random.Random(5).randbytes(SMALL_BLOCK_BYTES * 2)
    multihash = Cid.of(block, 1, "raw").multihash
    batch = store.batch()
    batch.put(multihash, [block[:100], memoryview(block)[100:]])  # pieces, joined on disk
    batch.commit()
    assert store.get(multihash) == block
    store.drop(multihash)
    assert store.get(multihash) is None and not store.has(multihash)
    batch = store.batch()
    batch.put(multihash, [block])
    batch.commit()
    assert store.get(multihash) == block
    store.close()


def test_a_failed_write_fails_the_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import k2node.ipfs.blocks as blocks

    monkeypatch.setattr(blocks.os, "pwritev", full_disk)
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    with pytest.raises(OSError, match="No space left"):
        ipfs.add_bytes(random.Random(6).randbytes(CHUNK_SIZE * 2))
    ipfs.close()
    assert _packs(tmp_path / "ipfs") == []  # nothing of it is kept


def test_leaf_pieces_are_the_leaf_block_kubo_makes() -> None:
    # a leaf written in pieces hashes to the CID the whole-block encoder gives
    from k2node.ipfs.unixfs import FILE, Node, UnixFsData

    for size in (1, 127, 128, 16383, 16384, CHUNK_SIZE):
        chunk = random.Random(size).randbytes(size)
        whole = Node(data=UnixFsData(FILE, chunk, size).encode()).encode()
        assert b"".join(bytes(p) for p in leaf_pieces(chunk)) == whole
    seen: list[bytes] = []
    builder = FileBuilder(lambda cid, pieces: seen.append(b"".join(pieces)))
    builder.write(b"x" * 10)
    builder.finish()
    assert seen == [Node(data=UnixFsData(FILE, b"x" * 10, 10).encode()).encode()]
