"""The operator's command lines (what `k2node --help` lists; the work is in command.py and
logview.py, imported only when one runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

OPERATOR_COMMANDS = {
    "status": "this node's tasks, stake, rewards and wallets (from the node, or K2)",
    "tasks": "the tasks K2 offers, with their bounty and minimum stake",
    "stake": "add KOII to your stake on a task",
    "unstake": "take your stake back from a task (3 rounds after your last submission)",
    "claim": "move your rewards into your main wallet",
}


def add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, helps in OPERATOR_COMMANDS.items():
        verb = sub.add_parser(name, help=helps)
        verb.add_argument("--env-file", type=Path, default=Path(".env-local"))
        verb.add_argument("--data-dir", help="the node's data directory")
        verb.add_argument("--port", help="the running node's HTTP port (SERVER_PORT)")
        if name in ("status", "tasks"):
            verb.add_argument("--json", action="store_true", help="as JSON, for scripts")
        else:
            verb.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if name in ("stake", "unstake"):
            verb.add_argument("task", help="the task's id")
        if name == "stake":
            verb.add_argument("amount", help="KOII to add to your stake")
        if name == "claim":
            verb.add_argument("task", nargs="?", help="the task's id (default: all of them)")
            verb.add_argument("--all", action="store_true", help="every task this node runs")
    logs = sub.add_parser("logs", help="the node's JSON logs, readable and filtered")
    logs.add_argument("file", nargs="?", default="-", help="a log file, or - for stdin")
    logs.add_argument("-f", "--follow", action="store_true", help="keep showing new lines")
    logs.add_argument("--task", help="only this task (its id or first characters)")
    logs.add_argument("--round", type=int, help="only this round")
    logs.add_argument("--level", help="at least this level: debug, info, warning, error")
