"""Long operations show a progress bar on a terminal and nothing on a pipe."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node import executables


def _add(data_dir: Path, file: Path) -> list[str]:
    return [sys.executable, "-m", "k2node", "ipfs", "--data-dir", str(data_dir), "add", str(file)]


def test_a_pipe_gets_the_result_alone(tmp_path: Path) -> None:
    file = tmp_path / "big.bin"
    file.write_bytes(os.urandom(3 * 1024 * 1024))
    run = subprocess.run(_add(tmp_path / "d", file), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith("added Qm") and run.stdout.endswith(" big.bin\n")


@pytest.mark.skipif(shutil.which("script") is None, reason="no `script` to give it a terminal")
def test_a_terminal_gets_a_bar_and_the_same_result(tmp_path: Path) -> None:
    file = tmp_path / "big.bin"
    file.write_bytes(os.urandom(3 * 1024 * 1024))
    piped = subprocess.run(_add(tmp_path / "a", file), capture_output=True, text=True, timeout=60)
    command = " ".join(_add(tmp_path / "b", file))
    on_terminal = subprocess.run(
        ["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60
    )
    assert on_terminal.returncode == 0, on_terminal.stdout[-2000:]
    shown = on_terminal.stdout
    assert "adding big.bin" in shown and "━" in shown and "MB" in shown
    assert piped.stdout.strip() in shown  # the same CID either way


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_fetching_an_executable_shows_a_bar_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedIpfs.open(tmp_path / "ipfs")
    try:
        data = os.urandom(2 * 1024 * 1024)
        cid = await store.publish(data)
        assert await executables._fetch_once(store, cid) == data  # a pipe: no bar
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert await executables._fetch_once(store, cid) == data
        assert f"fetching {cid[:16]}" in terminal.getvalue()
    finally:
        store.close()
