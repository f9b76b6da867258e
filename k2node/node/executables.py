"""A task's executable, by the CID its task account names (`task_audit_program` on the IPFS
network; DEVELOPMENT tasks run the node's `K2NODE_TASK_ENTRY`).

Fetched from this node's IPFS store, its peers' gateways or kubo, every byte verified
against the CID on the way (the IPFS layer refuses anything else), told apart by its
content (a k2node task artifact, or a JavaScript bundle; never an HTML page), and kept under
`executables/<cid>.<zip|js>`, written whole or not at all and checked again when reused.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import zipfile
from pathlib import Path
from typing import Any

import yaml

from k2node.artifact import ArtifactError, read_manifest
from k2node.contract.launch import declared_variables
from k2node.ipfs import IpfsBackend, IpfsError
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.ipfs.unixfs import Cid, FileBuilder, UnixFsError
from k2node.logs import get_logger
from k2node.progress import progress_bar

log = get_logger("k2node.node")

MAX_EXECUTABLE_BYTES = 64 * 1024 * 1024
FETCH_ATTEMPTS = 4
FETCH_BACKOFF_S = 1.0


class ExecutableError(Exception):
    """A task's executable that cannot be had or must not be run; the message says why."""


def _kind(data: bytes) -> str:
    """`zip` for a k2node task artifact, `js` for a JavaScript bundle; else refused."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        return "zip"
    head = data[:512].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml")) or not data.strip():
        raise ExecutableError("the executable is an HTML page or empty, not a task")
    try:  # incremental: a character cut at the sample's end is no error
        codecs.getincrementaldecoder("utf-8")().decode(data[:4096], final=False)
    except UnicodeDecodeError:
        raise ExecutableError(
            "the executable is neither a k2node artifact nor JavaScript"
        ) from None
    return "js"


def _same_cid(data: bytes, cid: Cid) -> bool:
    builder = FileBuilder(lambda _cid, _block: None, cid.version)
    builder.write(data)
    return builder.finish().cid == cid


class TaskVariablesMissing(Exception):
    """The task declares variables the operator has not set: it cannot start."""


def declared_for(entry: str, state: dict[str, Any], task_config: Path) -> tuple[str, ...]:
    """The variables a task reads: its artifact's manifest names them; a DEVELOPMENT task's
    config-task.yml (K2NODE_TASK_CONFIG) declares them; a JavaScript bundle names none."""
    if entry.endswith(".zip"):
        try:
            return read_manifest(Path(entry)).task_variables
        except ArtifactError as exc:
            raise ExecutableError(str(exc)) from None
    if state["task_executable_network"] != "DEVELOPMENT" or not task_config.is_file():
        return ()
    try:
        raw = yaml.safe_load(task_config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ExecutableError(f"{task_config}: {exc}") from None
    return declared_variables(raw) if isinstance(raw, dict) else ()


async def executable(
    state: dict[str, Any], folder: Path, ipfs: IpfsBackend, development_entry: str
) -> str:
    """The entry a task process starts with for this task state."""
    network = state["task_executable_network"]
    if network == "DEVELOPMENT":
        return development_entry
    if network != "IPFS":
        raise ExecutableError(f"{network} executables are not supported (IPFS or DEVELOPMENT)")
    named = state["task_audit_program"]
    try:
        cid = Cid.parse(named)
    except UnixFsError as exc:
        raise ExecutableError(f"task_audit_program {named[:64]!r} is not a CID: {exc}") from None
    text = str(cid)  # its canonical form names the file: no path characters, one name
    try:
        path = await asyncio.to_thread(_cached, folder, text, cid)
        if path is None:
            data = await _fetch(ipfs, text)
            path = await asyncio.to_thread(_keep, folder, text, data)
            log.info("executable_fetched", cid=text, path=path, bytes=len(data))
    except ExecutableError:
        raise
    except Exception as exc:  # whatever a hostile executable or DAG provokes: skip the task
        raise ExecutableError(f"{text}: {type(exc).__name__}: {exc}") from None
    return path


def _cached(folder: Path, text: str, cid: Cid) -> str | None:
    """A kept executable, if it is still the one its CID names."""
    for cached in (folder / f"{text}.zip", folder / f"{text}.js"):
        if cached.is_file() and _same_cid(cached.read_bytes(), cid):
            return str(cached)
    return None


def _keep(folder: Path, text: str, data: bytes) -> str:
    """Write a verified executable whole (a partial file is never under its final name)."""
    kind = _kind(data)
    path = folder / f"{text}.{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    try:
        if kind == "zip":
            read_manifest(partial)
        partial.replace(path)
    except ArtifactError as exc:
        raise ExecutableError(str(exc)) from None
    finally:
        partial.unlink(missing_ok=True)
    return str(path)


async def _fetch_once(ipfs: IpfsBackend, cid: str) -> bytes:
    """The executable's bytes; with the node on a terminal, a bar shows the fetch."""
    shown = progress_bar(f"fetching {cid[:16]}…")
    if shown is None or not isinstance(ipfs, EmbeddedIpfs):  # (a bar needs the file's size)
        return await ipfs.fetch(cid, max_bytes=MAX_EXECUTABLE_BYTES)
    root = Cid.parse(cid)
    pieces = []
    with shown as progress:
        task = progress.add_task("fetch", total=await ipfs.reader.file_size(root))
        async for piece in ipfs.cat(root, max_bytes=MAX_EXECUTABLE_BYTES):
            pieces.append(piece)
            progress.advance(task, len(piece))
    return b"".join(pieces)


async def _fetch(ipfs: IpfsBackend, cid: str) -> bytes:
    for attempt in range(FETCH_ATTEMPTS):
        try:
            return await _fetch_once(ipfs, cid)
        except IpfsError as exc:
            if attempt == FETCH_ATTEMPTS - 1:
                raise ExecutableError(f"cannot fetch {cid}: {exc}") from None
            log.warning("executable_fetch_failed", cid=cid, attempt=attempt + 1, error=str(exc))
            await asyncio.sleep(FETCH_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")
