"""A task's output into task.log: lines cut, a rate with the excess counted, rotation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from k2node.node.tasklog import TaskLog


class Ticking:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stream(*pieces: bytes) -> asyncio.StreamReader:
    stream = asyncio.StreamReader()
    for piece in pieces:
        stream.feed_data(piece)
    stream.feed_eof()
    return stream


async def test_a_flood_is_cut_to_the_rate_and_counted(tmp_path: Path) -> None:
    clock = Ticking()
    log = TaskLog(tmp_path / "task.log", rate=50, clock=clock)
    flood = b"".join(b"line %d\n" % i for i in range(10_000))
    await log.pump(_stream(flood))
    lines = (tmp_path / "task.log").read_text().splitlines()
    assert lines[:50] == [f"line {i}" for i in range(50)]
    assert lines[50:] == ["[k2node: 9950 lines dropped, over 50 a second]"]


async def test_the_rate_is_per_second(tmp_path: Path) -> None:
    clock = Ticking()
    log = TaskLog(tmp_path / "task.log", rate=2, clock=clock)
    stream = asyncio.StreamReader()
    pump = asyncio.create_task(log.pump(stream))
    for _ in range(3):
        stream.feed_data(b"a\nb\nc\n")
        await asyncio.sleep(0.01)
        clock.now += 1.0
    stream.feed_eof()
    await pump
    text = (tmp_path / "task.log").read_text()
    assert text.count("a\nb\n") == 3 and text.count("1 lines dropped") == 3


async def test_an_endless_line_is_cut_and_the_next_kept(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "task.log", max_line=100, clock=Ticking())
    await log.pump(_stream(b"x" * 300_000, b"x" * 300_000 + b"\nafter\n", b"tail"))
    lines = (tmp_path / "task.log").read_bytes().split(b"\n")
    assert lines[0] == b"x" * 100 + b" [line cut]"
    assert lines[1:] == [b"after", b"tail", b""]


async def test_the_file_rotates_and_keeps_its_backups(tmp_path: Path) -> None:
    clock = Ticking()
    log = TaskLog(tmp_path / "task.log", max_bytes=1000, backups=2, rate=10_000, clock=clock)
    await log.pump(_stream(b"".join(b"entry %05d\n" % i for i in range(1000))))
    files = sorted(os.listdir(tmp_path))
    assert files == ["task.log", "task.log.1", "task.log.2"]
    assert all((tmp_path / f).stat().st_size <= 1000 for f in files)
    assert (tmp_path / "task.log").read_text().splitlines()[-1] == "entry 00999"
    newest_backup = (tmp_path / "task.log.1").read_text().splitlines()
    first_now = (tmp_path / "task.log").read_text().splitlines()[0]
    assert int(newest_backup[-1].split()[1]) + 1 == int(first_now.split()[1])
