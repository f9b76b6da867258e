"""IPFS for k2node: an embedded store with kubo-identical CIDs, or a kubo node."""

from __future__ import annotations

from typing import Protocol

from k2node.ipfs.dag import DEFAULT_MAX_BYTES, IpfsError, NotFound, TooLarge

__all__ = ["DEFAULT_MAX_BYTES", "IpfsBackend", "IpfsError", "NotFound", "TooLarge"]


class IpfsBackend(Protocol):
    """What the node and its tasks need of IPFS; every byte returned is verified."""

    async def publish(self, data: bytes, cid_version: int = 0) -> str: ...

    async def publish_directory(self, files: dict[str, bytes], cid_version: int = 0) -> str: ...

    async def fetch(
        self, cid: str, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> bytes: ...

    async def pin(self, cid: str) -> None: ...
