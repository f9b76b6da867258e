"""`k2node simulate`, from its command line to its report."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from k2node.config import ConfigError
from k2node.progress import progress_bar
from k2node.task.runner import TaskStartError
from k2node.testing.adversaries import Role
from k2node.testing.report import print_summary, round_line
from k2node.testing.simulation import RoundReport, simulate

if TYPE_CHECKING:
    from rich.progress import Progress

# flag (as argparse names it) -> the role it mixes in
_ROLE_OF_FLAG = {
    "liars": Role.LIAR,
    "silent": Role.SILENT,
    "late": Role.LATE,
    "greedy_distributor": Role.GREEDY,
    "false_accusers": Role.ACCUSER,
    "colluders": Role.COLLUDER,
}


async def simulate_command(args: argparse.Namespace) -> int:
    mix = {role: float(getattr(args, flag)) for flag, role in _ROLE_OF_FLAG.items()}
    bad = [f"--{f.replace('_', '-')}" for f, r in _ROLE_OF_FLAG.items() if not 0 <= mix[r] <= 1]
    if bad:
        print(f"k2node simulate: {', '.join(bad)} must be a share from 0 to 1", file=sys.stderr)
        return 2
    console = Console(stderr=args.json)
    folder = Path(tempfile.mkdtemp(prefix="k2node-simulate-"))
    # with --json the rounds go by unprinted: on a terminal a bar counts them on stderr
    bar = progress_bar("simulating", counting="steps") if args.json else None
    try:
        with bar if bar is not None else contextlib.nullcontext():
            on_round = _on_round(args, bar, console)
            report = await simulate(
                args.task, folder, args.nodes, args.rounds, mix, args.seed, args.config, on_round
            )
    except (ValueError, TaskStartError, ConfigError) as exc:
        print(f"k2node simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print_summary(report, console)
    return 1 if args.check and not report.sound else 0


def _on_round(
    args: argparse.Namespace, bar: Progress | None, console: Console
) -> Callable[[RoundReport], None] | None:
    """What each settled round does: moves the bar on, is printed, or (--json on a pipe)
    nothing."""
    if bar is not None:
        counted = bar.add_task("rounds", total=args.rounds)
        return lambda _report: bar.advance(counted)
    if args.json:
        return None
    return lambda report: console.print(round_line(report), soft_wrap=True)
