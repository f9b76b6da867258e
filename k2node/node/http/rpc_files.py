"""The namespace RPC's file methods: the task's folder (`fs`) and IPFS, whose bytes travel
base64-encoded inside the JSON body (k2node extensions)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
from pathlib import Path
from typing import Any

from k2node.contract.methods import Method
from k2node.contract.values import is_int
from k2node.ipfs import IpfsBackend
from k2node.node.agent import ActionError
from k2node.node.context import TaskContext
from k2node.node.http.rpc_methods import method

# base64 grows 4/3: this keeps an answer inside the 8 MiB RPC body limit
MAX_IPFS_GET = 4 * 1024 * 1024
# a byte as a JSON number takes up to 4 characters: this keeps a Buffer inside it too
MAX_STREAM_READ = 1024 * 1024


def _confined(ctx: TaskContext, path: Any) -> Path:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ActionError("path must be a non-empty string")
    base = ctx.agent.base_path.resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base):
        raise ActionError("path is outside the task's folder")
    return target


def _fs_sync(target: Path, method: str, args: tuple[Any, ...]) -> Any:
    match method:
        case "readFile" | "readFileSync":
            return target.read_text()
        case "writeFile" | "writeFileSync":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(args[0]) if args else "")
            return None
        case "appendFile" | "appendFileSync":
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a") as out:
                out.write(str(args[0]) if args else "")
            return None
        case "mkdir" | "mkdirSync":
            target.mkdir(parents=True, exist_ok=True)
            return None
        case "readdir" | "readdirSync":
            return sorted(p.name for p in target.iterdir())
        case "exists" | "existsSync" | "access":
            return target.exists()
        case "unlink" | "unlinkSync":
            target.unlink()
            return None
        case "rm" | "rmSync":
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            return None
    raise ActionError(f"fs method {method!r} is not supported")


@method(Method.FS, Method.FS_STAKING)
async def _fs(ctx: TaskContext, method: Any, path: Any, *args: Any) -> Any:
    if not isinstance(method, str):
        raise ActionError("fs method must be a string")
    target = _confined(ctx, path)
    return await asyncio.to_thread(_fs_sync, target, method, args)


def _read_buffer(target: Path) -> dict[str, Any]:
    size = target.stat().st_size
    if size > MAX_STREAM_READ:
        raise ActionError(
            f"{target.name} is {size} bytes; fsReadStream answers at most {MAX_STREAM_READ}"
        )
    return {"type": "Buffer", "data": list(target.read_bytes())}


@method(Method.FS_READ_STREAM)
async def _fs_read_stream(ctx: TaskContext, path: Any) -> dict[str, Any]:
    """A file's bytes as Node.js's Buffer crosses JSON (a stream cannot cross it)."""
    return await asyncio.to_thread(_read_buffer, _confined(ctx, path))


def _open_for_writing(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"")


@method(Method.FS_WRITE_STREAM)
async def _fs_write_stream(ctx: TaskContext, path: Any) -> dict[str, Any]:
    """Opens (creating or emptying) a file for the task to write with `fs` appendFile; what
    crosses JSON of a Node.js WriteStream is its path and flags."""
    target = _confined(ctx, path)
    await asyncio.to_thread(_open_for_writing, target)
    return {"path": str(target.relative_to(ctx.agent.base_path.resolve())), "flags": "w"}


# -- IPFS (k2node extensions): bytes travel base64-encoded inside the JSON body -------------
def _ipfs(ctx: TaskContext) -> IpfsBackend:
    if ctx.ipfs is None:
        raise ActionError("this node has no IPFS store")
    return ctx.ipfs


def _unbase64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ActionError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ActionError(f"{what} is not valid base64") from None


def _cid_version(value: Any) -> int:
    if not is_int(value) or value not in (0, 1):
        raise ActionError("cidVersion must be 0 or 1")
    return int(value)


@method(Method.IPFS_UPLOAD)
async def _ipfs_upload(ctx: TaskContext, files: Any, cid_version: Any = 0) -> str:
    """Files {name: base64} wrapped in one directory; answers the directory's CID."""
    if not isinstance(files, dict) or not files:
        raise ActionError("files must be a non-empty object {name: base64}")
    decoded = {str(name): _unbase64(data, f"file {str(name)[:40]}") for name, data in files.items()}
    return await _ipfs(ctx).publish_directory(decoded, _cid_version(cid_version))


@method(Method.IPFS_UPLOAD_FILE)
async def _ipfs_upload_file(ctx: TaskContext, data: Any, cid_version: Any = 0) -> str:
    return await _ipfs(ctx).publish(_unbase64(data, "data"), _cid_version(cid_version))


@method(Method.IPFS_GET)
async def _ipfs_get(ctx: TaskContext, cid: Any, path: Any = "", max_bytes: Any = None) -> str:
    """A file's verified bytes, base64-encoded; refused past maxBytes (default 4 MiB)."""
    if not isinstance(cid, str) or not isinstance(path, str):
        raise ActionError("cid and path must be strings")
    limit = MAX_IPFS_GET if max_bytes is None else max_bytes
    if not is_int(limit) or not 0 < limit <= MAX_IPFS_GET:
        raise ActionError(f"maxBytes must be an integer in 1..{MAX_IPFS_GET}")
    return base64.b64encode(await _ipfs(ctx).fetch(cid, path, limit)).decode()
