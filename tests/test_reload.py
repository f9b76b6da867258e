"""`k2node run --reload`: an edited task takes over between phases; the node, its stake and
its ledger stay; no phase is sent twice or skipped."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from k2node.crypto import Keypair
from k2node.node.reload import source_folder
from k2node.node.runtime import Node
from tests.conftest import RecordingK2, create_task, node_settings, wait_for

FAST_ROUNDS: dict[str, Any] = {"round_time": 20, "submission_window": 8, "audit_window": 8}
TASK = """
from aiohttp import web

from k2node.examples.hello_task import HelloTask

VERSION = {version}


class Task(HelloTask):
    def routes(self) -> list[web.RouteDef]:
        async def version(_: web.Request) -> web.Response:
            return web.json_response(VERSION)

        return [*super().routes(), web.get("/version", version)]
"""


async def test_an_edit_restarts_only_the_task_between_phases(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    source = project / "task.py"
    source.write_text(textwrap.dedent(TASK.format(version=1)))
    chain = RecordingK2.open(tmp_path / "k2", slot_ms=100.0)
    try:
        task_id = await create_task(chain, Keypair.generate(), **FAST_ROUNDS)
        settings = node_settings(tmp_path / "node", task_id, f"{source}:Task", reload=True)

        async def submitted(key: str, round_: int) -> bool:
            state = await chain.get_task_state(task_id, {"is_submission_required": True})
            return key in state["submissions"].get(str(round_), {})

        with capture_logs() as logs:
            async with Node.manage(settings, chain) as node, aiohttp.ClientSession() as http:
                key = node.staking.pubkey
                task = node.tasks[task_id]
                url = f"http://127.0.0.1:{node.port}/task/{task_id}/version"

                async def version() -> Any:
                    async with http.get(url) as resp:
                        return await resp.json() if resp.status == 200 else None

                async def new_code() -> bool:
                    return await version() == 2

                await wait_for(lambda: submitted(key, 1), within=30)
                assert await version() == 1
                pid = task.process.pid
                # mid-round: the next phases wait for the new code
                source.write_text(textwrap.dedent(TASK.format(version=2)))
                await wait_for(lambda: any(e["event"] == "task_reloaded" for e in logs), 30)
                await wait_for(new_code, within=10)
                assert task.process.pid != pid and task.process.starts == 2
                reloaded_at = chain.current_slot()
                last = reloaded_at // FAST_ROUNDS["round_time"] + 1
                await wait_for(lambda: submitted(key, last), within=30)
    finally:
        chain.close()

    changed = next(e for e in logs if e["event"] == "task_source_changed")
    assert changed["file"] == str(source)
    # every round submitted once, none skipped, across the reload
    attempts = chain.attempts("SubmitTask", key)
    assert all(count == 1 for count in attempts.values()), attempts
    assert sorted(attempts) == list(range(max(attempts) + 1))
    sent = Counter((e["phase"], e["round"]) for e in logs if e["event"] == "phase_sent")
    assert [p for p, n in sent.items() if n > 1] == []
    assert not [e for e in logs if e["event"] in ("phase_missed", "phase_failed")]
    # the reload interrupted nothing: every phase sent before it finished
    reloaded = next(i for i, e in enumerate(logs) if e["event"] == "task_reloaded")
    before = {(e["phase"], e["round"]) for e in logs[:reloaded] if e["event"] == "phase_sent"}
    done = {(e["phase"], e["round"]) for e in logs if e["event"] == "phase_done"}
    assert before and before <= done
    assert [e["event"] for e in logs].count("node_started") == 1  # the node itself stayed


def test_which_sources_are_watched(tmp_path: Path) -> None:
    task = tmp_path / "project" / "task.py"
    task.parent.mkdir()
    task.write_text("")
    executables = tmp_path / "data" / "executables"
    executables.mkdir(parents=True)
    (executables / "bafy.js").write_text("")
    assert source_folder(f"{task}:Task", executables) == task.parent
    example = source_folder("k2node.examples.hello_task:HelloTask", executables)
    assert example is not None and (example / "hello_task.py").is_file()
    assert source_folder(str(executables / "bafy.js"), executables) is None  # by CID
    assert source_folder("no.such.module:Task", executables) is None
    assert source_folder(f"{tmp_path}/missing.py:Task", executables) is None


async def test_an_edit_that_breaks_the_task_then_one_that_mends_it(tmp_path: Path) -> None:
    """A saved syntax error stops the task (exit 1); the next save brings it back."""
    source = tmp_path / "project" / "task.py"
    source.parent.mkdir()
    source.write_text(textwrap.dedent(TASK.format(version=1)))
    chain = RecordingK2.open(tmp_path / "k2", slot_ms=100.0)
    try:
        task_id = await create_task(chain, Keypair.generate(), **FAST_ROUNDS)
        settings = node_settings(tmp_path / "node", task_id, f"{source}:Task", reload=True)
        with capture_logs() as logs:
            async with Node.manage(settings, chain) as node, aiohttp.ClientSession() as http:
                task = node.tasks[task_id]
                url = f"http://127.0.0.1:{node.port}/task/{task_id}/version"

                async def serves(version: int) -> bool:
                    async with http.get(url) as resp:
                        return resp.status == 200 and await resp.json() == version

                await wait_for(lambda: serves(1), within=30)
                source.write_text("this is not Python (\n")
                await wait_for(lambda: task.process.stopped_for_good, within=30)
                source.write_text(textwrap.dedent(TASK.format(version=3)))
                await wait_for(lambda: serves(3), within=30)
                assert not task.process.stopped_for_good
    finally:
        chain.close()
    assert any(e["event"] == "task_stopped_for_good" for e in logs)
    assert [e["event"] for e in logs].count("node_started") == 1
