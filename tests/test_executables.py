"""Tasks known only by their id: the executable fetched by its CID from a peer, verified,
kept, and run; what is not a task is refused while the node's other tasks run on."""

from __future__ import annotations

import json
import shutil
import zipfile
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from k2node.artifact import MANIFEST, build
from k2node.crypto import Keypair
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node import executables, fleet
from k2node.node.executables import ExecutableError, _kind
from k2node.node.provision import deploy_task
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import REPO, node_settings, wait_for

FAST = "round_time: 20\naudit_window: 8\nsubmission_window: 8\n"


def _example_project(where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copy(REPO / "k2node" / "examples" / "hello_task.py", where / "task.py")
    config = (REPO / "k2node" / "examples" / "config-task.yml").read_text()
    (where / "config-task.yml").write_text(config)
    return where


async def _publish(data_dir: Path, data: bytes) -> str:
    """Put bytes in a node's embedded IPFS store before it starts (as `task deploy` does)."""
    store = EmbeddedIpfs.open(data_dir / "ipfs")
    try:
        return await store.publish(data)
    finally:
        store.close()


async def test_nodes_that_know_only_the_task_id_fetch_verify_and_run_it(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    project = _example_project(tmp_path / "project")
    build(project, tmp_path / "task.zip")
    cid = await _publish(tmp_path / "a", (tmp_path / "task.zip").read_bytes())
    task_id = await deploy_task(fast_chain, Keypair.generate(), project / "config-task.yml", cid)
    assert (await fast_chain.get_task_state(task_id))["task_audit_program"] == cid
    async with AsyncExitStack() as stack:
        nodes = []
        for name in ("a", "b", "c"):  # a holds the executable; b and c start empty
            settings = node_settings(tmp_path / name, task_id, entry="no.such:Entry")
            nodes.append(await stack.enter_async_context(Node.manage(settings, fast_chain)))
        keys = [n.staking.pubkey for n in nodes]

        async def paid() -> bool:
            state = await fast_chain.get_task_state(
                task_id, {"is_available_balances_required": True}
            )
            return all(state["available_balances"].get(k, 0) > 0 for k in keys)

        await wait_for(paid, within=90)
        for name, node in zip("abc", nodes, strict=True):
            kept = tmp_path / name / "executables" / f"{cid}.zip"
            assert kept.read_bytes() == (tmp_path / "task.zip").read_bytes()
            assert node.tasks[task_id].process.spec.entry == str(kept)


async def test_what_is_not_a_task_is_refused_and_the_other_tasks_run(
    tmp_path: Path, fast_chain: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executables, "FETCH_BACKOFF_S", 0.01)
    project = _example_project(tmp_path / "project")
    build(project, tmp_path / "task.zip")
    good_cid = await _publish(tmp_path / "n", (tmp_path / "task.zip").read_bytes())
    page_cid = await _publish(tmp_path / "n", b"<!DOCTYPE html><html>404</html>")
    with (
        zipfile.ZipFile(tmp_path / "task.zip") as source,
        zipfile.ZipFile(tmp_path / "newer.zip", "w") as newer,
    ):
        for name in source.namelist():
            data = source.read(name)
            if name == MANIFEST:
                data = json.dumps(json.loads(data) | {"api_version": 99}).encode()
            newer.writestr(name, data)
    newer_cid = await _publish(tmp_path / "n", (tmp_path / "newer.zip").read_bytes())
    manager = Keypair.generate()
    good = await deploy_task(fast_chain, manager, project / "config-task.yml", good_cid)
    page = await deploy_task(fast_chain, manager, project / "config-task.yml", page_cid)
    future = await deploy_task(fast_chain, manager, project / "config-task.yml", newer_cid)
    missing = await deploy_task(
        fast_chain,
        manager,
        project / "config-task.yml",
        "QmTz3oc4gdpRMKP2sdGUPZTAGRngqjsi99BPoztyP53JMM",
    )
    tasks = (page, good, future, missing)
    settings = replace(node_settings(tmp_path / "n", good), tasks=tasks, task_stakes=())
    with capture_logs() as logs:
        async with Node.manage(settings, fast_chain) as node:
            assert list(node.tasks) == [good]
            await wait_for(lambda: node.tasks[good].running, within=30)
    refused = {e["task_id"]: e["error"] for e in logs if e["event"] == "task_unavailable"}
    assert "HTML" in refused[page] and "cannot fetch" in refused[missing]
    assert "needs task API 99" in refused[future]
    assert not (tmp_path / "n" / "executables" / f"{page_cid}.js").exists()


def test_executables_are_told_apart_by_their_content() -> None:
    assert _kind(b"module.exports = {};") == "js"
    assert _kind(b"x" * 4095 + "é".encode() + b";") == "js"  # a character across the sample
    for bad in (
        b"  <html><body>502</body></html>",
        b"\xef\xbb\xbf<!DOCTYPE html><html></html>",  # behind a byte-order mark
        b"",
        b"\xff\xfe\x00\x01" * 10,
    ):
        with pytest.raises(ExecutableError):
            _kind(bad)


async def test_a_task_unavailable_at_start_runs_once_a_peer_has_its_executable(
    tmp_path: Path, fast_chain: LocalK2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executables, "FETCH_BACKOFF_S", 0.01)
    monkeypatch.setattr(fleet, "RETRY_UNAVAILABLE_S", 0.2)
    project = _example_project(tmp_path / "project")
    build(project, tmp_path / "task.zip")
    cid = await _publish(tmp_path / "holder", (tmp_path / "task.zip").read_bytes())
    task_id = await deploy_task(fast_chain, Keypair.generate(), project / "config-task.yml", cid)
    with capture_logs() as logs:
        async with Node.manage(node_settings(tmp_path / "late", task_id), fast_chain) as late:
            assert late.tasks == {}  # nobody holds it yet: the node runs, without it
            holder = node_settings(tmp_path / "holder", task_id)
            async with Node.manage(holder, fast_chain):  # a peer staked, holding it
                await wait_for(lambda: task_id in late.tasks, within=30)
                await wait_for(lambda: late.tasks[task_id].running, within=30)
    events = [e["event"] for e in logs if e.get("task_id") == task_id]
    assert events.index("task_unavailable") < events.index("task_available")


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js on this machine")
async def test_a_javascript_bundle_runs_by_cid_even_under_an_es_module_project(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    # the node's data directory inside a project whose package.json makes `.js` ES modules
    project = _example_project(tmp_path / "project")
    (project / "package.json").write_text('{"type": "module"}\n')
    data = project / "node-data"
    cid = await _publish(data, (REPO / "tests" / "tasks" / "js_task.js").read_bytes())
    task_id = await deploy_task(fast_chain, Keypair.generate(), project / "config-task.yml", cid)
    async with Node.manage(node_settings(data, task_id), fast_chain) as node:
        key = node.staking.pubkey
        assert node.tasks[task_id].process.spec.entry == str(data / "executables" / f"{cid}.js")

        async def submitted() -> bool:
            state = await fast_chain.get_task_state(task_id, {"is_submission_required": True})
            return key in state["submissions"].get("0", {})

        await wait_for(submitted, within=30)
    state = await fast_chain.get_task_state(task_id, {"is_submission_required": True})
    assert state["submissions"]["0"][key]["submission_value"] == "js k2node hello 0"
