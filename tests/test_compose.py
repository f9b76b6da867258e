"""`docker compose up`, for real: dockerd started here as root with its own roots and socket
and no bridge or iptables of the machine's (compose's own network lives in namespaces it
creates); a base image built from Debian's packages (no registry is reachable); then the
project's docker-compose.yml: a payout, `down`/`up` keeping the task, `--scale node=3` paying
three nodes, `docker stop` ending a node cleanly within its grace period.

`make compose-test` runs it alone, `make soak` with the long variants; `make test` leaves it
out (the `compose` marker)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2node.crypto import Keypair
from tests.conftest import REPO

TOOLS = ("dockerd", "docker", "docker-compose", "debootstrap")
CACHE = Path.home() / ".cache" / "k2node-tests" / "docker"  # images kept between runs
BASE = "k2node-base:bookworm"
PROJECT = "k2nodecomposetest"
OVERRIDE = """
services:
  k2:
    build:
      network: host  # the build's pip reaches PyPI through the machine's network
    command: ["k2node-start", "k2", "--host", "0.0.0.0", "--port", "8899", "--data-dir",
              "/data/k2", "--slot-ms", "100"]
"""


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "starting dockerd needs root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        install = "apt install docker.io docker-compose debootstrap"
        return f"{', '.join(missing)} not installed (Debian: {install})"
    return None


pytestmark = [
    pytest.mark.compose,
    pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())),
]


def _run(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def docker() -> Iterator[dict[str, str]]:
    runtime = Path(tempfile.mkdtemp(prefix="k2nd-"))  # short: it holds sockets
    CACHE.mkdir(parents=True, exist_ok=True)
    socket_path = runtime / "docker.sock"
    roots = ["--data-root", str(CACHE / "data"), "--exec-root", str(runtime / "exec")]
    nothing_of_the_machines = ["--bridge=none", "--iptables=false"]
    daemon_log = (runtime / "dockerd.log").open("w")
    pidfile = ["--pidfile", str(runtime / "docker.pid")]
    daemon = subprocess.Popen(
        ["dockerd", *roots, "--host", f"unix://{socket_path}", *nothing_of_the_machines, *pidfile],
        stdout=subprocess.DEVNULL,
        stderr=daemon_log,
    )
    env = os.environ | {"DOCKER_HOST": f"unix://{socket_path}"}
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode:
            assert daemon.poll() is None, (runtime / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not answer in 60 s"
            time.sleep(0.5)
        _base_image(env, runtime)
        yield env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        daemon_log.close()
        shutil.rmtree(runtime, ignore_errors=True)


def _base_image(env: dict[str, str], runtime: Path) -> None:
    """Debian bookworm with Python and venv, and this machine's CA bundle (PyPI may be
    reached through a proxy it trusts), made once and kept."""
    known = subprocess.run(["docker", "image", "inspect", BASE], env=env, capture_output=True)
    if known.returncode == 0:
        return
    rootfs = runtime / "rootfs"
    packages = "--include=python3,python3-venv,ca-certificates"
    mirror = "http://deb.debian.org/debian"
    _run("debootstrap", "--variant=minbase", packages, "bookworm", str(rootfs), mirror,
         env=env, timeout=1200)  # fmt: skip
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(
            ["docker", "import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
             "-", BASE],
            stdin=tar.stdout, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    # (the with closes tar's pipe and waits for it: an open pipe was a ResourceWarning)
    assert imported.returncode == 0, imported.stderr
    shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's files as a user's checkout has them (what git tracks)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        source = REPO / name
        operators = name == ".env-local" or name.startswith(("config/", "test-artifacts/"))
        if source.is_file() and not operators:  # the operator's own files are not the project's
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tmp_path / name)
    (tmp_path / "compose.test.yml").write_text(OVERRIDE)
    return tmp_path


def _paid_keys(logs: str) -> set[str]:
    keys = set()
    for line in logs.splitlines():
        _, _, text = line.partition("| ")
        if '"payout_settled"' in text:
            keys.add(json.loads(text)["staking_key"])
    return keys


def _tasks_run(logs: str) -> list[list[str]]:
    found = []
    for line in logs.splitlines():
        _, _, text = line.partition("| ")
        if '"node_started"' in text:
            found.append(json.loads(text)["tasks"])
    return found


@pytest.mark.timeout(1800)  # a first run builds the base image from Debian's packages
def test_compose_up_pays_keeps_scales_and_stops(docker: dict[str, str], project: Path) -> None:
    env = docker | {"K2NODE_BASE_IMAGE": BASE, "COMPOSE_PROJECT_NAME": PROJECT}
    compose = ["docker-compose", "-f", "docker-compose.yml", "-f", "compose.test.yml"]

    def logs() -> str:
        return _run(*compose, "logs", "--no-color", "node", env=env, cwd=project)

    def wait(condition: object, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"{what} not within {within} s:\n{logs()[-3000:]}"
            time.sleep(1)

    _run(*compose, "down", "-v", env=env, cwd=project)  # what a broken earlier run left
    try:
        # neither a wallet in config/ nor an .env-local: the example on the local K2
        assert not (project / ".env-local").exists()
        _run(*compose, "up", "-d", "--build", env=env, cwd=project, timeout=900)
        wait(lambda: len(_paid_keys(logs())) == 1, 120, "a payout")
        (first_tasks,) = _tasks_run(logs())
        # down and up: the node finds its data folder and its task again
        _run(*compose, "down", env=env, cwd=project)
        _run(*compose, "up", "-d", env=env, cwd=project)
        wait(lambda: len(_tasks_run(logs())) == 1, 60, "the node's start after up")
        assert _tasks_run(logs()) == [first_tasks]
        # the template's steps: a wallet in config/id.json (the operator's, mode 600) and
        # settings in .env-local, for the nodes started from now on
        wallet = Keypair.generate()
        (project / "config").mkdir()
        (project / "config" / "id.json").write_text(json.dumps(list(wallet.secret_bytes)))
        (project / "config" / "id.json").chmod(0o600)
        (project / ".env-local").write_text("K2NODE_AUTO_CLAIM=0.1\n")
        # three nodes on the one K2, each in a data folder of its own, all paid
        _run(*compose, "up", "-d", "--scale", "node=3", env=env, cwd=project)
        wait(lambda: len(_paid_keys(logs())) == 3, 120, "payouts to three nodes")
        asked = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:30017/id').read())"
        main = _run("docker", "exec", f"{PROJECT}_node_3", "python3", "-c", asked, env=env)
        assert wallet.pubkey in main
        wait(lambda: '"rewards_claimed"' in logs(), 60, "a claim, as .env-local asks")
        # docker stop: the node ends cleanly, well within its grace period
        container = f"{PROJECT}_node_2"
        started = time.monotonic()
        _run("docker", "stop", "-t", "30", container, env=env)
        assert time.monotonic() - started < 15
        state = json.loads(_run("docker", "inspect", container, env=env))[0]["State"]
        assert state["ExitCode"] == 0, state
        health = json.loads(_run("docker", "inspect", f"{PROJECT}_node_1", env=env))[0]
        assert health["State"]["Health"]["Status"] in ("healthy", "starting")

        def k2_health() -> str:
            found = json.loads(_run("docker", "inspect", f"{PROJECT}_k2_1", env=env))[0]
            return str(found["State"]["Health"]["Status"])

        wait(lambda: k2_health() == "healthy", 60, "the K2's getHealth check")
        for container in (f"{PROJECT}_node_1", f"{PROJECT}_k2_1"):  # not root inside
            status = _run("docker", "exec", container, "cat", "/proc/1/status", env=env)
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uids.split()[1:] == ["10001"] * 4, uids
    finally:
        subprocess.run([*compose, "down", "-v"], env=env, cwd=project, capture_output=True)
