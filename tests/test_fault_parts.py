"""The parts the injected faults (tests/test_faults.py) rest on, one by one: an outage is one
line however many calls meet it and is waited out by probing; a task log on a disk that
refuses writes loses lines, not its pump; a flood is counted and written a chunk at a time,
not line by line; a peer that accepts and never answers costs a search a bounded wait and
one line; a K2 that answers slowly is one line each way, and its late answers do not pull the
slot clock back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from k2node.ipfs import embedded as embedded_module
from k2node.ipfs.embedded import EmbeddedIpfs, NotFound
from k2node.ipfs.unixfs import Cid
from k2node.node.tasklog import TaskLog
from k2node.settlement.base import SlotClock
from k2node.settlement.outage import Outage
from k2node.settlement.rpc import SLOW_SLOTS, RpcSettlement


async def test_an_outage_is_one_line_each_way_and_waited_out_by_probing() -> None:
    answers = iter([False, False, True])
    probes = 0

    async def probe() -> bool:
        nonlocal probes
        probes += 1
        return next(answers)

    outage = Outage("thing_down", "thing_up", probe, url="x")
    with capture_logs() as logs:
        assert await outage.cleared(0.01)  # no fault: at once
        for _ in range(50):
            outage.failed("refused")
        assert outage.active and outage.count == 1
        started = time.monotonic()
        assert not await outage.cleared(0.1)  # still down after the wait
        assert await outage.cleared(5.0)
        waited = time.monotonic() - started
        outage.succeeded()  # (already clear: nothing more)
    assert [e["event"] for e in logs] == ["thing_down", "thing_up"]
    assert logs[0] == {
        "event": "thing_down",
        "url": "x",
        "error": "refused",
        "log_level": "warning",
    }
    assert probes == 3 and 0.2 <= waited < 3.0  # probed at a growing interval, not spun


def _clocked(now: list[float]) -> RpcSettlement:
    """An RPC settlement with 400 ms slots from 1000.0, read at `now[0]` (no K2 is asked)."""
    rpc = RpcSettlement("http://127.0.0.1:1/", None, SlotClock(1000.0, 400))  # type: ignore[arg-type]
    rpc._now = lambda: now[0]
    return rpc


def test_a_late_answer_naming_the_slot_it_was_asked_in_leaves_the_clock_alone() -> None:
    now = [1000.0 + 10 * 0.4 + 0.1]  # slot 10
    rpc = _clocked(now)
    asked_at = rpc.time()
    now[0] += 1.2  # the answer, "slot 10", comes back three slots later
    rpc.resync(10, asked_at)
    assert rpc.current_slot() == 13  # (it had been moved back to 10)
    rpc.resync(12, asked_at)  # any slot from the asking to now agrees
    assert rpc.current_slot() == 13
    rpc.resync(15, asked_at)  # K2 ahead of every slot of the question: it begins now
    assert rpc.current_slot() == 15
    assert rpc.wall_time_of_slot(15) == pytest.approx(now[0], abs=1e-5)
    later = rpc.time()
    now[0] += 0.05
    rpc.resync(12, later)  # K2 behind the asking: the latest anchor it allows, 12 now
    assert rpc.current_slot() == 12 and rpc.wall_time_of_slot(12) == pytest.approx(now[0], abs=1e-5)
    rpc.resync(11)  # announced (no question): it begins now
    assert rpc.current_slot() == 11


async def test_a_slow_k2_is_one_line_when_it_slows_and_one_when_it_is_prompt_again() -> None:
    delays = iter([0.0, 0.15, 0.15, 0.15, 0.0, 0.0])

    async def get_slot(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(next(delays))
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": 7})

    app = web.Application()
    app.router.add_post("/", get_slot)
    async with TestClient(TestServer(app)) as client:
        slot_ms = 20  # slow: an answer over SLOW_SLOTS slots, 0.1 s
        rpc = RpcSettlement(str(client.make_url("/")), client.session, SlotClock(0.0, slot_ms))
        assert SLOW_SLOTS * slot_ms / 1000 < 0.15
        with capture_logs() as logs:
            for _ in range(6):
                assert await rpc.get_slot() == 7  # every answer arrives, late or not
    events = [e for e in logs if e["event"] in ("k2_slow", "k2_prompt")]
    assert [e["event"] for e in events] == ["k2_slow", "k2_prompt"], logs
    assert events[0]["method"] == "getSlot" and events[0]["error"].startswith("answered in 0.1")
    assert 0.25 < events[1]["slow_s"] < 2.0
    assert not rpc.outage.active and rpc.outage.count == 0  # slow is not unreachable


def _stream(*pieces: bytes) -> asyncio.StreamReader:
    stream = asyncio.StreamReader()
    for piece in pieces:
        stream.feed_data(piece)
    stream.feed_eof()
    return stream


FULL = Path("/dev/full")  # a device whose every write fails with ENOSPC


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full here (writes failing with ENOSPC)")
async def test_a_task_log_on_a_disk_refusing_writes_loses_lines_not_its_pump(
    tmp_path: Path,
) -> None:
    path = tmp_path / "task.log"
    path.symlink_to(FULL)
    log = TaskLog(path, rate=10_000)
    stream = asyncio.StreamReader()
    with capture_logs() as logs:
        pump = asyncio.create_task(log.pump(stream))
        stream.feed_data(b"".join(b"lost %d\n" % i for i in range(100)))
        await asyncio.sleep(0.05)
        path.unlink()  # the disk has room again
        stream.feed_data(b"kept\n")
        stream.feed_eof()
        await asyncio.wait_for(pump, 5)
    assert path.read_text() == "[k2node: 100 lines lost, the disk refused them]\nkept\n"
    assert [(e["event"], e.get("lost")) for e in logs] == [
        ("task_log_write_failed", None),
        ("task_log_writable", 100),
    ]


async def test_a_flood_over_the_rate_is_counted_and_written_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = TaskLog(tmp_path / "task.log", rate=500)
    calls = {"line": 0, "write": 0}
    real_line, real_write = TaskLog._line, TaskLog._write

    def line(self: TaskLog, data: bytes) -> None:
        calls["line"] += 1
        real_line(self, data)

    def write(self: TaskLog, data: bytes, lines: int = 1) -> None:
        calls["write"] += 1
        real_write(self, data, lines)

    monkeypatch.setattr(TaskLog, "_line", line)
    monkeypatch.setattr(TaskLog, "_write", write)
    await log.pump(_stream(*[b"flood\n" * 10_000] * 20))  # 200,000 lines
    # not a call per line: the kept ones in one write, the rest counted
    assert calls["line"] == 0 and calls["write"] <= 3, calls
    text = (tmp_path / "task.log").read_text().splitlines()
    assert text[:500] == ["flood"] * 500
    assert text[500:] == ["[k2node: 199500 lines dropped, over 500 a second]"]


async def test_a_peer_that_accepts_and_never_answers_costs_a_bounded_wait_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_module, "PEER_ANSWER_S", 0.3)
    release = asyncio.Event()

    async def silent(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_get("/ipfs/{cid}", silent)
    frozen = TestClient(TestServer(app))
    await frozen.start_server()

    async def peers() -> list[str]:
        return [str(frozen.make_url(""))]

    store = EmbeddedIpfs.open(tmp_path / "ipfs", frozen.session, peers)
    try:
        with capture_logs() as logs:
            for n in range(3):  # three searches, each given up after the peer's answer time
                started = time.monotonic()
                with pytest.raises(NotFound, match="Timeout"):
                    await store.fetch(str(Cid.of(b"held elsewhere %d" % n, 1, "raw")))
                assert time.monotonic() - started < 2.0
    finally:
        release.set()
        store.close()
        await frozen.close()
    assert [e["event"] for e in logs] == ["ipfs_peer_unreachable"]
