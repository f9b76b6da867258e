"""`k2node logs [FILE|-] [--follow] [--task ID] [--round N] [--level L]`: the node's JSON log
lines (a file, stdin, or `journalctl -o cat`) shown one readable line each, filtered."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
STYLES = {"warning": "yellow", "error": "bold red", "critical": "bold red", "debug": "dim"}
FOLLOW_POLL_S = 0.25
MAX_LINE = 64 * 1024  # a longer line is shown cut, not held whole
_FIRST = ("timestamp", "level", "event", "task_id", "round", "phase")


@dataclass(frozen=True)
class Wanted:
    task: str | None = None  # a task id, or its first characters
    round: int | None = None
    level: int = 0

    def accepts(self, entry: dict[str, Any] | None) -> bool:
        if entry is None:  # not one of ours: shown only when nothing is filtered
            return self.task is None and self.round is None and self.level == 0
        if self.task is not None and not str(entry.get("task_id", "")).startswith(self.task):
            return False
        if self.round is not None and entry.get("round") != self.round:
            return False
        return LEVELS.get(str(entry.get("level", "info")).lower(), 20) >= self.level


def parse(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "event" in entry else None


def render(entry: dict[str, Any]) -> Text:
    level = str(entry.get("level", "info")).lower()
    stamp = str(entry.get("timestamp", ""))[11:23]  # the time of an ISO timestamp
    text = Text(f"{stamp} ", style="dim")
    text.append(f"{level:<8}", style=STYLES.get(level, ""))
    text.append(f"{entry.get('event')!s:<24}", style="bold")
    task = entry.get("task_id")
    if task:
        text.append(f" task={str(task)[:8]}", style="cyan")
    for key in ("round", "phase"):
        if key in entry:
            text.append(f" {key}={entry[key]}", style="cyan")
    for key, value in entry.items():
        if key not in _FIRST:
            shown = value if isinstance(value, str) else json.dumps(value)
            text.append(f" {key}={shown}")
    return text


def _lines(source: TextIO, follow: bool, path: Path | None) -> Iterator[str]:
    while True:
        line = source.readline(MAX_LINE)
        if line:
            yield line.rstrip("\n")
            continue
        if not follow:
            return
        if path is not None and path.exists() and path.stat().st_size < source.tell():
            source.seek(0)  # truncated or rotated under us: from its start again
        time.sleep(FOLLOW_POLL_S)


def logs_command(args: argparse.Namespace) -> int:
    level = LEVELS.get(args.level.lower()) if args.level else 0
    if level is None:
        print(f"k2node logs: --level must be one of {', '.join(LEVELS)}", file=sys.stderr)
        return 2
    wanted = Wanted(args.task, args.round, level)
    console = Console(highlight=False, soft_wrap=True)
    path = None if args.file == "-" else Path(args.file)
    try:
        source = sys.stdin if path is None else path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"k2node logs: {exc}", file=sys.stderr)
        return 1
    try:
        for line in _lines(source, args.follow, path):
            entry = parse(line)
            if wanted.accepts(entry):
                console.print(render(entry) if entry is not None else Text(line))
    except KeyboardInterrupt:
        pass
    finally:
        if source is not sys.stdin:
            source.close()
    return 0
