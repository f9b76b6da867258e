"""The embedded IPFS store: content-addressed blocks (ipfs/blocks.py), kubo-identical CIDs.

Every block is checked against its CID before it is stored or used, wherever it came from
(this node's disk included); a mismatch is an error naming the CID, never data. Blocks this
node lacks are fetched from peers' trustless gateways (`GET /ipfs/<cid>?format=raw`).

The search for a block is bounded: each peer has PEER_ANSWER_S to connect and to send each
piece, all of them together SEARCH_S; a peer that failed is asked last for a while, and its
failure is one `ipfs_peer_unreachable` line until it serves again (`ipfs_peer_reachable`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from k2node.ipfs.blocks import BlockStore
from k2node.ipfs.dag import DEFAULT_MAX_BYTES, DagReader, IpfsError, NotFound, TooLarge
from k2node.ipfs.recent import RecentFiles
from k2node.ipfs.unixfs import (
    CHUNK_SIZE,
    Added,
    Cid,
    FileBuilder,
    Piece,
    UnixFsError,
    directory_node,
    read_varint,
    varint,
)
from k2node.logs import get_logger

__all__ = ["EmbeddedIpfs", "IpfsError", "NotFound", "TooLarge"]

log = get_logger("k2node.ipfs")

MAX_BLOCK_BYTES = 2 * 1024 * 1024  # our blocks are <= 256 KiB plus a header; kubo caps at 1 MiB
FETCH_TIMEOUT_S = 10.0  # one block from one peer, whole
# A peer that does not connect, or send its answer's next piece, within this is given up:
# a stopped or unplugged peer costs a search this long, not a whole fetch's timeout.
PEER_ANSWER_S = 2.0
SEARCH_S = 10.0  # one block, from every peer in turn
# A peer that failed to serve a block is asked last for this long: a slow or broken peer
# costs a fetch one timeout, not one per block.
PEER_REST_S = 30.0

Peers = Callable[[], Awaitable[list[str]]]


async def _no_peers() -> list[str]:
    return []


@dataclass
class IpfsStats:
    """What the store counts as it works (the node's metrics read them)."""

    bytes_stored: int = 0
    bytes_fetched: int = 0  # from peers, verified
    verification_failures: int = 0


class EmbeddedIpfs:
    def __init__(
        self,
        blocks: BlockStore,
        session: aiohttp.ClientSession | None = None,
        peers: Peers = _no_peers,
    ) -> None:
        self._blocks = blocks
        self._resting: dict[str, float] = {}  # peer -> until when it is asked last
        self._failing: set[str] = set()  # peers whose failure was logged, until they serve
        self._good: str | None = None  # the peer that served the last block
        self._session = session
        self._peers = peers
        self.reader = DagReader(self.block)
        self.local_reader = DagReader(self._held_block)  # never asks a peer
        self.stats = IpfsStats()
        self.recent = RecentFiles()

    @classmethod
    def open(
        cls,
        path: Path,
        session: aiohttp.ClientSession | None = None,
        peers: Peers = _no_peers,
        durable: bool = True,
    ) -> EmbeddedIpfs:
        """`durable`: an add returns once it is on disk; off, for a simulation, the small
        blocks are kept in memory only."""
        return cls(BlockStore(path, durable), session, peers)

    def close(self) -> None:
        self._blocks.close()

    # -- blocks ----------------------------------------------------------------------------
    def has(self, cid: Cid) -> bool:
        return self._blocks.has(cid.multihash)

    def local_block(self, cid: Cid) -> bytes | None:
        block = self._blocks.get(cid.multihash)
        if block is not None:
            try:
                cid.verify(block)
            except UnixFsError as exc:
                self.stats.verification_failures += 1
                self._blocks.drop(cid.multihash)  # the next add or fetch of it writes it anew
                raise IpfsError(f"stored block of {cid} is corrupt") from exc
        return block

    def put_verified(self, cid: Cid, block: bytes) -> None:
        """Store a block from elsewhere, after checking it is what its CID says."""
        if len(block) > MAX_BLOCK_BYTES:
            raise TooLarge(f"block {cid} is {len(block)} bytes, over {MAX_BLOCK_BYTES}")
        try:
            cid.verify(block)
        except UnixFsError as exc:
            self.stats.verification_failures += 1
            raise IpfsError(str(exc)) from None
        self._blocks.put(cid.multihash, block)
        self.stats.bytes_stored += len(block)

    async def _held_block(self, cid: Cid) -> bytes:
        block = self.local_block(cid)
        if block is None:
            raise NotFound(f"block {cid} is not held by this node")
        return block

    async def block(self, cid: Cid) -> bytes:
        """A verified block: from the local store, else from a peer's gateway."""
        found = self.local_block(cid)
        if found is not None:
            return found
        return await self._fetch_block(cid)

    def _in_turn(self, peers: list[str]) -> list[str]:
        """The peer that served last first, then the others, those that failed lately last."""
        now = time.monotonic()
        ready = [p for p in peers if self._resting.get(p, 0.0) <= now]
        if self._good in ready:
            ready.remove(self._good)
            ready.insert(0, self._good)
        return ready + [p for p in peers if p not in ready]

    async def _fetch_block(self, cid: Cid) -> bytes:
        peers = await self._peers()
        if self._session is None or not peers:
            raise NotFound(f"block {cid} is not stored here and no peer is known")
        self._failing &= set(peers)  # (peers no longer listed are forgotten)
        problems = []
        deadline = time.monotonic() + SEARCH_S
        for peer in self._in_turn(peers):
            left = deadline - time.monotonic()
            if left <= 0:
                problems.append(f"no answer within {SEARCH_S:g} s")
                break
            url = f"{peer.rstrip('/')}/ipfs/{cid}?format=raw"
            timeout = aiohttp.ClientTimeout(
                total=min(FETCH_TIMEOUT_S, left),
                sock_connect=PEER_ANSWER_S,
                sock_read=PEER_ANSWER_S,
            )
            try:
                async with self._session.get(url, timeout=timeout) as resp:
                    if resp.status != 200:
                        problems.append(f"{peer}: HTTP {resp.status}")
                        continue
                    block = await _read_capped(resp, MAX_BLOCK_BYTES + 1)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._peer_failed(peer, f"{type(exc).__name__}: {exc}"[:200], problems)
                continue
            try:
                self.put_verified(cid, block)
            except IpfsError as exc:
                log.warning("ipfs_bad_block_from_peer", cid=str(cid), peer=peer, error=str(exc))
                problems.append(f"{peer}: {exc}")
                self._resting[peer] = time.monotonic() + PEER_REST_S
                continue
            self._good = peer
            self._resting.pop(peer, None)
            if peer in self._failing:
                self._failing.discard(peer)
                log.info("ipfs_peer_reachable", peer=peer)
            self.stats.bytes_fetched += len(block)
            return block
        raise NotFound(f"block {cid} could not be fetched: {'; '.join(problems)[:500]}")

    def _peer_failed(self, peer: str, error: str, problems: list[str]) -> None:
        problems.append(f"{peer}: {error.split(':')[0]}")
        self._resting[peer] = time.monotonic() + PEER_REST_S
        if peer not in self._failing:  # one line until it serves again, not one a block
            self._failing.add(peer)
            log.warning("ipfs_peer_unreachable", peer=peer, error=error, rest_s=PEER_REST_S)

    # -- adding ------------------------------------------------------------------------------
    def file_builder(self, cid_version: int = 0, raw_leaves: bool | None = None) -> FileBuilder:
        """A builder storing here; write the file to it in pieces as they arrive. Its
        `finish` returns once every block is on disk (a synced write: not on the loop)."""
        batch = self._blocks.batch()

        def put(cid: Cid, pieces: Sequence[Piece]) -> None:
            batch.put(cid.multihash, pieces)
            self.stats.bytes_stored += sum(len(p) for p in pieces)

        return FileBuilder(put, cid_version, raw_leaves, batch.commit, batch.abandon)

    def add_chunks(
        self, chunks: Iterable[bytes], cid_version: int = 0, raw_leaves: bool | None = None
    ) -> Added:
        builder = self.file_builder(cid_version, raw_leaves)
        try:
            for piece in chunks:
                builder.write(piece)
            return builder.finish()
        except BaseException:
            builder.abandon()
            raise

    def add_bytes(self, data: bytes, cid_version: int = 0, raw_leaves: bool | None = None) -> Cid:
        return self.add_chunks([data], cid_version, raw_leaves).cid

    def add_path(self, path: Path, cid_version: int = 0, raw_leaves: bool | None = None) -> Cid:
        with path.open("rb") as source:
            reader = iter(lambda: source.read(CHUNK_SIZE), b"")
            return self.add_chunks(reader, cid_version, raw_leaves).cid

    def add_directory(self, files: dict[str, bytes], cid_version: int = 0) -> Cid:
        """Files wrapped in one directory, as `ipfs add --wrap-with-directory` does."""
        entries = [(name, self.add_chunks([data], cid_version)) for name, data in files.items()]
        return self.wrap(entries, cid_version).cid

    def wrap(self, entries: list[tuple[str, Added]], cid_version: int = 0) -> Added:
        """A directory over already added entries (`--wrap-with-directory`)."""
        batch = self._blocks.batch()
        try:
            added = directory_node(entries, lambda cid, p: batch.put(cid.multihash, p), cid_version)
        except UnixFsError as exc:
            raise IpfsError(str(exc)) from None
        batch.commit()
        return added

    # -- the backend interface the node and its tasks use ----------------------------------
    async def publish(self, data: bytes, cid_version: int = 0) -> str:
        return str(await asyncio.to_thread(self.add_bytes, data, cid_version))

    async def publish_directory(self, files: dict[str, bytes], cid_version: int = 0) -> str:
        cid = str(await asyncio.to_thread(self.add_directory, files, cid_version))
        for name, data in files.items():  # a submission is read by its auditors next
            self.recent.keep(cid, name, data)
        return cid

    async def fetch(self, cid: str, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        kept = self.recent.get(cid, path, max_bytes)
        if kept is not None:
            return kept
        try:
            root = Cid.parse(cid)
        except UnixFsError as exc:
            raise IpfsError(str(exc)) from None
        data = await self.cat_bytes(root, path, max_bytes)
        self.recent.keep(cid, path, data)
        return data

    async def pin(self, cid: str) -> None:
        """Everything stored here is kept; pinning only checks the DAG is whole."""
        root = Cid.parse(cid)
        try:
            await self._check_whole(root)
        except NotFound as exc:
            raise NotFound(f"cannot pin {root}: {exc}") from None

    # -- reading ----------------------------------------------------------------------------
    async def resolve(self, cid: Cid, path: str = "") -> Cid:
        return await self.reader.resolve(cid, path)

    def cat(
        self, cid: Cid, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> AsyncIterator[bytes]:
        return self.reader.cat(cid, path, max_bytes)

    async def cat_bytes(
        self, cid: Cid, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> bytes:
        return await self.reader.cat_bytes(cid, path, max_bytes)

    # -- CAR files (CARv1: a header naming the root, then (CID, block) sections) -------------------
    async def car(self, root: Cid, local_only: bool = False) -> AsyncIterator[bytes]:
        reader = self.local_reader if local_only else self.reader
        yield _car_header(root)
        async for cid, block in reader.walk(root):
            section = cid.binary + block
            yield varint(len(section)) + section

    async def import_car(self, root: Cid, chunks: AsyncIterator[bytes]) -> int:
        """Read a CAR stream, storing each block only once verified; then check that the
        whole DAG under `root` arrived. Returns the number of blocks stored."""
        reader = _CarReader(chunks)
        await reader.header()
        stored = 0
        while (section := await reader.section()) is not None:
            cid, block = section
            self.put_verified(cid, block)
            stored += 1
        try:
            await self._check_whole(root)
        except NotFound as exc:
            raise IpfsError(f"CAR for {root} is incomplete: {exc}") from None
        return stored

    async def _check_whole(self, root: Cid) -> None:
        """NotFound naming the first block of the DAG under `root` this node lacks."""
        async for _ in self.local_reader.walk(root):
            await asyncio.sleep(0)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit` bytes when longer (then refused as too large)."""
    body = bytearray()
    async for piece in resp.content.iter_chunked(64 * 1024):
        body += piece
        if len(body) >= limit:
            break
    return bytes(body[:limit])


def _car_header(root: Cid) -> bytes:
    # DAG-CBOR {"roots": [root], "version": 1}; keys in canonical (length-first) order
    cid_bytes = b"\x00" + root.binary
    body = (
        b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes([len(cid_bytes)]) + cid_bytes + b"\x67version\x01"
    )
    return varint(len(body)) + body


class _CarReader:
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size and not self._done:
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                self._done = True
        return len(self._buffer) >= size

    async def _varint(self) -> int | None:
        await self._fill(10)
        if not self._buffer:
            return None
        try:
            value, used = read_varint(bytes(self._buffer[:10]), 0)
        except UnixFsError:
            raise IpfsError("CAR is truncated or malformed (bad length prefix)") from None
        del self._buffer[:used]
        return value

    async def _take(self, size: int) -> bytes:
        if not await self._fill(size):
            raise IpfsError("CAR is truncated")
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    async def header(self) -> None:
        size = await self._varint()
        if size is None or not 0 < size <= 4096:
            raise IpfsError("CAR has no valid header")
        await self._take(size)

    async def section(self) -> tuple[Cid, bytes] | None:
        size = await self._varint()
        if size is None:
            return None
        if size > MAX_BLOCK_BYTES + 100:
            raise TooLarge(f"CAR section of {size} bytes is over the block limit")
        raw = await self._take(size)
        cid_len = _cid_length(raw)
        return Cid.parse(raw[:cid_len]), raw[cid_len:]


def _cid_length(raw: bytes) -> int:
    if raw[:2] == b"\x12\x20":
        return 34  # CIDv0: a bare sha2-256 multihash
    pos = 0
    for _ in range(2):  # version, codec
        _, pos = read_varint(raw, pos)
    _, pos = read_varint(raw, pos)  # multihash code
    length, pos = read_varint(raw, pos)
    return pos + length
