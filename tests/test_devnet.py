"""`k2node devnet`: a K2 service and three nodes in real processes, paid, stopped by SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k2node.cli import main


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_three_nodes_are_paid_and_sigint_stops_every_process(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "k2node", "devnet", "--nodes", "3", "--liars", "1"]
    devnet = subprocess.Popen(
        [*command, "--slot-ms", "100", "--data-dir", str(tmp_path / "devnet")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert devnet.stdout is not None
    pids: dict[str, int] = {}
    paid: dict[str, int] = {}  # member -> its settled amount in the first round it took part in
    lines: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while len(paid) < 3 and time.monotonic() < deadline:
            line = devnet.stdout.readline()
            if not line:
                break
            lines.append(line)
            name, _, rest = (part.strip() for part in line.partition("|"))
            if started := re.match(r"started (\S+) pid=(\d+)", rest):
                pids[started[1]] = int(started[2])
            elif '"payout_settled"' in rest and name not in paid:
                settled = json.loads(rest)
                if settled["submitted"]:  # (a node started after a round's window has none)
                    paid[name] = settled["amount"]
    finally:
        devnet.send_signal(signal.SIGINT)
        rest_of_it, _ = devnet.communicate(timeout=60)
    lines += rest_of_it.splitlines(keepends=True)
    log = "".join(lines)
    assert set(paid) == {"node1", "node2", "liar3"}, log[-4000:]
    assert paid["node1"] > 0 and paid["node2"] > 0  # the honest nodes rewarded
    assert paid["liar3"] < 0, log[-4000:]  # the lying one slashed
    assert devnet.returncode == 0, log[-3000:]
    assert "devnet | all stopped" in log
    assert set(pids) == {"k2", "node1", "node2", "liar3"}
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    for name in ("node1", "node2", "liar3"):
        assert f"{name}: http://127.0.0.1:" in log  # the task's endpoints, listed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes must be 1-64"),
        (["--nodes", "2", "--liars", "3"], "--liars must be 0-2"),
        (["nowhere.py:Task"], "nowhere.py does not exist"),
        (["NoColon"], "must be path/to/task.py:Class"),
    ],
)
def test_bad_arguments_start_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["devnet", *args, "--data-dir", str(tmp_path / "devnet")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "devnet").exists()
