"""`k2node logs`: JSON log lines shown readably, filtered by task, round and level, from
stdin or a file, followed as it grows; anything else passes through or is dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k2node.operator.logview import Wanted, parse, render

LINES = [
    {"event": "phase_sent", "level": "info", "task_id": "AAAA1111", "round": 3, "phase": "x"},
    {"event": "phase_done", "level": "debug", "task_id": "AAAA1111", "round": 3},
    {"event": "payout_settled", "level": "warning", "task_id": "BBBB2222", "round": 1},
    {"event": "phase_failed", "level": "error", "task_id": "AAAA1111", "round": 4},
]


def _logs(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k2node", "logs", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _feed(extra: list[str] | None = None) -> str:
    return "\n".join([json.dumps(e) for e in LINES] + (extra or [])) + "\n"


@pytest.mark.parametrize(
    ("args", "events"),
    [
        ([], ["phase_sent", "phase_done", "payout_settled", "phase_failed"]),
        (["--task", "AAAA"], ["phase_sent", "phase_done", "phase_failed"]),
        (["--round", "3"], ["phase_sent", "phase_done"]),
        (["--level", "warning"], ["payout_settled", "phase_failed"]),
        (["--task", "AAAA", "--level", "info", "--round", "3"], ["phase_sent"]),
    ],
)
def test_filters(args: list[str], events: list[str]) -> None:
    run = _logs(*args, stdin=_feed())
    assert run.returncode == 0, run.stderr
    shown = [line.split()[1] for line in run.stdout.splitlines()]
    assert shown == events


def test_other_lines_pass_through_unfiltered_and_drop_when_filtered() -> None:
    hostile = ["not json", "[1, 2]", '{"no": "event"}', "\x1b[31mred", "x" * 100_000]
    run = _logs(stdin=_feed(hostile))
    assert run.returncode == 0 and "not json" in run.stdout and "[1, 2]" in run.stdout
    run = _logs("--level", "info", stdin=_feed(hostile))
    assert "not json" not in run.stdout and len(run.stdout.splitlines()) == 3


def test_a_bad_level_or_file_is_one_line() -> None:
    run = _logs("--level", "loud", stdin="")
    assert run.returncode == 2 and "--level must be one of" in run.stderr
    run = _logs("/no/such/file.log", stdin="")
    assert run.returncode == 1 and "No such file" in run.stderr


def test_follow_shows_lines_as_they_are_written(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    log.write_text(json.dumps(LINES[0]) + "\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "k2node", "logs", str(log), "--follow", "--level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # it has read what is there and waits for more
        with log.open("a") as out:
            out.write(json.dumps(LINES[2]) + "\n")
        assert follower.stdout is not None
        line = follower.stdout.readline()
        assert "payout_settled" in line and "task=BBBB2222" in line
    finally:
        follower.terminate()
        follower.communicate(timeout=10)


def test_render_and_wanted() -> None:
    entry = parse(json.dumps({**LINES[0], "timestamp": "2026-11-25T13:00:01.123456Z"}))
    assert entry is not None
    text = render(entry).plain
    assert text.startswith("13:00:01.123 info") and "task=AAAA1111 round=3 phase=x" in text
    assert parse("[]") is None and parse("{}") is None and parse("nope") is None
    assert Wanted().accepts(None) and not Wanted(level=20).accepts(None)
