"""`k2node`: a thin entry point. Builds settings and logging, runs one async main."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from k2node import __version__
from k2node.config import ConfigError, Settings, load_settings
from k2node.crypto import WalletError, load_or_create_wallet
from k2node.eventloop import EventLoopError, run_main
from k2node.logs import configure_logging, get_logger
from k2node.operator.commands import OPERATOR_COMMANDS, add_operator_commands
from k2node.store import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2node", description="Koii K2 task node")
    parser.add_argument("--version", action="version", version=f"k2node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the node (embedded local K2 by default)")
    run.add_argument("--env-file", type=Path, default=Path(".env-local"))
    run.add_argument("--data-dir", help="where wallets, databases and task folders live")
    run.add_argument("--port", help="HTTP port (SERVER_PORT)")
    run.add_argument(
        "--reload",
        action="store_true",
        help="restart a DEVELOPMENT task (not the node) when its sources change (K2NODE_RELOAD)",
    )
    k2 = sub.add_parser("k2", help="run the local K2 as a JSON-RPC service nodes share")
    k2.add_argument("--host", default="127.0.0.1")
    k2.add_argument("--port", type=int, default=8899)
    k2.add_argument("--ws-port", type=int, help="PubSub WebSocket port (default: port + 1)")
    k2.add_argument("--data-dir", type=Path, default=Path("data/k2-service"))
    k2.add_argument("--slot-ms", type=float, default=400.0)
    k2.add_argument("--log-format", choices=("auto", "json", "console"), default="auto")
    task = sub.add_parser("task", help="task projects: build the artifact nodes run")
    task_verbs = task.add_subparsers(dest="verb", required=True)
    build = task_verbs.add_parser("build", help="pack a task project into one reproducible zip")
    build.add_argument("path", type=Path, nargs="?", default=Path("."))
    build.add_argument("-o", "--out", type=Path, help="the artifact (default: PATH/dist/task.zip)")
    deploy = task_verbs.add_parser(
        "deploy", help="build, put on IPFS, create the task on K2 (nodes run it by its id)"
    )
    deploy.add_argument("path", type=Path, nargs="?", default=Path("."))
    deploy.add_argument("--env-file", type=Path, default=Path(".env-local"))
    deploy.add_argument("--data-dir", help="the node's data directory (wallet, IPFS, local K2)")
    update = task_verbs.add_parser(
        "update", help="deploy a new version of a task you manage; it takes over its bounty"
    )
    update.add_argument("task_id", help="the task to replace (it stops and names the new one)")
    update.add_argument("path", type=Path, nargs="?", default=Path("."))
    update.add_argument("--env-file", type=Path, default=Path(".env-local"))
    update.add_argument("--data-dir", help="the node's data directory (wallet, IPFS, local K2)")
    wallet = sub.add_parser("wallet", help="show (creating if missing) a wallet's public key")
    wallet.add_argument("path", type=Path)
    ipfs = sub.add_parser("ipfs", help="the node's IPFS store (a running node's, if one is)")
    ipfs.add_argument("--env-file", type=Path, default=Path(".env-local"))
    ipfs.add_argument("--data-dir", help="the node's data directory")
    ipfs.add_argument("--port", help="the running node's HTTP port (SERVER_PORT)")
    verbs = ipfs.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="add a file; print its CID as `ipfs add` does")
    add.add_argument("file", type=Path)
    add.add_argument("--cid-version", type=int, choices=(0, 1), default=0)
    add.add_argument("--raw-leaves", action="store_true", default=None)
    cat = verbs.add_parser("cat", help="write a file's verified bytes to stdout")
    cat.add_argument("cid")
    sim = sub.add_parser(
        "simulate", help="run a task on many nodes in virtual time, some of them cheating"
    )
    sim.add_argument("task", help="the task: path/to/task.py:Class or module:Class")
    sim.add_argument("--nodes", type=int, default=10)
    sim.add_argument("--rounds", type=int, default=10)
    for flag, role in ADVERSARY_FLAGS.items():
        sim.add_argument(f"--{flag}", type=float, default=0.0, metavar="SHARE", help=role)
    sim.add_argument("--seed", type=int, help="the same seed gives the same run")
    sim.add_argument("--config", type=Path, help="config-task.yml (default: beside the task)")
    sim.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    sim.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if an honest node was slashed or cheating paid off (for CI)",
    )
    sim.add_argument("--log-level", default="error", help="the nodes' logs on stderr")
    devnet = sub.add_parser("devnet", help="a K2 service and N nodes on loopback, one command")
    devnet.add_argument("task", nargs="?", help="path/to/task.py:Class (default: the example)")
    devnet.add_argument("--nodes", type=int, default=3)
    devnet.add_argument("--liars", type=int, default=0, help="how many run a lying variant")
    devnet.add_argument("--data-dir", type=Path, default=Path("data/devnet"))
    devnet.add_argument("--slot-ms", type=float, default=400.0)
    add_operator_commands(sub)
    new = sub.add_parser("new", help="write a new task project, tests included")
    new.add_argument("name", help="the project's folder (and the task's name)")
    return parser


# `k2node simulate` flags: each adversary's share of the nodes.
ADVERSARY_FLAGS = {
    "liars": "share of nodes submitting wrong values",
    "silent": "share of nodes submitting nothing",
    "late": "share of nodes submitting after the window",
    "greedy-distributor": "share of nodes whose distribution list pays themselves",
    "false-accusers": "share of nodes voting against every node they audit",
    "colluders": "share of nodes lying and voting for each other's lies",
}


async def _serve_k2(args: argparse.Namespace) -> int:
    from aiohttp import web

    from k2node.settlement.local import LocalK2
    from k2node.settlement.pubsub import pubsub
    from k2node.settlement.service import K2Service

    if not 1 <= args.slot_ms <= 60_000:
        raise ConfigError(f"--slot-ms must be 1-60000, got {args.slot_ms}")
    k2 = LocalK2.open(args.data_dir, args.slot_ms)
    runner = web.AppRunner(K2Service(k2).app(), access_log=None)
    try:
        with stop_on_signals() as stop:
            await runner.setup()
            await web.TCPSite(runner, args.host, args.port).start()
            host, port = runner.addresses[0][:2]
            ws_port = args.ws_port if args.ws_port is not None else (port + 1 if args.port else 0)
            async with pubsub(k2, args.host, ws_port) as server:
                ws_port = next(iter(server.sockets)).getsockname()[1]
                log = get_logger("k2node.k2")
                log.info(
                    "k2_service_started",
                    url=f"http://{host}:{port}",
                    pubsub=f"ws://{host}:{ws_port}",
                    slot_ms=k2.slot_ms,
                )
                await stop.wait()
                log.info("k2_service_stopping")
    finally:
        await runner.cleanup()
        k2.close()
    return 0


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event the first SIGINT or SIGTERM sets. The handlers go as soon as it is set, so a
    second Ctrl-C during a slow shutdown ends the process the default way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def remove() -> None:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    def on_signal() -> None:
        stop.set()
        remove()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        remove()


async def _serve(settings: Settings) -> int:
    from k2node.node.runtime import run_node  # the node's imports only when it runs

    with stop_on_signals() as stop:
        return await run_node(settings, stop)


async def _devnet(args: argparse.Namespace) -> int:
    from k2node.devnet import DevnetError, run_devnet

    try:
        with stop_on_signals() as stop:
            return await run_devnet(
                args.nodes, args.task, args.liars, args.data_dir, args.slot_ms, stop
            )
    except DevnetError as exc:
        print(f"k2node devnet: {exc}", file=sys.stderr)
        return 2


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides = {}
    if args.data_dir:
        overrides["K2NODE_DATA_DIR"] = args.data_dir
    if args.port:
        overrides["SERVER_PORT"] = args.port
    if getattr(args, "reload", False):
        overrides["K2NODE_RELOAD"] = "true"
    return overrides


async def ipfs_command(args: argparse.Namespace, settings: Settings) -> int:
    from k2node.ipfs import IpfsError
    from k2node.ipfs.embedded import EmbeddedIpfs
    from k2node.ipfs.kubo import KuboIpfs
    from k2node.ipfs.unixfs import Cid, UnixFsError
    from k2node.progress import file_chunks

    try:
        store: EmbeddedIpfs | None = EmbeddedIpfs.open(settings.data_dir / "ipfs")
    except StoreError:  # LevelDB allows one process: a running node holds it
        store = None
    try:
        if store is not None:
            if args.verb == "add":
                chunks = file_chunks(args.file, f"adding {args.file.name}")
                cid = store.add_chunks(chunks, args.cid_version, args.raw_leaves).cid
                print(f"added {cid} {args.file.name}")
            else:
                async for piece in store.cat(Cid.parse(args.cid), max_bytes=1 << 62):
                    sys.stdout.buffer.write(piece)
            return 0
        node = KuboIpfs(f"http://127.0.0.1:{settings.server_port}", retries=1)
        await node.start()
        try:
            if args.verb == "add":
                data = await asyncio.to_thread(args.file.read_bytes)
                cid_text = await node.publish(data, args.cid_version, args.raw_leaves)
                print(f"added {cid_text} {args.file.name}")
            else:
                sys.stdout.buffer.write(await node.fetch(args.cid, max_bytes=1 << 62))
        finally:
            await node.close()
        return 0
    except (IpfsError, UnixFsError, OSError) as exc:
        print(f"k2node ipfs: {exc}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()


async def deploy_command(args: argparse.Namespace, settings: Settings) -> int:
    """Build the project (a JavaScript one: take its webpacked bundle), publish it on this
    node's IPFS, create the task on K2 (`task update`: a new version of an existing task)."""
    import aiohttp

    from k2node.artifact import ArtifactError, build, javascript_bundle
    from k2node.ipfs import IpfsError
    from k2node.ipfs.embedded import EmbeddedIpfs
    from k2node.node.provision import deploy_task, update_task
    from k2node.settlement.base import Settlement, TransactionError
    from k2node.settlement.local import LocalK2
    from k2node.settlement.rpc import K2Unreachable, RpcSettlement

    out = settings.data_dir / "builds" / "task.zip"  # not beside the sources: they may be read-only
    try:
        bundle = javascript_bundle(args.path)
        if bundle is None:
            build(args.path, out)
        data = await asyncio.to_thread((bundle or out).read_bytes)
        ipfs = EmbeddedIpfs.open(settings.data_dir / "ipfs")
        try:
            cid = await ipfs.publish(data)
        finally:
            ipfs.close()
        main, _ = load_or_create_wallet(settings.wallet_location)
        async with aiohttp.ClientSession() as session:
            settlement: Settlement
            local: LocalK2 | None = None
            if settings.k2_node_url:
                settlement = await RpcSettlement.connect(settings.k2_node_url, session)
            else:
                local = LocalK2.open(settings.data_dir / "k2", settings.slot_ms)
                settlement = local
            try:
                config = args.path / CONFIG_NAME
                if args.verb == "update":
                    task_id = await update_task(settlement, main, args.task_id, config, cid)
                else:
                    task_id = await deploy_task(settlement, main, config, cid)
            finally:
                if local is not None:
                    local.close()
    except (ArtifactError, IpfsError, TransactionError, K2Unreachable) as exc:
        print(f"k2node task {args.verb}: {exc}", file=sys.stderr)
        return 1
    if args.verb == "update":
        print(f"updated task {args.task_id} to {task_id}: executable {cid}")
    else:
        print(f"deployed task {task_id}: executable {cid}")
    return 0


CONFIG_NAME = "config-task.yml"


def build_command(args: argparse.Namespace) -> int:
    from k2node.artifact import ArtifactError, build
    from k2node.ipfs.unixfs import FileBuilder

    out = args.out or args.path / "dist" / "task.zip"
    try:
        manifest = build(args.path, out)
    except ArtifactError as exc:
        print(f"k2node task build: {exc}", file=sys.stderr)
        return 1
    cid = FileBuilder(lambda _cid, _block: None)  # what `ipfs add` would answer
    cid.write(out.read_bytes())
    print(f"built {out} ({manifest.entry}, task API {manifest.api_version}): {cid.finish().cid}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "wallet":
            pair, created = load_or_create_wallet(args.path)
            print(pair.pubkey + (" (created)" if created else ""))
            return 0
        if args.command == "task" and args.verb == "build":
            return build_command(args)
        if args.command == "task":
            overrides = {"K2NODE_DATA_DIR": args.data_dir} if args.data_dir else {}
            settings = load_settings(args.env_file, os.environ, overrides)
            configure_logging(settings.log_format, "warning", sys.stderr)
            return run_main(deploy_command(args, settings))
        if args.command == "simulate":
            from k2node.testing.command import simulate_command

            configure_logging("console", args.log_level, sys.stderr)
            return run_main(simulate_command(args))
        if args.command == "logs":
            from k2node.operator.logview import logs_command

            return logs_command(args)
        if args.command in OPERATOR_COMMANDS:
            from k2node.operator.command import operator_command

            settings = load_settings(args.env_file, os.environ, _overrides(args))
            configure_logging(settings.log_format, "error", sys.stderr)  # it says what matters
            return run_main(operator_command(args, settings))
        if args.command == "devnet":
            return run_main(_devnet(args))
        if args.command == "new":
            from k2node.authoring import new_project

            return new_project(args.name)
        if args.command == "k2":
            configure_logging(args.log_format)
            return run_main(_serve_k2(args))
        if args.command == "ipfs":
            settings = load_settings(args.env_file, os.environ, _overrides(args))
            configure_logging(settings.log_format, "warning", sys.stderr)
            return run_main(ipfs_command(args, settings))
        overrides = _overrides(args)
        settings = load_settings(args.env_file, os.environ, overrides)
        configure_logging(settings.log_format, settings.log_level)
        return run_main(_serve(settings))
    except (ConfigError, WalletError, StoreError, EventLoopError) as exc:
        print(f"k2node: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"k2node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        print("k2node: interrupted", file=sys.stderr)
        return 130
