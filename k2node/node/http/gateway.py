"""The embedded store on the node's HTTP port: a trustless gateway and a kubo RPC subset.

`GET /ipfs/<cid>[/path]` serves what this node holds (never fetched on a peer's behalf):
the file, `?format=raw` one block, `?format=car` the DAG as CARv1. `POST /api/v0/...`
speaks enough of kubo's RPC (add, cat, block/get, pin/add, id, version) that aioipfs and
`k2node ipfs` can use a running node; it takes admin requests only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from k2node import __version__, codec
from k2node.http_errors import HttpError, json_response
from k2node.ipfs.dag import IpfsError, IsDirectory, NotFound, TooLarge
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.unixfs import CHUNK_SIZE, Added, Cid, UnixFsError
from k2node.logs import get_logger

log = get_logger("k2node.gateway")

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
MAX_ADD_BYTES = 1024 * 1024 * 1024


def _status_of(exc: IpfsError) -> int:
    """The asker's mistakes are 4xx; content this node cannot serve whole is a 502."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, IsDirectory):
        return 400
    return 502


def _refusal(status: int, message: str) -> HttpError:
    """An error as kubo's clients read it (`Message`, `Type`) besides our `message`."""
    return HttpError(status, message, Message=message, Type="error")


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("", "1", "true", "yes")


class IpfsGateway:
    def __init__(
        self, ipfs: EmbeddedIpfs, is_admin: Callable[[web.Request], bool], node_id: str
    ) -> None:
        self._ipfs = ipfs
        self._local = ipfs.local_reader
        self._is_admin = is_admin
        self._node_id = node_id

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ipfs/{cid}", self._gateway),
            web.get("/ipfs/{cid}/{path:.*}", self._gateway),
            web.post("/api/v0/add", self._admin(self._add)),
            web.post("/api/v0/cat", self._admin(self._cat)),
            web.post("/api/v0/block/get", self._admin(self._block_get)),
            web.post("/api/v0/pin/add", self._admin(self._pin_add)),
            web.post("/api/v0/id", self._admin(self._id)),
            web.post("/api/v0/version", self._admin(self._version)),
        ]

    def _admin(self, handler: Any) -> Any:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self._is_admin(request):
                raise _refusal(403, "the IPFS API takes admin requests only (loopback or token)")
            response: web.StreamResponse = await handler(request)
            return response

        return guarded

    # -- trustless gateway ------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        try:
            root = Cid.parse(request.match_info["cid"])
        except UnixFsError as exc:
            raise _refusal(400, str(exc)) from None
        path = request.match_info.get("path", "")
        accept = request.headers.get("Accept", "")
        fmt = request.query.get("format") or (
            "raw" if RAW_TYPE in accept else "car" if CAR_TYPE in accept else ""
        )
        try:
            if fmt == "raw":
                if path:
                    raise _refusal(400, "format=raw serves one block: no path")
                return web.Response(body=await self._local.block(root), content_type=RAW_TYPE)
            if fmt == "car":
                target = await self._local.resolve(root, path)
                await self._local.block(target)  # held here, or a 404 before the CAR header
                return await self._stream(
                    request, self._ipfs.car(target, local_only=True), CAR_TYPE
                )
            if fmt:
                raise _refusal(400, f"unknown format {fmt[:20]!r}: use raw or car")
            target = await self._local.resolve(root, path)
            first = self._local.cat(target, max_bytes=1 << 62)
            return await self._stream(request, first, "application/octet-stream")
        except IpfsError as exc:
            raise _refusal(_status_of(exc), str(exc)) from None

    async def _stream(
        self, request: web.Request, pieces: AsyncIterator[bytes], content_type: str
    ) -> web.StreamResponse:
        # the first piece decides the status: a missing root is a clean 404
        try:
            head = await anext(pieces)
        except StopAsyncIteration:
            head = b""
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            if request.method != "HEAD":  # a HEAD's answer is its status and headers
                await response.write(head)
                async for piece in pieces:
                    await response.write(piece)
            await response.write_eof()
        except IpfsError as exc:
            # too late for a status: cut the body short so the client sees it incomplete
            log.warning("ipfs_stream_cut", path=request.path, error=str(exc))
            response.force_close()
        except ConnectionResetError:  # the client went away: nobody to answer
            log.info("ipfs_stream_abandoned", path=request.path)
        return response

    # -- kubo RPC subset --------------------------------------------------------------------------
    async def _add(self, request: web.Request) -> web.StreamResponse:
        try:
            version = int(request.query.get("cid-version", "0") or 0)
        except ValueError:
            version = -1
        raw_leaves = _truthy(request.query["raw-leaves"]) if "raw-leaves" in request.query else None
        wrap = _truthy(request.query.get("wrap-with-directory", "false"))
        if version not in (0, 1):
            raise _refusal(400, "cid-version must be 0 or 1")
        if not request.content_type.startswith("multipart/"):
            raise _refusal(400, "add needs a multipart/form-data body")
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError):
            raise _refusal(400, "add needs a multipart/form-data body") from None
        lines: list[dict[str, str]] = []
        entries: list[tuple[str, Added]] = []
        total = 0
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name != "file":
                    continue
                name = part.filename or ""
                builder = self._ipfs.file_builder(version, raw_leaves)
                try:
                    # pieces go into the DAG as they arrive: an upload is never held whole
                    while piece := await part.read_chunk(CHUNK_SIZE):
                        total += len(piece)
                        if total > MAX_ADD_BYTES:
                            raise _refusal(413, f"add takes at most {MAX_ADD_BYTES} bytes")
                        builder.write(piece)
                except BaseException:
                    builder.abandon()
                    raise
                # a synced write, on a thread; it finishes (or fails and cleans up) there, even
                # if this request is cancelled meanwhile
                added = await asyncio.to_thread(builder.finish)
                entries.append((name, added))
                cid = str(added.cid)
                lines.append({"Name": name or cid, "Hash": cid, "Size": str(added.tsize)})
        except (ValueError, AssertionError) as exc:  # aiohttp's word for a broken multipart
            raise _refusal(400, f"the multipart body is malformed: {str(exc)[:120]}") from None
        if not entries:
            raise _refusal(400, "no file part in the body")
        if wrap:
            try:
                directory = await asyncio.to_thread(self._ipfs.wrap, entries, version)
            except IpfsError as exc:
                raise _refusal(400, str(exc)) from None
            lines.append({"Name": "", "Hash": str(directory.cid), "Size": str(directory.tsize)})
        body = "\n".join(codec.dumps_text(line) for line in lines) + "\n"
        return web.Response(text=body, content_type="application/json")

    def _arg(self, request: web.Request) -> tuple[Cid, str]:
        arg = request.query.get("arg", "").removeprefix("/ipfs/")
        cid_text, _, path = arg.partition("/")
        return Cid.parse(cid_text), path

    @staticmethod
    def _kubo_error(exc: IpfsError | UnixFsError) -> HttpError:
        """400 for a bad argument (kubo's status), 404 and 413 where kubo says 500: what a
        client asks for never makes a 5xx here."""
        if isinstance(exc, UnixFsError):
            return _refusal(400, str(exc))
        return _refusal(_status_of(exc), str(exc))

    async def _cat(self, request: web.Request) -> web.StreamResponse:
        try:
            root, path = self._arg(request)
            target = await self._ipfs.resolve(root, path)
            return await self._stream(
                request, self._ipfs.cat(target, max_bytes=1 << 62), "text/plain"
            )
        except (IpfsError, UnixFsError) as exc:
            raise self._kubo_error(exc) from None

    async def _block_get(self, request: web.Request) -> web.Response:
        try:
            cid, _ = self._arg(request)
            return web.Response(body=await self._ipfs.block(cid), content_type="text/plain")
        except (IpfsError, UnixFsError) as exc:
            raise self._kubo_error(exc) from None

    async def _pin_add(self, request: web.Request) -> web.Response:
        try:
            cid, path = self._arg(request)
            target = await self._ipfs.resolve(cid, path)
            await self._ipfs.pin(str(target))
        except (IpfsError, UnixFsError) as exc:
            raise self._kubo_error(exc) from None
        return json_response({"Pins": [str(target)]})

    async def _id(self, _: web.Request) -> web.Response:
        return json_response(
            {
                "ID": self._node_id,
                "AgentVersion": f"k2node/{__version__}",
                "Addresses": [],
                "Protocols": [],
            }
        )

    async def _version(self, _: web.Request) -> web.Response:
        return json_response(
            {
                "Version": __version__,
                "Commit": "",
                "Repo": "k2node",
                "System": "python",
                "Golang": "",
            }
        )
