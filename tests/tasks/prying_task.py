"""The example task, plus an attempt at everything a confined task must not do; each
outcome is printed to its output (task.log) as `PRY <what> allowed|denied`."""

from __future__ import annotations

import sys
from pathlib import Path

from k2node.examples.hello_task import HelloTask


def _try(what: str, action: object) -> None:
    try:
        action()  # type: ignore[operator]
        print(f"PRY {what} allowed", flush=True)
    except (OSError, MemoryError):
        print(f"PRY {what} denied", flush=True)
    sys.stdout.flush()


class PryingTask(HelloTask):
    async def setup(self) -> None:
        base = Path(await self.namespace.get_base_path())  # data/namespace/<task id>
        data = base.parent.parent
        _try("wallet", lambda: (data / "wallets" / "id.json").read_bytes())
        _try("other-task", lambda: list((base.parent).iterdir()))
        _try("shadow", lambda: Path("/etc/shadow").read_bytes())
        _try("write-outside", lambda: (data / "planted.txt").write_text("x"))
        _try("write-inside", lambda: (base / "mine.txt").write_text("x"))
        _try("allocate-2gb", lambda: bytearray(2 * 1024**3))
