"""A task process's output into its `task.log`, bounded: lines cut at MAX_LINE bytes, at
most RATE lines a second (the rest counted and noted once a second), the file rotated at
MAX_BYTES keeping BACKUPS older ones. A task that floods its output costs the node a few
buffers and a bounded amount of disk; the node reads the pipe as fast as it fills, so the
task is never blocked on its own logging either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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
        self._second = -1.0
        self._in_second = 0
        self.dropped = 0  # lines over the rate in the current second

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Copy `stream` into the log until it ends (the process exited)."""
        partial = b""
        cut = False
        self._open()  # the file is there from the start, as the task's own would be
        try:
            while chunk := await stream.read(_READ):
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    if not cut:  # (else it is the end of a line already written, cut)
                        self._line(line)
                    cut = False
                if len(partial) > self._max_line:  # an endless line: keep its start only
                    if not cut:
                        self._line(partial[: self._max_line] + _CUT)
                    partial, cut = b"", True
            if partial and not cut:
                self._line(partial)
        finally:
            self._note_dropped()
            self.close()

    def _line(self, line: bytes) -> None:
        now = self._clock()
        if now - self._second >= 1.0:
            self._note_dropped()
            self._second, self._in_second = now, 0
        self._in_second += 1
        if self._in_second > self._rate:
            self.dropped += 1
            return
        if len(line) > self._max_line + len(_CUT):
            line = line[: self._max_line] + _CUT
        self._write(line + b"\n")

    def _note_dropped(self) -> None:
        if self.dropped:
            note = f"[k2node: {self.dropped} lines dropped, over {self._rate} a second]\n"
            self._write(note.encode())
            self.dropped = 0

    def _open(self) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")

    def _write(self, data: bytes) -> None:
        self._open()
        assert self._file is not None
        if self._file.tell() + len(data) > self._max_bytes and self._file.tell() > 0:
            self._rotate()
            assert self._file is not None
        self._file.write(data)
        self._file.flush()

    def _rotate(self) -> None:
        self.close()
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
        for index in range(self._backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                newer.replace(older)
        self._file = self.path.open("ab")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
