"""Progress of a long operation at the command line: a bar on a terminal, nothing on a pipe
(a log or a script reading the output sees only the result)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # rich loads only where a bar is drawn: not in a node logging to a pipe
    from rich.progress import Progress

READ_SIZE = 256 * 1024


def progress_bar(label: str, counting: Literal["bytes", "steps"] = "bytes") -> Progress | None:
    """A bar on stderr when that is a terminal, None on a pipe: counting "bytes" (with the
    speed) or "steps" (n of N)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns: tuple[ProgressColumn, ...] = (
        (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        if counting == "bytes"
        else (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    )
    return Progress(f"[bold]{label}", *columns, console=Console(stderr=True), transient=True)


def file_chunks(path: Path, label: str) -> Iterator[bytes]:
    """The file's bytes in chunks, its progress shown on stderr when that is a terminal."""
    with path.open("rb") as source:
        chunks = iter(lambda: source.read(READ_SIZE), b"")
        shown = progress_bar(label)
        if shown is None:
            yield from chunks
            return
        with shown as progress:
            task = progress.add_task(label, total=path.stat().st_size)
            for chunk in chunks:
                progress.advance(task, len(chunk))
                yield chunk
