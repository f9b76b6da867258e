"""Per-task limits, tried for real: a task that pries, forks without end and spins a phase on
the CPU is stopped at each limit, beside a healthy task that keeps being paid; the process
count holds without a cgroup too (RLIMIT_NPROC, for a user that is not root), and a node
that starts clears the groups of one that is gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from k2node.artifact import build
from k2node.config import ConfigError, load_settings
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node import nproc
from k2node.node.confine import Rules
from k2node.node.processlimit import CGROUP_V1, CGROUP_V2, NONE, PREFIX, process_limit
from k2node.node.processlimit import start_time as process_start
from k2node.node.provision import deploy_task
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import REPO, create_task, node_settings, task_file, wait_for

PROCESSES = 32  # per task, in these tests: threads count too


def _example_project(where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copy(REPO / "k2node" / "examples" / "hello_task.py", where / "task.py")
    shutil.copy(REPO / "k2node" / "examples" / "config-task.yml", where / "config-task.yml")
    return where


async def _healthy_task(k2: LocalK2, tmp_path: Path, data_dir: Path) -> str:
    """The example, built and put in the node's IPFS store, run by its CID."""
    project = _example_project(tmp_path / "project")
    build(project, tmp_path / "task.zip")
    store = EmbeddedIpfs.open(data_dir / "ipfs")
    try:
        cid = await store.publish((tmp_path / "task.zip").read_bytes())
    finally:
        store.close()
    return await deploy_task(k2, Keypair.generate(), project / "config-task.yml", cid)


def _mechanism() -> str:
    found = process_limit(PROCESSES)
    found.close()
    return found.mechanism


def _existing(paths: list[str]) -> list[str]:
    return [path for path in paths if Path(path).exists()]


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_a_task_over_its_limits_fails_there_and_its_neighbour_is_paid(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    mechanism = _mechanism()
    if mechanism == NONE:
        pytest.skip("no process limit here: running as root with no writable pids cgroup")
    data = tmp_path / "n"
    healthy = await _healthy_task(fast_chain, tmp_path, data)
    prying = await create_task(fast_chain, Keypair.generate(), round_time=20)
    entry = task_file("prying_task.py") + ":OverreachingTask"
    settings = node_settings(
        data,
        prying,
        entry,
        task_sandbox="required",
        task_processes=PROCESSES,
        task_phase_cpu_s=1,
    )
    settings = replace(
        settings, tasks=(prying, healthy), task_stakes=(2 * ROE_PER_KOII, 2 * ROE_PER_KOII)
    )
    log = data / "namespace" / prying / "task.log"

    async def state(task_id: str) -> dict[str, Any]:
        options = {"is_submission_required": True, "is_available_balances_required": True}
        return await fast_chain.get_task_state(task_id, options)

    def submitted(found: dict[str, Any], key: str) -> list[int]:
        return sorted(int(r) for r, entries in found["submissions"].items() if key in entries)

    with capture_logs() as logs:
        async with Node.manage(settings, fast_chain) as node:
            key = node.staking.pubkey

            def overrun() -> dict[str, Any] | None:
                found = [e for e in logs if e["event"] == "task_phase_cpu_exceeded"]
                return found[0] if found else None

            await wait_for(lambda: overrun() is not None, within=40)
            stopped = overrun()
            assert stopped is not None
            then = await state(healthy)
            paid_then, rounds_then = then["available_balances"].get(key, 0), submitted(then, key)

            async def both_go_on() -> bool:
                after = [r for r in submitted(await state(prying), key) if r > stopped["round"]]
                neighbour = await state(healthy)
                paid = neighbour["available_balances"].get(key, 0)
                more = len(submitted(neighbour, key)) - len(rounds_then)
                # it works again; its neighbour runs rounds and is paid
                return bool(after) and more >= 2 and paid > paid_then

            await wait_for(both_go_on, within=40)
        rounds = submitted(await state(healthy), key)
    outcomes = dict(
        line.split()[1:3] for line in log.read_text().splitlines() if line.startswith("PRY ")
    )
    assert outcomes == {
        "wallet": "denied",
        "other-task": "denied",
        "shadow": "denied",
        "write-outside": "denied",
        "write-inside": "allowed",
        "allocate-2gb": "denied",  # over K2NODE_TASK_MEMORY_MB
        "fork-bomb": "denied",  # over K2NODE_TASK_PROCESSES
        "cpu-spin": "started",  # and never done: stopped over K2NODE_TASK_PHASE_CPU_S
    }
    assert not (data / "planted.txt").exists()
    assert "PRY allocate-2gb denied MemoryError" in log.read_text()
    bombs = [line.split() for line in log.read_text().splitlines() if "PRY fork-bomb" in line]
    assert all(int(forks) < PROCESSES and why == "EAGAIN" for *_, forks, why in bombs)

    # the log says which limit stopped what, and only the task that passed it
    assert stopped["task_id"] == prying and stopped["phase"] == "executeTask"
    assert stopped["setting"] == "K2NODE_TASK_PHASE_CPU_S" and stopped["limit_s"] == 1
    assert stopped["cpu_s"] > 1
    restarts = [(e["task_id"], e["reason"]) for e in logs if e["event"] == "task_restart_requested"]
    assert {task for task, _ in restarts} == {prying}, restarts
    assert [why for _, why in restarts if "CPU" in why] == [
        f"executeTask of round {stopped['round']} over its CPU time"
    ]
    assert [e["task_id"] for e in logs if e["event"] == "task_phase_cpu_exceeded"] == [prying]
    if mechanism in (CGROUP_V1, CGROUP_V2):
        refused = [e for e in logs if e["event"] == "task_processes_refused"]
        assert refused and {e["task_id"] for e in refused} == {prying}
        assert all(e["limit"] == PROCESSES for e in refused)
    # the healthy task missed no round, before the overrun or after it
    assert rounds == list(range(rounds[0], rounds[-1] + 1))

    # nothing is left behind: no process of the task, no cgroup
    assert _processes_naming(prying) == []
    groups = [e["cgroup"] for e in logs if e["event"] == "task_process_limit" and "cgroup" in e]
    assert _existing(groups) == []


def _forking_code(processes: int, as_user: int | None) -> str:
    """The launcher's RLIMIT_NPROC cap (nproc.py, only the standard library) then forks
    until refused, in a fresh interpreter: as `as_user` when given (imports done first)."""
    drop = f"os.setgroups([]); os.setgid({as_user}); os.setuid({as_user})" if as_user else ""
    driver = f"""
import errno, json, signal
{drop}
limit = limit_processes({processes})
ready, release = os.pipe()
children, error = [], None
try:
    for _ in range({processes} * 4):
        pid = os.fork()
        if pid == 0:
            os.close(release)
            signal.alarm(10)
            os.read(ready, 1)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    error = errno.errorcode[exc.errno]
os.close(release)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({{"forks": len(children), "error": error, "limit": limit}}))
"""
    return Path(nproc.__file__).read_text() + driver


def _run_forking(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


NOBODY = 65534


def test_without_a_cgroup_rlimit_nproc_holds_a_user_s_task_to_its_processes() -> None:
    as_user = NOBODY if os.getuid() == 0 else None  # root is not held to RLIMIT_NPROC
    result = _run_forking([sys.executable, "-c", _forking_code(PROCESSES, as_user)])
    assert result["error"] == "EAGAIN"
    assert PROCESSES // 2 <= result["forks"] <= PROCESSES


@pytest.mark.skipif(os.getuid() != 0, reason="a PID namespace of its own needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux) here")
def test_rlimit_nproc_counts_the_user_s_processes_that_proc_does_not_show() -> None:
    """Processes of the same uid in another PID namespace (another container) count for the
    kernel but not in /proc: the launcher finds them by forking under trial limits."""
    hidden = 20
    sleepers = [subprocess.Popen(["sleep", "30"], user=NOBODY) for _ in range(hidden)]
    try:
        code = _forking_code(PROCESSES, NOBODY)
        command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code]
        result = _run_forking(command)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert result["error"] == "EAGAIN"
    # counted from /proc alone, the hidden sleepers would have left PROCESSES - hidden forks
    assert PROCESSES - hidden < PROCESSES // 2 <= result["forks"] <= PROCESSES


def test_a_starting_node_clears_the_groups_of_a_node_that_is_gone(tmp_path: Path) -> None:
    live = process_limit(PROCESSES)
    try:
        if live.mechanism not in (CGROUP_V1, CGROUP_V2) or live.base is None:
            pytest.skip(f"no writable pids cgroup here (process limit: {live.mechanism})")
        # a node that has died (kill -9), leaving a task's group with a stray process in it
        gone = subprocess.Popen(["sleep", "30"])
        stamp = process_start(gone.pid)
        gone.kill()
        gone.wait()
        stale = live.base.parent / f"{PREFIX}{gone.pid}.{stamp}.0"
        (stale / "task").mkdir(parents=True)
        stray = subprocess.Popen(["sleep", "30"])
        try:
            (stale / "task" / "cgroup.procs").write_text(str(stray.pid))
            (live.base / "task").mkdir()  # a node alive now: its groups stay
            with capture_logs() as logs:
                again = process_limit(PROCESSES)
            again.close()
            assert stray.wait(timeout=10) == -signal.SIGKILL
        finally:
            if stray.poll() is None:
                stray.kill()
                stray.wait()
        assert not stale.exists()
        assert (live.base / "task").is_dir()
        cleared = [e for e in logs if e["event"] == "task_groups_cleared"]
        # (other nodes gone may be cleared too: this machine runs other tests)
        assert [e["killed"] for e in cleared if e["cgroup"] == str(stale)] == [1]
    finally:
        live.close()
    assert not live.base.exists()


def test_a_launcher_that_cannot_limit_its_task_does_not_start_it(tmp_path: Path) -> None:
    rules = Rules(landlock=False, cgroup=str(tmp_path / "no-such-group"))
    command = rules.command([sys.executable, "-c", "print('ran')"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3  # restarted with backoff, never run unlimited
    assert "ran" not in done.stdout and "no process limit" in done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("K2NODE_TASK_PROCESSES", "0"),
        ("K2NODE_TASK_PROCESSES", "many"),
        ("K2NODE_TASK_PHASE_CPU_S", "-1"),
        ("K2NODE_TASK_PHASE_CPU_S", "1.5x"),
    ],
)
def test_a_bad_limit_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env_file=None, environ={name: value})


def test_the_limits_default_to_sane_values() -> None:
    settings = load_settings(env_file=None, environ={})
    assert (settings.task_processes, settings.task_phase_cpu_s) == (128, 300)
    chosen = load_settings(
        env_file=None, environ={"K2NODE_TASK_PROCESSES": "16", "K2NODE_TASK_PHASE_CPU_S": "2"}
    )
    assert (chosen.task_processes, chosen.task_phase_cpu_s) == (16, 2)


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js on this machine")
async def test_a_javascript_task_is_held_to_the_same_limits(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    mechanism = _mechanism()
    if mechanism == NONE:
        pytest.skip("no process limit here: running as root with no writable pids cgroup")
    # (its phase counts until the next of its kind: a round long enough for a loaded machine
    # to give one spinning thread a second of CPU)
    task_id = await create_task(fast_chain, Keypair.generate(), round_time=40)
    log = tmp_path / "n" / "namespace" / task_id / "task.log"
    settings = node_settings(
        tmp_path / "n",
        task_id,
        task_file("forking_task.js"),
        task_processes=PROCESSES,
        task_phase_cpu_s=1,
    )

    def bombs() -> list[list[str]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split() for line in lines if line.startswith("PRY js-fork-bomb")]

    with capture_logs() as logs:
        async with Node.manage(settings, fast_chain):
            await wait_for(
                lambda: any(e["event"] == "task_phase_cpu_exceeded" for e in logs), within=40
            )
            stopped = next(e for e in logs if e["event"] == "task_phase_cpu_exceeded")
            await wait_for(lambda: len(bombs()) >= 2, within=30)  # its successor's code runs
    lines = log.read_text().splitlines()
    assert all(
        outcome == "denied" and int(forks) < PROCESSES and why == "EAGAIN"
        for _, _, outcome, forks, why in bombs()
    )
    assert [line.split()[1:3] for line in lines if "js-cpu-spin" in line] == [
        ["js-cpu-spin", "started"]
    ]
    assert (stopped["task_id"], stopped["phase"]) == (task_id, "executeTask")
    if mechanism in (CGROUP_V1, CGROUP_V2):
        assert any(e["event"] == "task_processes_refused" for e in logs)
    assert _processes_naming(task_id) == []
