"""The status page: `GET /` gives a browser the page and everyone else today's JSON; the
page, loaded in headless Chromium where it is installed, shows the task and a round that
advances (a screenshot is kept in test-artifacts/)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import REPO, create_task, node_settings, wait_for

FAST = {"round_time": 20, "submission_window": 8, "audit_window": 8}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ARTIFACTS = REPO / "test-artifacts"


async def test_browsers_get_the_page_and_scripts_keep_their_json(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), **FAST)
    async with (
        Node.manage(node_settings(tmp_path / "n", task_id), fast_chain) as node,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{node.port}"
        async with http.get(f"{base}/", headers={"Accept": BROWSER_ACCEPT}) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            page = await resp.text()
            assert "<title>k2node</title>" in page and "/standing" in page and "/events" in page
        for accept in ("", "*/*", "application/json", "application/json, text/html", "x" * 5000):
            async with http.get(f"{base}/", headers={"Accept": accept}) as resp:
                assert resp.status == 200, accept[:40]
                assert (await resp.json())["status"] == "running"
        async with http.get(f"{base}/standing") as resp:
            standing = await resp.json()
        assert standing["node_running"] is True
        (task,) = standing["tasks"]
        assert task["task_id"] == task_id and task["state"] == "running"
        assert task["stake"] > 0


async def _chromium(url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        shutil.which("chromium") or "chromium",
        "--headless=new",
        "--no-sandbox",  # tests may run as root, where Chromium's own sandbox will not start
        "--disable-gpu",
        "--virtual-time-budget=5000",  # let the page fetch and render
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    return out.decode(errors="replace")


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Chromium is not installed (Debian: apt install chromium): the page is not loaded",
)
async def test_the_page_shows_the_task_and_its_round_advancing(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(fast_chain, Keypair.generate(), **FAST)
    async with Node.manage(node_settings(tmp_path / "n", task_id), fast_chain) as node:
        url = f"http://127.0.0.1:{node.port}/"
        shown = re.compile(rf'data-round="{task_id}">(\d+)<')

        async def round_on_page() -> int:
            found = shown.search(await _chromium(url, "--dump-dom"))
            assert found is not None, "the page shows no round for the task"
            return int(found[1])

        first = await round_on_page()
        later = first + 2
        await wait_for(lambda: fast_chain.current_slot() // FAST["round_time"] >= later + 1, 30)
        assert await round_on_page() > first
        dom = await _chromium(url, "--dump-dom")
        assert "test task" in dom and "running" in dom  # the task's name and state
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        await _chromium(url, f"--screenshot={shot}", "--window-size=1200,800")
        assert shot.stat().st_size > 10_000
