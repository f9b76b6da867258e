"""A node logging to a pipe does not load what only the command line draws or what only a
kubo backend needs: rich (via structlog), aioipfs (and the setuptools it imports)."""

from __future__ import annotations

import subprocess
import sys


def test_the_node_loads_neither_rich_nor_aioipfs() -> None:
    probe = (
        "import sys, k2node.cli, k2node.node.runtime, k2node.task.runner; "
        "print(sorted(m for m in ('rich', 'aioipfs', 'setuptools') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
