"""UnixFS over dag-pb, laid out exactly as kubo's `ipfs add` lays it out.

Defaults of kubo: 256 KiB fixed-size chunks, a balanced DAG of at most 174 links per node,
UnixFS `File` leaves inside dag-pb and CIDv0; with `--cid-version=1` raw leaves and CIDv1.
The builder is fed chunks as they come and keeps only the pending links of each tree level,
so adding a file of any size holds a few kilobytes besides the chunk in hand.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cid as cidlib

from k2node.b58 import b58decode, b58encode

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
DAG_PB, RAW = "dag-pb", "raw"
_SHA2_256 = b"\x12\x20"  # multihash prefix: sha2-256, 32 bytes

# UnixFS Data.Type
RAW_TYPE, DIRECTORY, FILE = 0, 1, 2


class UnixFsError(ValueError):
    pass


# -- CIDs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cid:
    version: int
    codec: str
    digest: bytes  # the sha2-256 digest

    @property
    def multihash(self) -> bytes:
        return _SHA2_256 + self.digest

    def __str__(self) -> str:
        # CIDv0: the multihash in base58; CIDv1: multibase "b", lowercase unpadded base32
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + base64.b32encode(self.binary).decode().lower().rstrip("=")

    @property
    def binary(self) -> bytes:
        if self.version == 0:
            return self.multihash  # a binary CIDv0 is its bare multihash
        return _V1_PREFIX[self.codec] + self.multihash

    def verify(self, block: bytes) -> None:
        if hashlib.sha256(block).digest() != self.digest:
            raise UnixFsError(f"block does not match its CID {self}")

    @classmethod
    def of(cls, block: bytes, version: int, codec: str) -> Cid:
        return cls(version, codec, hashlib.sha256(block).digest())

    @classmethod
    def parse(cls, text: str | bytes) -> Cid:
        """A CID from its string or binary form; only sha2-256 dag-pb or raw blocks."""
        fast = _parsed_common(text)
        if fast is not None:
            return fast
        try:
            if isinstance(text, bytes) and text[:2] == _SHA2_256 and len(text) == 34:
                parsed = cidlib.CIDv0(text)  # binary CIDv0 is the bare multihash
            elif isinstance(text, bytes):
                parsed = cidlib.from_bytes_strict(text)
            else:
                parsed = cidlib.make_cid(text)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise UnixFsError(f"not a CID: {str(text)[:80]!r} ({exc})") from None
        multihash = bytes(parsed.multihash)
        if not multihash.startswith(_SHA2_256) or len(multihash) != 34:
            raise UnixFsError(f"CID {str(text)[:80]} is not a sha2-256 CID")
        if parsed.codec not in (DAG_PB, RAW):
            raise UnixFsError(f"CID {str(text)[:80]} is neither dag-pb nor raw")
        return cls(int(parsed.version), str(parsed.codec), multihash[2:])


# A CIDv1's binary form before its multihash: version 1, then the codec (both varints).
_V1_PREFIX = {DAG_PB: b"\x01\x70", RAW: b"\x01\x55"}
_V1_CODEC = {prefix: codec for codec, prefix in _V1_PREFIX.items()}


def _parsed_common(text: str | bytes) -> Cid | None:
    """The forms this node writes (CIDv0, base32 CIDv1 of sha2-256 dag-pb or raw), read
    without the general parser; None for anything else, which the general parser reads."""
    if not isinstance(text, str) or not text.isascii():
        return None
    if len(text) == 46 and text.startswith("Qm"):
        try:
            raw = b58decode(text)
        except ValueError:
            return None
        return Cid(0, DAG_PB, raw[2:]) if raw[:2] == _SHA2_256 and len(raw) == 34 else None
    if len(text) == 59 and text.startswith("b"):
        try:
            raw = base64.b32decode(text[1:].upper() + "=" * 6)  # 58 characters, 36 bytes
        except ValueError:
            return None
        codec = _V1_CODEC.get(raw[:2])
        if codec is None or raw[2:4] != _SHA2_256 or len(raw) != 36:
            return None
        return Cid(1, codec, raw[4:])
    return None


# -- protobuf, the little of it dag-pb and UnixFS use -----------------------------------------
_SMALL_VARINTS = [bytes([value]) for value in range(0x80)]  # one byte each: most fields


def varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise UnixFsError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise UnixFsError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            yield number, value
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > len(buf):
                raise UnixFsError("truncated protobuf field")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise UnixFsError(f"unexpected protobuf wire type {wire}")


# -- dag-pb and UnixFS nodes --------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    cid: Cid
    name: str
    tsize: int


@dataclass
class Node:
    links: list[Link] = field(default_factory=list)
    data: bytes | None = None

    def encode(self) -> bytes:
        out = bytearray()
        for link in self.links:
            body = (
                _field_bytes(1, link.cid.binary)
                + _field_bytes(2, link.name.encode())
                + _field_varint(3, link.tsize)
            )
            out += _field_bytes(2, body)
        if self.data is not None:
            out += _field_bytes(1, self.data)
        return bytes(out)

    @classmethod
    def decode(cls, block: bytes) -> Node:
        node = cls()
        for number, value in _fields(block):
            if number == 2 and isinstance(value, bytes):
                hash_, name, tsize = b"", "", 0
                for n, v in _fields(value):
                    if n == 1 and isinstance(v, bytes):
                        hash_ = v
                    elif n == 2 and isinstance(v, bytes):
                        name = v.decode("utf-8", "replace")
                    elif n == 3 and isinstance(v, int):
                        tsize = v
                node.links.append(Link(Cid.parse(hash_), name, tsize))
            elif number == 1 and isinstance(value, bytes):
                node.data = value
        return node


@dataclass
class UnixFsData:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        out = _field_varint(1, self.type)
        if self.data:
            out += _field_bytes(2, self.data)
        if self.filesize is not None:
            out += _field_varint(3, self.filesize)
        for size in self.blocksizes:
            out += _field_varint(4, size)
        return out

    @classmethod
    def decode(cls, raw: bytes) -> UnixFsData:
        out = cls(type=-1)
        for number, value in _fields(raw):
            if number == 1 and isinstance(value, int):
                out.type = value
            elif number == 2 and isinstance(value, bytes):
                out.data = value
            elif number == 3 and isinstance(value, int):
                out.filesize = value
            elif number == 4 and isinstance(value, int):
                out.blocksizes.append(value)
        if out.type < 0:
            raise UnixFsError("UnixFS data without a type")
        return out


# -- the builder -------------------------------------------------------------------------------
Piece = bytes | memoryview
# A block handed over in pieces (joined, they are the block): a leaf's chunk is never copied.
PutBlock = Callable[[Cid, Sequence[Piece]], None]


@dataclass(frozen=True)
class Added:
    cid: Cid
    size: int  # file bytes below this node
    tsize: int  # block bytes below this node, itself included


def leaf_pieces(chunk: Piece) -> list[Piece]:
    """A dag-pb leaf holding `chunk` (non-empty): PBNode{Data: UnixFS{File, chunk, size}}, as
    a head, the chunk itself and a tail."""
    size = varint(len(chunk))
    unixfs_len = 2 + 1 + len(size) + len(chunk) + 1 + len(size)
    return [b"\x0a" + varint(unixfs_len) + b"\x08\x02\x12" + size, chunk, b"\x18" + size]


class FileBuilder:
    """Write the file's bytes in pieces of any size; get the root at the end. `finished`
    runs before `finish` returns (the store's commit: the blocks on disk); `abandoned` when
    the file is given up half-way (`abandon`)."""

    def __init__(
        self,
        put: PutBlock,
        cid_version: int = 0,
        raw_leaves: bool | None = None,
        finished: Callable[[], None] | None = None,
        abandoned: Callable[[], None] | None = None,
    ):
        self._put = put
        self._version = cid_version
        self._raw_leaves = cid_version == 1 if raw_leaves is None else raw_leaves
        self._finished = finished
        self._abandoned = abandoned
        self._levels: list[list[Added]] = [[]]
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        """Cut `data` into CHUNK_SIZE chunks, keeping the tail; whole chunks are handed to the
        store as views of `data`, not copies, so `data` must not change until `finish`."""
        view = memoryview(data)
        if self._pending:
            taken = CHUNK_SIZE - len(self._pending)
            self._pending += view[:taken]
            view = view[taken:]
            if len(self._pending) < CHUNK_SIZE:
                return
            self._add_chunk(bytes(self._pending))
            self._pending = bytearray()
        while len(view) >= CHUNK_SIZE:
            self._add_chunk(view[:CHUNK_SIZE])
            view = view[CHUNK_SIZE:]
        self._pending += view

    def _store(self, pieces: Sequence[Piece], codec: str) -> Cid:
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        # a raw block has no CIDv0: raw leaves are CIDv1 whatever the nodes above them are
        cid = Cid(1 if codec == RAW else self._version, codec, digest.digest())
        self._put(cid, pieces)
        return cid

    def _add_chunk(self, chunk: Piece) -> None:
        if self._raw_leaves:
            leaf = Added(self._store([chunk], RAW), len(chunk), len(chunk))
        else:
            pieces = leaf_pieces(chunk)
            tsize = sum(len(p) for p in pieces)
            leaf = Added(self._store(pieces, DAG_PB), len(chunk), tsize)
        self._push(0, leaf)

    def _push(self, level: int, item: Added) -> None:
        while len(self._levels) <= level:
            self._levels.append([])
        self._levels[level].append(item)
        if len(self._levels[level]) == MAX_LINKS:
            children, self._levels[level] = self._levels[level], []
            self._push(level + 1, self._parent(children))

    def _parent(self, children: list[Added]) -> Added:
        size = sum(c.size for c in children)
        data = UnixFsData(FILE, filesize=size, blocksizes=[c.size for c in children]).encode()
        node = Node([Link(c.cid, "", c.tsize) for c in children], data)
        block = node.encode()
        cid = self._store([block], DAG_PB)
        return Added(cid, size, len(block) + sum(c.tsize for c in children))

    def finish(self) -> Added:
        root = self._root()
        if self._finished is not None:
            self._finished()
        return root

    def abandon(self) -> None:
        if self._abandoned is not None:
            self._abandoned()

    def _root(self) -> Added:
        if self._pending:
            self._add_chunk(bytes(self._pending))
            self._pending = bytearray()
        if not any(self._levels):  # the empty file: one empty leaf, as kubo makes it
            if self._raw_leaves:
                return Added(self._store([b""], RAW), 0, 0)
            block = Node(data=UnixFsData(FILE, filesize=0).encode()).encode()
            return Added(self._store([block], DAG_PB), 0, len(block))
        level = 0
        while True:
            pending = self._levels[level]
            if len(pending) == 1 and not any(self._levels[level + 1 :]):
                return pending[0]
            if pending:
                self._levels[level] = []
                self._push(level + 1, self._parent(pending))
            level += 1


def check_entry_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise UnixFsError(f"bad file name {name[:80]!r}")


def directory_node(entries: list[tuple[str, Added]], put: PutBlock, cid_version: int) -> Added:
    """A UnixFS directory of `entries` (name, child), sorted by name as kubo sorts them."""
    for name, _ in entries:
        check_entry_name(name)
    ordered = sorted(entries, key=lambda e: e[0].encode())
    node = Node(
        [Link(child.cid, name, child.tsize) for name, child in ordered],
        UnixFsData(DIRECTORY).encode(),
    )
    block = node.encode()
    cid = Cid.of(block, cid_version, DAG_PB)
    put(cid, [block])
    size = sum(child.size for _, child in ordered)
    return Added(cid, size, len(block) + sum(child.tsize for _, child in ordered))
