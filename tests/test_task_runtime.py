"""Task processes: the IPC channel, phase handling, and tasks that misbehave."""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from k2node.contract.ipc import MAX_MESSAGE_BYTES, IpcChannel
from k2node.contract.launch import LaunchError, TaskArgs
from k2node.contract.methods import Method
from k2node.crypto import Keypair
from k2node.examples.hello_task import HelloTask
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from k2node.store import Store
from k2node.task.core import CoreLogic
from k2node.task.namespace import NamespaceWrapper
from k2node.task.runner import TaskStartError, build_task_app, load_entry, run_phase
from tests.conftest import create_task, node_settings, task_file, wait_for
from tests.tasks.misbehaving import RaisingTask

FAST_ROUNDS: dict[str, Any] = {"round_time": 20, "submission_window": 8, "audit_window": 8}


class Recorder(CoreLogic):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def task(self, round_: int) -> None:
        self.calls.append(("task", round_))

    async def submit_distribution_list(
        self, round_: int, is_previous_round_failed: bool = False
    ) -> bool:
        self.calls.append((f"distribution failed={is_previous_round_failed}", round_))
        return False


async def test_run_phase_answers_every_message() -> None:
    core = Recorder()
    ok = await run_phase(core, {"functionCall": "executeTask", "roundNumber": 4, "phaseLabel": "x"})
    assert ok["ok"] is True and ok["phaseLabel"] == "x" and ok["roundNumber"] == 4
    await run_phase(
        core,
        {
            "functionCall": "generateAndSubmitDistributionList",
            "roundNumber": 2,
            "isPreviousRoundFailed": True,
        },
    )
    assert core.calls == [("task", 4), ("distribution failed=True", 2)]
    for bad in (
        {"functionCall": "rmRf", "roundNumber": 1},
        {"functionCall": "executeTask", "roundNumber": "1"},
        {"functionCall": "executeTask", "roundNumber": -1},
        {"functionCall": "executeTask"},
    ):
        reply = await run_phase(core, bad)
        assert reply["ok"] is False and reply["error"] == "bad phase message"
    failed = await run_phase(RaisingTask(), {"functionCall": "auditPayload", "roundNumber": 1})
    assert failed["ok"] is False and "audit exploded" in failed["error"]
    # a task that did not write its part says so rather than crashing
    missing = await run_phase(CoreLogic(), {"functionCall": "executeTask", "roundNumber": 0})
    assert missing["ok"] is False and "NotImplementedError" in missing["error"]


async def test_ipc_channel_skips_junk_and_ends_on_close() -> None:
    left, right = socket.socketpair()
    a, b = await IpcChannel.over(left), await IpcChannel.over(right)
    b._writer.write(b"not json\n[1,2]\n" + b"x" * (MAX_MESSAGE_BYTES + 10) + b"\n")
    await b.send({"functionCall": "executeTask", "roundNumber": 1})
    assert await a.receive() == {"functionCall": "executeTask", "roundNumber": 1}
    await b.close()
    assert await a.receive() is None
    await a.close()


def test_task_arguments_and_entries_are_checked() -> None:
    with pytest.raises(LaunchError, match="usage"):
        TaskArgs.parse(["only", "three", "args"])
    with pytest.raises(LaunchError, match="integers"):
        TaskArgs.parse(["n", "id", "port", "service", "k", "s", "u", "u", "1", "2"])
    for entry in (
        "nocolon",
        "no.such.module:Task",
        "k2node.crypto:Keypair",
        task_file("missing.py") + ":X",
    ):
        with pytest.raises(TaskStartError):
            load_entry(entry)
    assert isinstance(load_entry(task_file("misbehaving.py") + ":RaisingTask"), CoreLogic)


async def test_a_task_raising_everywhere_does_not_stop_the_node(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), **FAST_ROUNDS)
    entry = task_file("misbehaving.py") + ":RaisingTask"
    async with Node.manage(node_settings(tmp_path / "n", task_id, entry), fast_chain) as node:
        events = node.events.subscribe()
        proc = node.tasks[task_id].process
        await wait_for(lambda: proc.running, within=10)
        pid = proc.pid
        log = tmp_path / "n" / "namespace" / task_id / "task.log"
        await wait_for(lambda: "submit exploded" in log.read_text(), within=30)
        # the task's failure reply comes back as an event
        while True:
            event = await asyncio.wait_for(events.get(), 30)
            failed = event["event"] == "phase_failed"
            if failed and event["phase"] == "submitPayload" and event["round"] == 1:
                break
        assert not node.ledger.phase_done(task_id, "submitPayload", 1)  # failed: never done
        assert proc.running and proc.pid == pid
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{node.port}/") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{node.port}/task/{task_id}/") as resp:
                assert await resp.json() == {"status": 200, "message": "Running"}


async def test_a_flooding_task_is_logged_within_bounds_and_keeps_working(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), **FAST_ROUNDS)
    entry = task_file("misbehaving.py") + ":FloodingTask"
    async with Node.manage(node_settings(tmp_path / "n", task_id, entry), fast_chain) as node:
        key = node.staking.pubkey

        async def submitted() -> bool:
            state = await fast_chain.get_task_state(task_id, {"is_submission_required": True})
            return key in state["submissions"].get("1", {})

        await wait_for(submitted, within=30)
    log = (tmp_path / "n" / "namespace" / task_id / "task.log").read_text()
    assert "lines dropped" in log and len(log) < 2 * 1024 * 1024
    assert max(len(line) for line in log.splitlines()) <= 8 * 1024 + len(" [line cut]")


@pytest.mark.parametrize(
    ("entry", "restarts"),
    [
        (task_file("misbehaving.py") + ":ExitsWithOne", False),
        (task_file("misbehaving.py") + ":ExitsWithZero", True),
        ("/nonexistent/main.js", False),  # a JavaScript task whose file is missing
    ],
)
async def test_exit_codes_follow_the_restart_policy(
    tmp_path: Path, fast_chain: LocalK2, entry: str, restarts: bool
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), **FAST_ROUNDS)
    settings = node_settings(tmp_path / "n", task_id, entry)
    async with Node.manage(settings, fast_chain, restart_backoff_s=0.05) as node:
        events = node.events.subscribe()
        proc = node.tasks[task_id].process
        seen: set[int] = set()

        def pids() -> int:
            if proc.pid is not None:
                seen.add(proc.pid)
            return len(seen)

        if restarts:
            await wait_for(lambda: pids() >= 3, within=30)
            assert not proc.stopped_for_good
        else:
            await wait_for(lambda: proc.stopped_for_good, within=30)
            pids()
            assert len(seen) == 1
            url = f"http://127.0.0.1:{node.port}/task/{task_id}/x"
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                assert resp.status == 422
            if proc.started.is_set():  # the timers outlive a process stopped for good
                while True:
                    event = await asyncio.wait_for(events.get(), 30)
                    if event["event"] == "phase_sent" and not event["delivered"]:
                        break


async def test_the_example_keeps_only_its_recent_rounds(tmp_path: Path) -> None:
    core = HelloTask()
    async with aiohttp.ClientSession() as session:
        core.namespace = NamespaceWrapper("t", "s", "http://127.0.0.1:9", session)
        core.namespace._store = Store.open(tmp_path / "db")
        for round_ in range(13):
            await core.task(round_)
            await core.namespace.store_set(f"signed:{round_}", {"round": round_})
        kept = [r for r in range(13) if await core.namespace.store_get(f"result:{r}")]
        signed = [r for r in range(13) if await core.namespace.store_get(f"signed:{r}")]
        core.namespace.close_store()
    assert kept == list(range(3, 13))
    assert signed == list(range(3, 13))


async def test_the_task_http_server_answers_bad_requests_with_json(tmp_path: Path) -> None:
    core = HelloTask()
    async with aiohttp.ClientSession() as session:
        # a namespace whose node is unreachable, with its own database open
        core.namespace = NamespaceWrapper("t", "s", "http://127.0.0.1:9", session)
        core.namespace._store = Store.open(tmp_path / "db")
        await core.namespace.store_set("result:5", {"nonce": 1, "digest": "000a"})
        client = TestClient(TestServer(build_task_app(core)))
        await client.start_server()
        assert await (await client.get("/")).json() == {"status": 200, "message": "Running"}
        assert await (await client.get("/proof/5")).json() == {"nonce": 1, "digest": "000a"}
        for path, status in (("/proof/abc", 400), ("/nope", 404), ("/taskState", 500)):
            resp = await client.get(path)
            assert resp.status == status, path
            body = await resp.json()
            assert set(body) == {"message"} and "Traceback" not in body["message"]
        resp = await client.post("/", data=io.BytesIO(b"x" * (9 * 1024 * 1024)))
        assert resp.status in (405, 413)
        await client.close()
        core.namespace.close_store()


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js on this machine")
async def test_a_javascript_task_runs_over_the_same_channel(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), **FAST_ROUNDS)
    settings = node_settings(tmp_path / "n", task_id, task_file("js_task.js"))
    async with Node.manage(settings, fast_chain) as node:
        key = node.staking.pubkey

        async def submitted() -> bool:
            state = await fast_chain.get_task_state(task_id, {"is_submission_required": True})
            return key in state["submissions"].get("0", {})

        await wait_for(submitted, within=30)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{node.port}/task/{task_id}/") as resp,
        ):
            assert await resp.json(content_type=None) == {"status": 200, "message": "Running"}
    state = await fast_chain.get_task_state(task_id, {"is_submission_required": True})
    assert state["submissions"]["0"][key]["submission_value"] == "js test task 0"


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js on this machine")
async def test_a_javascript_task_calls_every_method_of_the_newest_wrapper(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), round_time=200)
    settings = node_settings(tmp_path / "n", task_id, task_file("wrapper_task.js"))
    async with Node.manage(settings, fast_chain) as node, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{node.port}/task/{task_id}/calls"

        async def answered() -> bool:
            try:
                async with http.get(url) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(answered, within=30)
        async with http.get(url) as resp:
            calls = await resp.json(content_type=None)
    # k2node's own methods, beyond the wrapper's
    extensions = {Method.IPFS_UPLOAD, Method.IPFS_UPLOAD_FILE, Method.IPFS_GET, Method.GET_PEERS}
    assert set(calls) == {m.value for m in Method} - extensions  # the wrapper's, every one
    for method, answer in calls.items():
        message = answer["body"].get("message", "")
        assert "unknown method" not in message and "wrong number" not in message, method
        assert answer["status"] in (200, 422), (method, answer)  # a clear answer, never a 500
    refused_by_design = {
        "sendTransaction",  # the operator has not allowed transfers
        "sendAndConfirmTransactionWrapper",  # three bytes are no transaction
        "checkSubmissionAndUpdateRound",  # the round actions, before their windows
        "auditSubmission",
        "distributionListAuditSubmission",
        "uploadDistributionList",
        "distributionListSubmissionOnChain",
        "payloadTrigger",
    }
    for method, answer in calls.items():
        if method not in refused_by_design:
            assert answer["status"] == 200, (method, answer)
    assert calls["getSubmitterAccount"]["body"]["response"]["_keypair"]["secretKey"]["63"] >= 0
    assert calls["verifySignedData"]["body"]["response"]["data"] == '{"hello":"world"}'
    assert calls["fsReadStream"]["body"]["response"] == {"type": "Buffer", "data": [120]}
    assert calls["getRpcUrl"]["body"]["response"].endswith("/k2")
