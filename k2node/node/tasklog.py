"""A task process's output into its `task.log`, bounded: lines cut at MAX_LINE bytes, at
most RATE lines a second (the rest counted and noted once a second), the file rotated at
MAX_BYTES keeping BACKUPS older ones. A task that floods its output costs the node a few
buffers and a bounded amount of disk; the node reads the pipe as fast as it fills, so the
task is never blocked on its own logging either. Lines over the rate are counted a chunk at
a time, not read one by one, and those kept go down in one write a chunk, so a flood costs
the node's loop little more than its reads. A write the disk refuses (a full disk) loses
its lines, not the pump: one `task_log_write_failed` line, and once writes go through
again the file says how many were lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from k2node.logs import get_logger

log = get_logger("k2node.node")

MAX_LINE = 8 * 1024
RATE = 500  # lines a second
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
_READ = 64 * 1024
_CUT = b" [line cut]"


class TaskLog:
    def __init__(
        self,
        path: Path,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
        max_line: int = MAX_LINE,
        rate: int = RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._max_bytes, self._backups = max_bytes, backups
        self._max_line, self._rate = max_line, rate
        self._clock = clock
        self._file: BinaryIO | None = None
        self._size = 0  # of the file open now
        self._second = -1.0
        self._in_second = 0
        self.dropped = 0  # lines over the rate in the current second
        self.lost = 0  # lines the disk refused since the last that went down

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Copy `stream` into the log until it ends (the process exited)."""
        partial = b""
        cut = False  # the end of a line already written, cut, is still coming
        self._write(b"")  # the file is there from the start, as the task's own would be
        try:
            while chunk := await stream.read(_READ):
                if cut:
                    end = chunk.find(b"\n")
                    if end < 0:
                        continue
                    chunk, cut = chunk[end + 1 :], False
                partial = self._lines(partial + chunk)
                if len(partial) > self._max_line:  # an endless line: keep its start only
                    self._line(partial[: self._max_line] + _CUT)
                    partial, cut = b"", True
            if partial:
                self._line(partial)
        finally:
            self._note_dropped()
            self.close()

    def _lines(self, data: bytes) -> bytes:
        """Write the whole lines of `data` the rate allows, count the others; return the
        unfinished last line."""
        budget = self._budget()
        pieces = data.split(b"\n", budget) if budget > 0 else [data]
        rest = pieces.pop()  # an unfinished line, or with lines over the budget before it
        if pieces:
            self._in_second += len(pieces)
            self._write_lines([self._cut(line) + b"\n" for line in pieces])
        if b"\n" in rest:
            over, _, rest = rest.rpartition(b"\n")
            self.dropped += over.count(b"\n") + 1
        return rest

    def _cut(self, line: bytes) -> bytes:
        return line if len(line) <= self._max_line + len(_CUT) else line[: self._max_line] + _CUT

    def _budget(self) -> int:
        """The lines still allowed in this second (a new second starts afresh)."""
        now = self._clock()
        if now - self._second >= 1.0:
            self._note_dropped()
            self._second, self._in_second = now, 0
        return max(0, self._rate - self._in_second)

    def _line(self, line: bytes) -> None:
        if self._budget() == 0:
            self.dropped += 1
            return
        self._in_second += 1
        self._write(self._cut(line) + b"\n")

    def _write_lines(self, lines: list[bytes]) -> None:
        """Lines, each ending in its newline, in as few writes as rotation allows."""
        batch: list[bytes] = []
        size = 0
        for line in lines:
            if batch and self._size + size + len(line) > self._max_bytes:
                self._write(b"".join(batch), len(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._write(b"".join(batch), len(batch))

    def _note_dropped(self) -> None:
        if self.dropped:
            note = f"[k2node: {self.dropped} lines dropped, over {self._rate} a second]\n"
            self._write(note.encode())
            self.dropped = 0

    def _open(self) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab", buffering=0)  # a refused write keeps nothing
            self._size = self._file.seek(0, 2)

    def _write(self, data: bytes, lines: int = 1) -> None:
        """`data` (`lines` lines of it) into the file, rotated first if it would grow past
        its size; a write the disk refuses loses them, counted."""
        try:
            self._open()
            if self._size + len(data) > self._max_bytes and self._size > 0:
                self._rotate()
            assert self._file is not None
            if self.lost:  # the disk takes writes again
                note = f"[k2node: {self.lost} lines lost, the disk refused them]\n".encode()
                self._size += self._file.write(note) or 0
                log.info("task_log_writable", path=str(self.path), lost=self.lost)
                self.lost = 0
            self._size += self._file.write(data) or 0
        except OSError as exc:
            if data and not self.lost:  # one line for the fault, not one a line
                log.warning("task_log_write_failed", path=str(self.path), error=str(exc))
            self.lost += lines if data else 0
            self.close()

    def _rotate(self) -> None:
        self.close()
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
        for index in range(self._backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                newer.replace(older)
        self._file = self.path.open("ab", buffering=0)
        self._size = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
