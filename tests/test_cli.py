"""The command line in real subprocesses: start-up errors, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from k2node.config import Settings
from k2node.node.process import STOP_TIMEOUT_S
from k2node.node.runtime import TASKS_STOP_S, Node, ShutdownPlan
from tests.conftest import REPO, task_file


def _run(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`k2node run` on `data_dir` with no .env-local and only PATH from this environment."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k2node",
            "run",
            "--env-file",
            str(data_dir / "none"),
            "--data-dir",
            str(data_dir),
            *args,
        ],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        env={"SERVER_PORT": "not-a-port"},
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SERVER_PORT" in lines[0], err


def _events_until(proc: subprocess.Popen[str], event: str, within: float = 60) -> list[Any]:
    """The node's JSON events up to and including the first `event`."""
    assert proc.stdout is not None
    seen: list[Any] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"the node ended before {event}: {seen[-5:]}"
        try:
            seen.append(json.loads(line))
        except ValueError:
            continue
        if seen[-1].get("event") == event:
            return seen
    raise AssertionError(f"no {event} within {within} s")


def test_a_node_started_before_its_k2_waits_for_it(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    node = _run(tmp_path / "node", "--port", "0", env={"K2_NODE_URL": url})
    k2 = None
    try:
        waiting = _events_until(node, "k2_unreachable")[-1]
        assert waiting["url"] == url and waiting["retry_in_s"] > 0, waiting
        assert node.poll() is None
        k2 = subprocess.Popen(
            [
                *(sys.executable, "-m", "k2node", "k2", "--port", str(port), "--ws-port", "0"),
                *("--data-dir", str(tmp_path / "k2"), "--log-format", "json"),
            ],
            env={"PATH": os.environ["PATH"]},
            stdout=subprocess.DEVNULL,
        )
        events = _events_until(node, "phase_done")
        assert "node_started" in [e.get("event") for e in events]
    finally:
        for proc in (node, k2):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
    assert node.returncode == 0


def test_a_stop_while_waiting_for_k2_ends_the_node_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    node = _run(tmp_path, "--port", "0", env={"K2_NODE_URL": url})
    _events_until(node, "k2_unreachable")
    node.send_signal(signal.SIGTERM)
    started = time.monotonic()
    out, _ = node.communicate(timeout=30)
    assert node.returncode == 0
    assert time.monotonic() - started < 5
    assert "node_start_abandoned" in out


def test_a_bad_wallet_stops_start_up_with_one_line(tmp_path: Path) -> None:
    wallet = tmp_path / "id.json"
    wallet.write_text("[1, 2, 3]")
    proc = _run(
        tmp_path,
        env={"WALLET_LOCATION": str(wallet)},
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and str(wallet) in err and len(err.strip().splitlines()) == 1


def test_sigterm_stops_node_and_task_cleanly(tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        "--port",
        "0",
        env={"K2NODE_SLOT_MS": "50"},
    )
    assert proc.stdout is not None
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        events.append(json.loads(line))  # JSON logs when not on a terminal
        if events[-1]["event"] == "phase_done":
            break
    names = [e["event"] for e in events]
    assert "node_started" in names and "phase_done" in names, names
    task_pid = next(e["pid"] for e in events if e["event"] == "task_process_started")
    assert all(
        {"task_id", "round", "phase"} <= set(e) for e in events if e["event"] == "phase_done"
    )
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert '"node_stopped"' in out
    assert (
        not Path(f"/proc/{task_pid}").exists()
        or "zombie" in Path(f"/proc/{task_pid}/status").read_text().lower()
    )
    # a second start continues with the same wallet and task
    again = _run(tmp_path, "--port", "0")
    assert again.stdout is not None
    first = [json.loads(again.stdout.readline()) for _ in range(3)]
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=30)
    assert not any(e["event"] in ("wallet_created", "task_deployed") for e in first)


async def test_every_shutdown_step_is_logged_and_their_bounds_fit_systemd(
    tmp_path: Path,
) -> None:
    unit = (REPO / "deploy" / "k2node.service").read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    assert match is not None
    settings = Settings(
        data_dir=tmp_path, wallet_location=tmp_path / "id.json", server_port=0, slot_ms=50
    )
    with capture_logs() as logs:
        async with Node.manage(settings) as node:
            steps = list(node.shutdown.steps)
    # the steps are the ones the node registered as it started, each logged as it ran
    ran = [e["step"] for e in logs if e["event"] == "shutdown_step" and e["ok"]]
    assert ran == [s.name for s in reversed(steps)]
    assert {"tasks", "http_server", "local_k2", "node_db"} <= set(ran)
    assert STOP_TIMEOUT_S < TASKS_STOP_S  # a task's grace period fits its step
    assert sum(s.bound_s for s in steps) < int(match.group(1))


def test_a_second_ctrl_c_ends_a_slow_shutdown(tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        "--port",
        "0",
        env={"K2NODE_TASK_ENTRY": task_file("misbehaving.py") + ":DeafTask"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if json.loads(proc.stdout.readline())["event"] == "node_started":
            break
    proc.send_signal(signal.SIGINT)
    while json.loads(proc.stdout.readline())["event"] != "node_stopping":
        pass
    # the task ignores SIGTERM: the node now waits out its grace period before a kill
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - started < STOP_TIMEOUT_S


def _ipfs(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "k2node",
            "ipfs",
            "--env-file",
            str(data_dir / "none"),
            "--data-dir",
            str(data_dir),
            *args,
        ],
        cwd=REPO,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=60,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ipfs_add_and_cat_without_a_node(tmp_path: Path) -> None:
    hello = tmp_path / "hello.txt"
    hello.write_bytes(b"hello\n")
    added = _ipfs(tmp_path, "add", str(hello))
    assert added.stdout == b"added QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN hello.txt\n"
    added = _ipfs(tmp_path, "add", "--cid-version", "1", str(hello))
    assert b"bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am" in added.stdout
    assert _ipfs(tmp_path, "cat", "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN").stdout == (
        b"hello\n"
    )
    missing = _ipfs(tmp_path, "cat", "QmfDmsHTywy6L9Ne5RXsj5YumDedfBLMvCvmaxjBoe6w4d")
    assert missing.returncode == 1
    assert missing.stderr.count(b"\n") == 1 and b"QmfDms" in missing.stderr
    bad = _ipfs(tmp_path, "cat", "not-a-cid")
    assert bad.returncode == 1 and b"not a CID" in bad.stderr


def test_ipfs_add_and_cat_through_a_running_node(tmp_path: Path) -> None:
    port = str(_free_port())
    node = _run(tmp_path, "--port", port)
    assert node.stdout is not None
    try:
        while json.loads(node.stdout.readline())["event"] != "node_started":
            pass
        data = tmp_path / "data.bin"
        data.write_bytes(bytes(range(256)) * 1024 + b"x")
        added = _ipfs(tmp_path, "--port", port, "add", str(data))
        assert added.returncode == 0, added.stderr
        assert added.stdout.split()[1] == b"QmWGeiXYCGAjqZuSZgpb3Yuiuudi6qDv4YnRPW1rWkGwJ4"
        cat = _ipfs(tmp_path, "--port", port, "cat", added.stdout.split()[1].decode())
        assert cat.stdout == data.read_bytes()
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=30)


async def test_a_shutdown_step_past_its_bound_is_logged_and_the_rest_still_run() -> None:
    plan = ShutdownPlan()
    ran: list[str] = []

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def quick() -> None:
        ran.append("quick")

    started = time.monotonic()
    with capture_logs() as logs:
        async with AsyncExitStack() as stack:
            plan.add(stack, "quick", 1.0, quick)
            plan.add(stack, "hangs", 0.2, hangs)
    assert time.monotonic() - started < 5
    steps = [(e["step"], e["ok"]) for e in logs if e["event"] == "shutdown_step"]
    assert steps == [("hangs", False), ("quick", True)] and ran == ["quick"]


_K2NODE = (sys.executable, "-m", "k2node")


def _example_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "k2node" / "examples" / "hello_task.py", project / "task.py")
    shutil.copy(REPO / "k2node" / "examples" / "config-task.yml", project / "config-task.yml")
    return project


def _task_verb(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`k2node task <args>` on the node data directory `data`, with no .env-local."""
    return subprocess.run(
        [*_K2NODE, "task", *args, "--env-file", str(data / "none"), "--data-dir", str(data)],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "K2NODE_SLOT_MS": "50"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_task_deploy_then_a_node_runs_the_task_by_its_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = _task_verb(data, "deploy", str(_example_project(tmp_path)))
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    task_id, cid = words[2].rstrip(":"), words[-1]
    proc = _run(
        data,
        "--port",
        "0",
        env={"K2NODE_SLOT_MS": "50", "TASKS": task_id, "K2NODE_TASK_ENTRY": "no.such:Entry"},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "phase_done" not in seen:
        seen.append(json.loads(proc.stdout.readline())["event"])
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert "executable_fetched" in seen and "phase_done" in seen
    assert (data / "executables" / f"{cid}.zip").is_file()


def test_task_update_makes_a_new_version_and_nodes_are_told_to_run_it(tmp_path: Path) -> None:
    data, project = tmp_path / "data", _example_project(tmp_path)
    deployed = _task_verb(data, "deploy", str(project))
    assert deployed.returncode == 0, deployed.stderr
    old_id = deployed.stdout.split()[2].rstrip(":")
    (project / "task.py").write_text((project / "task.py").read_text() + "\n# version two\n")
    updated = _task_verb(data, "update", old_id, str(project))
    assert updated.returncode == 0, updated.stderr
    words = updated.stdout.split()
    assert words[:3] == ["updated", "task", old_id]
    new_id, new_cid = words[4].rstrip(":"), words[-1]
    assert new_id != old_id and new_cid != deployed.stdout.split()[-1]  # new code, new CID
    again = _task_verb(data, "update", old_id, str(project))
    assert again.returncode == 1 and f"already updated to {new_id}" in again.stderr
    proc = _run(data, "--port", "0", env={"K2NODE_SLOT_MS": "50", "TASKS": old_id})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"task {old_id} was updated to a new version, {new_id}" in err


def test_the_installed_package_runs_the_example_from_any_folder(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves the repository as it was
    shutil.copytree(
        REPO / "k2node", source / "k2node", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("k2node-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
        check=True,
        cwd=tmp_path,
    )
    elsewhere = tmp_path / "anywhere"
    elsewhere.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "k2node", "run", "--env-file", "none", "--port", "0"],
        cwd=elsewhere,  # no config/ here: the example's config ships in the package
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(tmp_path / "site"),
            "K2NODE_SLOT_MS": "50",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(e["event"] == "phase_done" for e in seen):
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert any(e["event"] == "phase_done" for e in seen), err
    assert (elsewhere / "data" / "node-db").is_dir()  # it ran here, on its own data
