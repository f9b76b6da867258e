"""Reading UnixFS DAGs block by block, each block checked against its CID first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from k2node.ipfs.unixfs import DAG_PB, DIRECTORY, RAW, Cid, Node, UnixFsData, UnixFsError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

GetBlock = Callable[[Cid], Awaitable[bytes]]


class IpfsError(Exception):
    """Content that cannot be had, or does not match its CID; the message names the CID."""


class NotFound(IpfsError):
    pass


class TooLarge(IpfsError):
    pass


class IsDirectory(IpfsError):
    """A file was asked for and the CID names a directory: the asker's mistake."""


class DagReader:
    """Files and directories over any source of verified blocks."""

    def __init__(self, block: GetBlock) -> None:
        self.block = block

    async def resolve(self, cid: Cid, path: str = "") -> Cid:
        for name in (part for part in path.split("/") if part):
            node = await self._node(cid)
            if node is None or _unixfs(node, cid).type != DIRECTORY:
                raise NotFound(f"{cid} is not a directory, so it has no {name!r}")
            link = next((lk for lk in node.links if lk.name == name), None)
            if link is None:
                raise NotFound(f"{cid} has no entry {name!r}")
            cid = link.cid
        return cid

    async def _node(self, cid: Cid) -> Node | None:
        block = await self.block(cid)
        if cid.codec == RAW:
            return None
        try:
            return Node.decode(block)
        except UnixFsError as exc:
            raise IpfsError(f"block {cid} is not a dag-pb node: {exc}") from None

    async def file_size(self, cid: Cid) -> int | None:
        """A file's size as its root block says (a raw block: its length)."""
        node = await self._node(cid)
        if node is None:
            return len(await self.block(cid))
        return _unixfs(node, cid).filesize

    async def cat(
        self, cid: Cid, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> AsyncIterator[bytes]:
        """The file's bytes, every block verified; TooLarge past `max_bytes`."""
        target = await self.resolve(cid, path)
        sent = 0
        async for piece in self._file(target, max_bytes, top=True):
            sent += len(piece)
            if sent > max_bytes:
                raise TooLarge(f"{target} is larger than {max_bytes} bytes")
            yield piece

    async def cat_bytes(
        self, cid: Cid, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> bytes:
        return b"".join([piece async for piece in self.cat(cid, path, max_bytes)])

    async def _file(self, cid: Cid, max_bytes: int, top: bool = False) -> AsyncIterator[bytes]:
        node = await self._node(cid)
        if node is None:
            yield await self.block(cid)
            return
        data = _unixfs(node, cid)
        if data.type == DIRECTORY:
            raise IsDirectory(f"{cid} is a directory")
        if top and data.filesize is not None and data.filesize > max_bytes:
            raise TooLarge(f"{cid} holds {data.filesize} bytes, over {max_bytes}")
        if data.data:
            yield data.data
        for link in node.links:
            async for piece in self._file(link.cid, max_bytes):
                yield piece

    async def walk(self, cid: Cid) -> AsyncIterator[tuple[Cid, bytes]]:
        """Every block of the DAG under `cid`, depth first, root first."""
        block = await self.block(cid)
        yield cid, block
        if cid.codec == DAG_PB:
            for link in Node.decode(block).links:
                async for item in self.walk(link.cid):
                    yield item


def _unixfs(node: Node, cid: Cid) -> UnixFsData:
    if node.data is None:
        raise IpfsError(f"{cid} is a dag-pb node without UnixFS data")
    try:
        return UnixFsData.decode(node.data)
    except UnixFsError as exc:
        raise IpfsError(f"{cid} has bad UnixFS data: {exc}") from None
