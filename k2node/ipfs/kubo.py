"""The kubo backend: the same interface as the embedded store, through aioipfs.

Selected by `IPFS_API=http://127.0.0.1:5001`. Calls are time-boxed and retried with backoff;
a daemon that stays down is an error saying so. Nothing kubo returns is trusted: a CID it
computes is checked against our own computation, and fetched blocks against their CIDs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from k2node.ipfs.dag import DEFAULT_MAX_BYTES, DagReader, IpfsError
from k2node.ipfs.unixfs import Cid, FileBuilder, UnixFsError, check_entry_name
from k2node.logs import get_logger

log = get_logger("k2node.ipfs")

T = TypeVar("T")
_TRANSIENT: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


def local_cid(data: bytes, cid_version: int, raw_leaves: bool | None = None) -> str:
    """The CID kubo must give `data` with its defaults for these options."""
    builder = FileBuilder(lambda _cid, _block: None, cid_version, raw_leaves)
    builder.write(data)
    return str(builder.finish().cid)


class KuboIpfs:
    def __init__(
        self, api_url: str, timeout_s: float = 30.0, retries: int = 3, backoff_s: float = 0.5
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"IPFS_API must be an http(s) URL, got {api_url!r}")
        self._url = api_url
        self._parts = parts
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._client: Any = None
        self._transient = _TRANSIENT
        self.reader = DagReader(self._block)

    async def start(self) -> None:
        # imported here: aioipfs and what it pulls in (setuptools among them) cost a node that
        # does not use kubo several MB of memory and a tenth of a second at start
        import aioipfs

        self._transient = (aioipfs.APIError, *_TRANSIENT)
        self._client = aioipfs.AsyncIPFS(
            host=self._parts.hostname,
            port=self._parts.port or (443 if self._parts.scheme == "https" else 80),
            scheme=self._parts.scheme,
            read_timeout=int(self._timeout_s),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        last: BaseException | None = None
        for attempt in range(self._retries):
            try:
                return await asyncio.wait_for(call(), self._timeout_s)
            except self._transient as exc:
                last = exc
                log.warning(
                    "ipfs_api_retry",
                    api=self._url,
                    call=what,
                    attempt=attempt + 1,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                await asyncio.sleep(self._backoff_s * 2**attempt)
        raise IpfsError(
            f"IPFS API {self._url} {what} failed after {self._retries} tries: "
            f"{type(last).__name__}: {last}"
        )

    async def publish(
        self, data: bytes, cid_version: int = 0, raw_leaves: bool | None = None
    ) -> str:
        options: dict[str, Any] = {"cid_version": cid_version, "pin": True}
        if raw_leaves is not None:
            options["raw_leaves"] = raw_leaves
        added = await self._call("add", lambda: self._client.add_bytes(data, **options))
        cid = str(added["Hash"])
        expected = await asyncio.to_thread(local_cid, data, cid_version, raw_leaves)
        if cid != expected:
            raise IpfsError(
                f"IPFS API {self._url} returned {cid} for content whose CID is "
                f"{expected}: is it using non-default add options?"
            )
        return cid

    async def publish_directory(self, files: dict[str, bytes], cid_version: int = 0) -> str:
        try:
            for name in files:
                check_entry_name(name)
        except UnixFsError as exc:
            raise IpfsError(str(exc)) from None
        core = self._client.core
        params = core._build_add_params(wrap_with_directory=True, cid_version=cid_version, pin=True)

        async def add_all() -> list[dict[str, Any]]:
            # aioipfs's own file helper does not work with current aiohttp: build the parts
            with aiohttp.MultipartWriter("form-data") as form:
                for name, data in files.items():
                    part = aiohttp.payload.BytesPayload(
                        data, content_type="application/octet-stream"
                    )
                    part.set_content_disposition("form-data", name="file", filename=name)
                    form.append_payload(part)
                return [entry async for entry in core.add_generic(form, params=params)]

        entries = await self._call("add", add_all)
        wrapper = [e for e in entries if e.get("Name", "") == ""]
        if not wrapper:
            raise IpfsError(f"IPFS API {self._url} returned no directory for the upload")
        return str(wrapper[-1]["Hash"])

    async def _block(self, cid: Cid) -> bytes:
        block: bytes = await self._call("block/get", lambda: self._client.block.get(str(cid)))
        try:
            cid.verify(block)
        except UnixFsError as exc:
            raise IpfsError(f"IPFS API {self._url} served a bad block: {exc}") from None
        return block

    async def fetch(self, cid: str, path: str = "", max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        try:
            root = Cid.parse(cid)
        except UnixFsError as exc:
            raise IpfsError(str(exc)) from None
        return await self.reader.cat_bytes(root, path, max_bytes)

    async def pin(self, cid: str) -> None:
        async def pin_all() -> None:
            async for _ in self._client.pin.add(cid):
                pass

        await self._call("pin/add", pin_all)
