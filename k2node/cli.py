"""`k2node`: a thin entry point. Builds settings and logging, runs one async main."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from k2node import __version__
from k2node.config import ConfigError, Settings, load_settings
from k2node.crypto import WalletError, load_or_create_wallet
from k2node.logs import configure_logging
from k2node.store import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2node", description="Koii K2 task node")
    parser.add_argument("--version", action="version", version=f"k2node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the node (embedded local K2 by default)")
    run.add_argument("--env-file", type=Path, default=Path(".env-local"))
    run.add_argument("--data-dir", help="where wallets, databases and task folders live")
    run.add_argument("--port", help="HTTP port (SERVER_PORT)")
    wallet = sub.add_parser("wallet", help="show (creating if missing) a wallet's public key")
    wallet.add_argument("path", type=Path)
    return parser


async def _serve(settings: Settings) -> int:
    from k2node.node.runtime import run_node  # the node's imports only when it runs

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await run_node(settings, stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "wallet":
            pair, created = load_or_create_wallet(args.path)
            print(pair.pubkey + (" (created)" if created else ""))
            return 0
        overrides = {}
        if args.data_dir:
            overrides["K2NODE_DATA_DIR"] = args.data_dir
        if args.port:
            overrides["SERVER_PORT"] = args.port
        settings = load_settings(args.env_file, os.environ, overrides)
        configure_logging(settings.log_format, settings.log_level)
        return asyncio.run(_serve(settings))
    except (ConfigError, WalletError, StoreError) as exc:
        print(f"k2node: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"k2node: {exc}", file=sys.stderr)
        return 2
