"""sd_notify against a Unix datagram socket the test owns, as systemd would: READY once the
node serves, WATCHDOG pings at half WATCHDOG_USEC, STOPPING on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k2node.node.notify import Notifier
from k2node.node.provision import free_port


def _receive(sock: socket.socket, until: float) -> list[tuple[float, str]]:
    got = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            got.append((time.monotonic(), sock.recv(4096).decode()))
        except TimeoutError:
            break
    return got


def test_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="k2n-"))  # a short path: Unix socket names are short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(folder / "notify"))
        env = os.environ | {
            "NOTIFY_SOCKET": str(folder / "notify"),
            "WATCHDOG_USEC": "400000",
            "K2NODE_SLOT_MS": "100",
            "K2NODE_LOG_FORMAT": "json",
        }
        command = [sys.executable, "-m", "k2node", "run", "--data-dir", str(tmp_path / "data")]
        node = subprocess.Popen(
            [*command, "--port", str(free_port()), "--env-file", str(tmp_path / "none")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            sock.settimeout(30)
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1\nSTATUS=serving on port"), first
            pings = [t for t, m in _receive(sock, time.monotonic() + 2.0) if m == "WATCHDOG=1"]
            assert 6 <= len(pings) <= 14, pings  # every 0.2 s
            node.send_signal(signal.SIGTERM)
            after = [m for _, m in _receive(sock, time.monotonic() + 5)]
            assert "STOPPING=1" in after, after
            assert node.wait(timeout=30) == 0
        finally:
            if node.poll() is None:
                node.kill()
            node.communicate(timeout=10)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_abstract_sockets_and_someone_elses_watchdog() -> None:
    name = f"k2node-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000"})
        notifier.send("READY=1")
        sock.settimeout(5)
        assert sock.recv(100) == b"READY=1"
        assert notifier.watchdog_s == 1.0
        notifier.close()
    finally:
        sock.close()
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # the watchdog is another process's
    silent = Notifier({})
    assert not silent.enabled
    silent.send("READY=1")  # nothing, no error
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/socket"})
    gone.send("READY=1")  # says so once in the log, and stops trying
    assert not gone.enabled
