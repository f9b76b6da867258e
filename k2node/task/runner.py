"""The task process: IPC timer listener, the task's own HTTP server, its NamespaceWrapper.

Started by the node as `python -m k2node.task <the ten positional arguments of the contract>`
with the fork channel's descriptor in NODE_CHANNEL_FD and the task's code in
K2NODE_TASK_ENTRY (`module:Class` or `path/to/file.py:Class`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import os
import signal
import socket
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from k2node.artifact import VENDOR, ArtifactError, read_manifest
from k2node.contract.ipc import TASK_LIMITS, TASK_SECRET, IpcChannel
from k2node.contract.launch import SECRET_ON_CHANNEL, TASK_SOCKET_ENV, TaskArgs
from k2node.contract.methods import MAX_RPC_BODY, Method
from k2node.contract.phases import PHASE_NAMES, Phase
from k2node.contract.values import is_round
from k2node.eventloop import loop_kind
from k2node.http_errors import json_errors, json_response
from k2node.logs import get_logger
from k2node.task.core import CoreLogic
from k2node.task.namespace import NamespaceWrapper

log = get_logger("k2node.task")


class TaskStartError(Exception):
    pass


def load_entry(spec: str) -> CoreLogic:
    """Instantiate the task's CoreLogic from `module:Class`, `file.py:Class`, or a built
    task artifact (a zip whose manifest names its entry)."""
    if ":" not in spec and zipfile.is_zipfile(spec):
        try:
            manifest = read_manifest(Path(spec))
        except ArtifactError as exc:
            raise TaskStartError(str(exc)) from None
        sys.path[:0] = [spec, f"{spec}/{VENDOR}"]  # zipimport: its modules, then its vendored
        spec = manifest.entry
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise TaskStartError(f"task entry {spec!r} is not of the form module:Class")
    try:
        if target.endswith(".py"):
            path = Path(target)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise TaskStartError(f"cannot load {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except (ImportError, OSError) as exc:
        raise TaskStartError(f"cannot import task entry {spec!r}: {exc}") from None
    found = getattr(module, attr, None)
    if isinstance(found, type) and issubclass(found, CoreLogic):
        return found()
    if isinstance(found, CoreLogic):
        return found
    raise TaskStartError(f"task entry {spec!r} is not a CoreLogic subclass")


async def run_phase(
    core: CoreLogic, message: dict[str, Any], logged: bool = True
) -> dict[str, Any]:
    """Run one phase message; return the phaseDone reply (k2node extension). `logged`:
    the outcome in the task's log (in-process, the node logs it already)."""
    name = message["functionCall"]
    round_ = message.get("roundNumber")
    reply: dict[str, Any] = {"phaseDone": name, "roundNumber": round_}
    if isinstance(message.get("phaseLabel"), str):
        reply["phaseLabel"] = message["phaseLabel"][:100]
    if name not in PHASE_NAMES or not is_round(round_):
        return reply | {"ok": False, "ms": 0.0, "error": "bad phase message"}
    structlog.contextvars.bind_contextvars(round=round_, phase=name)
    started = time.perf_counter()
    try:
        match Phase(name):
            case Phase.EXECUTE_TASK:
                await core.task(round_)
            case Phase.SUBMIT_PAYLOAD:
                await core.submit_task(round_)
            case Phase.AUDIT_PAYLOAD:
                await core.audit_task(round_)
            case Phase.GENERATE_DISTRIBUTION:
                await core.submit_distribution_list(
                    round_, bool(message.get("isPreviousRoundFailed", False))
                )
            case Phase.DISTRIBUTION_AUDIT:
                await core.audit_distribution(round_)
        ok, error = True, None
    except Exception as exc:  # the task's failure must not end the process
        ok, error = False, f"{type(exc).__name__}: {exc}"
    ms = round((time.perf_counter() - started) * 1000, 3)
    if logged and ok:
        log.info("phase_done", ms=ms)
    elif logged:
        log.warning("phase_failed", ms=ms, error=error)
    return reply | {"ok": ok, "ms": ms} | ({"error": error} if error else {})


def build_task_app(core: CoreLogic) -> web.Application:
    app = web.Application(client_max_size=MAX_RPC_BODY, middlewares=[json_errors])

    async def root(_: web.Request) -> web.Response:
        return json_response({"status": 200, "message": "Running"})

    async def task_state(_: web.Request) -> web.Response:
        return json_response({"taskState": await core.namespace.get_task_state({})})

    async def value(_: web.Request) -> web.Response:
        return json_response({"value": await core.namespace.store_get("value")})

    app.router.add_get("/", root)
    app.router.add_get("/taskState", task_state)
    app.router.add_get("/value", value)
    app.router.add_routes(core.routes())
    return app


async def run_task(args: TaskArgs, entry: str, channel_fd: int) -> int:
    core = load_entry(entry)
    structlog.contextvars.bind_contextvars(task_id=args.task_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = socket.socket(fileno=channel_fd)
    channel = await IpcChannel.over(sock)
    if args.secret == SECRET_ON_CHANNEL:  # the node's first message carries it
        first = await channel.receive()
        secret = first.get(TASK_SECRET) if first is not None else None
        if not isinstance(secret, str):
            raise TaskStartError("the node sent no secret on the channel")
        args = dataclasses.replace(args, secret=secret)
    running: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:
        ns = NamespaceWrapper(
            args.task_id, args.secret, f"http://127.0.0.1:{args.node_port}", session
        )
        core.namespace = ns
        await ns.open_store()
        # open WebSockets and streams get a second to finish when the task stops, not 60
        runner = web.AppRunner(build_task_app(core), access_log=None, shutdown_timeout=1.0)
        try:
            await ns.call(Method.DEFAULT_TASK_SETUP)
            await core.setup()
            await runner.setup()
            socket_path = os.environ.get(TASK_SOCKET_ENV)
            if socket_path:  # only the node can reach it (K2NODE_TASK_SOCKET)
                await web.UnixSite(runner, socket_path).start()
                log.info("task_started", name=args.name, socket=socket_path, event_loop=loop_kind())
            else:
                await web.TCPSite(runner, "127.0.0.1", args.port).start()
                log.info("task_started", name=args.name, port=args.port, event_loop=loop_kind())
            if core.max_request_body is not None:
                await channel.send({TASK_LIMITS: {"maxRequestBody": core.max_request_body}})

            async def phase(message: dict[str, Any]) -> None:
                reply = await run_phase(core, message)
                try:
                    await channel.send(reply)
                except (ConnectionError, OSError):
                    stop.set()

            async def listen() -> None:
                while (message := await channel.receive()) is not None:
                    if "functionCall" not in message:
                        continue
                    job = asyncio.create_task(phase(message), name=f"phase-{message}")
                    running.add(job)
                    job.add_done_callback(running.discard)
                stop.set()  # the node closed the channel: it is gone or stopping us

            listener = asyncio.create_task(listen(), name="ipc-listener")
            await stop.wait()
            listener.cancel()
            for job in list(running):
                job.cancel()
            await asyncio.gather(listener, *running, return_exceptions=True)
        finally:
            await runner.cleanup()
            await channel.close()
            ns.close_store()
    log.info("task_stopped")
    return 0
