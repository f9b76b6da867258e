"""Where the embedded IPFS keeps its blocks: small ones in LevelDB, an add's large ones in a
pack file of its own.

A file's chunks (256 KiB) would pass through LevelDB's log, memtable and compactions, each a
copy. Written instead one after the other into a pack file, they are copied once and made
durable with one `fdatasync`: on this project's test machine, 100 MB lands durably in 50-55
ms as a pack, against 100-130 ms as one file per block (kubo's flatfs layout) with one
`syncfs`, measured by hand. LevelDB keeps small blocks and, for each packed block, where it
lies (pack, offset, length). Blocks stored before packs existed still read.

Durability: an add is on disk before its root CID is returned (nobody can hold that CID
before). Its pack is written by a writer thread while the next chunk is hashed; `commit`
waits for the writes, syncs the pack and its folder, then writes the add's small blocks, its
pack's index and the pack's name in one synced LevelDB batch. An add given up or failed
deletes its pack; one no committed batch names (an add cut by a crash) goes at the next
open. A block damaged anyway fails its CID check when read and is dropped; the next add or
fetch of it stores it again. Blocks from peers are stored without a sync: a lost one is
fetched again.
"""

from __future__ import annotations

import ctypes
import os
import struct
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from io import FileIO
from pathlib import Path

from k2node.ipfs.unixfs import Piece
from k2node.logs import get_logger
from k2node.store import Store

log = get_logger("k2node.ipfs")

SMALL_BLOCK_BYTES = 64 * 1024  # at most this: in LevelDB itself
IN_FLIGHT = 8  # pack writes an add may have queued: the chunks it holds stay few
BATCH_BYTES = 4 * 1024 * 1024  # an add's small blocks go down (synced) in batches this large
_BLOCK = b"block/"  # multihash -> the block (small ones)
_PACKED = b"packed/"  # multihash -> (pack name, offset, length)
_PACK = b"pack/"  # pack name -> b"" once its add committed
_WHERE = struct.Struct(">16sQI")

_SYNC_FILE_RANGE_WRITE = 2  # start writing these pages to disk; do not wait for it
_libc = ctypes.CDLL(None, use_errno=True)
_start_writeback = getattr(_libc, "sync_file_range", None)  # Linux; elsewhere the sync does all
if _start_writeback is not None:
    _start_writeback.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


class BlockStore:
    def __init__(self, path: Path, durable: bool = True) -> None:
        """`durable`: an add returns once it is on disk; off (a simulation's store), the
        small blocks and the index of the packed ones are kept in memory only."""
        self.durable = durable
        # blocks are mostly incompressible and written once: no compression, big write buffer
        self._db = (
            Store.open(path, compression=None, write_buffer_size=64 * 1024 * 1024)
            if durable
            else Store.memory(path)
        )
        self._packs = path / "packs"
        self._packs.mkdir(parents=True, exist_ok=True)
        _sync_folder(path)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipfs-packs")
        self._sweep()

    def _sweep(self) -> None:
        for pack in self._packs.iterdir():
            name = _pack_id(pack.name)
            if name is None or not self._db.has_bytes(_PACK + name):
                pack.unlink()
                log.info("ipfs_pack_removed", pack=pack.name, reason="its add never committed")

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._db.close()

    def _pack_path(self, name: bytes) -> Path:
        return self._packs / f"{name.hex()}.pack"

    def get(self, multihash: bytes) -> bytes | None:
        found = self._db.get_bytes(_BLOCK + multihash)
        if found is not None:
            return found
        where = self._db.get_bytes(_PACKED + multihash)
        if where is None:
            return None
        name, offset, length = _WHERE.unpack(where)
        try:
            fd = os.open(self._pack_path(name), os.O_RDONLY)
        except FileNotFoundError:  # the pack is gone: forget what it held
            self._db.delete_bytes(_PACKED + multihash)
            return None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def has(self, multihash: bytes) -> bool:
        return self._db.has_bytes(_BLOCK + multihash) or self._db.has_bytes(_PACKED + multihash)

    def drop(self, multihash: bytes) -> None:
        """Forget a block (one that failed its CID check); its bytes in a pack stay unused."""
        self._db.delete_bytes(_BLOCK + multihash)
        self._db.delete_bytes(_PACKED + multihash)

    def put(self, multihash: bytes, block: bytes) -> None:
        """Store one block now, not synced (a block fetched from a peer)."""
        self._db.put_bytes(_BLOCK + multihash, block)

    def batch(self) -> BlockBatch:
        return BlockBatch(self)


class BlockBatch:
    """The blocks of one add, on disk together when `commit` returns."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store
        self._small: dict[bytes, bytes] = {}
        self._small_bytes = 0
        self._index: dict[bytes, bytes] = {}
        self._writes: deque[Future[None]] = deque()
        self._pack: tuple[bytes, FileIO] | None = None  # its name, its file (closed when freed)
        self._end = 0  # where the next block goes in the pack

    def put(self, multihash: bytes, pieces: Sequence[Piece]) -> None:
        """Queue a block; `pieces` must not change until `commit` (the writer reads them)."""
        size = sum(len(p) for p in pieces)
        if size <= SMALL_BLOCK_BYTES:
            self._small[_BLOCK + multihash] = b"".join(pieces)
            self._small_bytes += size
            if self._small_bytes >= BATCH_BYTES:
                self._store._db.put_many_bytes(self._small, sync=self._store.durable)
                self._small.clear()
                self._small_bytes = 0
            return
        if self._store.has(multihash) or _PACKED + multihash in self._index:
            return  # content-addressed: these bytes are here already
        if self._pack is None:
            name = uuid.uuid4().bytes
            path = self._store._pack_path(name)
            self._pack = name, FileIO(path, "xb")
        name, file = self._pack
        while len(self._writes) >= IN_FLIGHT:
            self._writes.popleft().result()  # a failed write fails the add here
        self._writes.append(self._store._writer.submit(_write_at, file, pieces, self._end, size))
        self._index[_PACKED + multihash] = _WHERE.pack(name, self._end, size)
        self._end += size

    def commit(self) -> None:
        """Every block of the add on disk, or OSError and none of its pack kept. Call it
        once, from one thread (the batch is not shared)."""
        try:
            while self._writes:
                self._writes.popleft().result()
            items = self._small
            if self._pack is not None:
                name, file = self._pack
                if self._store.durable:
                    os.fdatasync(file.fileno())
                    _sync_folder(self._store._packs)  # the pack's name, as durable as its bytes
                items = {**items, **self._index, _PACK + name: b""}
        except BaseException:
            self.abandon()
            raise
        try:
            if items:  # (if this fails, LevelDB may yet replay it: the pack stays)
                self._store._db.put_many_bytes(items, sync=self._store.durable)
        finally:
            self._close_pack()
            self._small, self._index, self._small_bytes = {}, {}, 0

    def abandon(self) -> None:
        """Keep nothing more of this add: its pack is deleted now."""
        pack = self._pack
        self._close_pack()
        if pack is not None:
            self._store._pack_path(pack[0]).unlink(missing_ok=True)
        self._small, self._index, self._small_bytes = {}, {}, 0

    def _close_pack(self) -> None:
        for write in self._writes:  # they hold the caller's buffers and the file
            write.exception()
        self._writes.clear()
        if self._pack is not None:
            self._pack[1].close()
            self._pack = None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_at(file: FileIO, pieces: Sequence[Piece], offset: int, size: int) -> None:
    written = os.pwritev(file.fileno(), pieces, offset)
    if written != size:  # a short write: the disk is full, or nearly
        raise OSError(f"pack write: {written} of {size} bytes")
    if _start_writeback is not None:  # the disk works while the next chunks are hashed
        _start_writeback(file.fileno(), offset, size, _SYNC_FILE_RANGE_WRITE)


def _pack_id(file_name: str) -> bytes | None:
    stem, dot, ext = file_name.partition(".")
    try:
        name = bytes.fromhex(stem)
    except ValueError:
        return None
    return name if dot and ext == "pack" and len(name) == 16 else None
