"""`k2node run --reload`: a DEVELOPMENT task's sources watched, so that an edit takes effect
without a restart of the node (its stake, ledger and other tasks stay as they are).

Polling the modification times of a project's few source files twice a second costs
nothing worth a dependency, and works the same on every file system.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

POLL_S = 0.5
SOURCES = ("*.py", "*.js", "*.yml")
_SKIPPED = {"__pycache__", "node_modules", ".git", ".venv", "dist"}


def source_folder(entry: str, executables: Path) -> Path | None:
    """The folder whose sources make up a task's code, for a DEVELOPMENT task (code on this
    machine: `file.py:Class`, `module:Class`, `main.js`); None for code fetched by CID."""
    target = entry.rpartition(":")[0] if ":" in entry else entry
    path = Path(target)
    if path.suffix in (".py", ".js"):
        found = path.resolve().parent if path.exists() else None
    else:
        try:
            spec = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            spec = None
        found = Path(spec.origin).parent if spec and spec.origin else None
    if found is None or found.is_relative_to(executables.resolve()):
        return None
    return found


def _stamps(folder: Path) -> dict[Path, int]:
    found = {}
    for pattern in SOURCES:
        for path in folder.rglob(pattern):
            if _SKIPPED.isdisjoint(path.relative_to(folder).parts):
                try:
                    found[path] = path.stat().st_mtime_ns
                except OSError:  # removed while listed
                    continue
    return found


async def changed_sources(folder: Path, poll_s: float = POLL_S) -> AsyncIterator[Path]:
    """Each time a source under `folder` is written, added or removed: which one."""
    seen = await asyncio.to_thread(_stamps, folder)
    while True:
        await asyncio.sleep(poll_s)
        now = await asyncio.to_thread(_stamps, folder)
        changed = sorted(p for p in seen.keys() | now.keys() if seen.get(p) != now.get(p))
        seen = now
        if changed:
            yield changed[0]
