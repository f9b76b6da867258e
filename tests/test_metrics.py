"""`GET /metrics`: parsed back with prometheus-client's own parser; its counters move as
rounds pass, for a node on a K2 service (so its JSON-RPC calls are measured too)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from k2node.crypto import Keypair
from k2node.node.metrics import NodeMetrics
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from k2node.settlement.service import K2Service
from tests.conftest import create_task, node_settings, wait_for

FAST_ROUNDS = {"round_time": 20, "submission_window": 8, "audit_window": 8}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def test_metrics_move_as_rounds_pass(tmp_path: Path) -> None:
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
    service = TestClient(TestServer(K2Service(k2).app()))
    await service.start_server()
    try:
        task_id = await create_task(k2, Keypair.generate(), **FAST_ROUNDS)
        url = str(service.make_url("/"))
        settings = node_settings(tmp_path / "node", task_id, k2_node_url=url)
        async with Node.manage(settings) as node, aiohttp.ClientSession() as http:

            async def scrape() -> Samples:
                async with http.get(f"http://127.0.0.1:{node.port}/metrics") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    return _samples(await resp.text())

            async def submitted() -> bool:
                found = await scrape()
                return _total(found, "k2node_task_actions_total", outcome="done") > 0

            await wait_for(submitted, within=30)
            first = await scrape()

            async def paid() -> bool:
                return _total(await scrape(), "k2node_payouts_settled_total") >= 1

            await wait_for(paid, within=60)
            later = await scrape()
    finally:
        await service.close()
        k2.close()

    sent = "k2node_phases_total"
    assert _total(later, sent, outcome="sent") > _total(first, sent, outcome="sent") > 0
    assert _total(later, sent, outcome="done") > 0
    assert _total(later, sent, outcome="failed") == 0
    delays = "k2node_phase_dispatch_delay_seconds_count"
    assert _total(later, delays, task_id=task_id) > _total(first, delays, task_id=task_id)
    assert _total(later, delays, phase="executeTask") > 0
    durations = "k2node_phase_duration_seconds_count"
    assert _total(later, durations, phase="submitPayload") > 0
    actions = "k2node_task_actions_total"
    assert _total(later, actions, method="checkSubmissionAndUpdateRound", outcome="done") >= 1
    assert _total(later, "k2node_payouts_settled_total", outcome="PayoutSuccessful") >= 1
    assert _total(later, "k2node_rewards_roe_total", task_id=task_id) > 0
    assert _total(later, "k2node_slashes_roe_total") == 0
    assert _total(later, "k2node_task_restarts_total", task_id=task_id) == 0
    assert _total(later, "k2node_ipfs_bytes_total", direction="stored") > 0
    assert _total(later, "k2node_ipfs_verification_failures_total") == 0
    rpc = "k2node_k2_rpc_seconds_count"
    assert _total(later, rpc, method="sendTransaction") > _total(
        first, rpc, method="sendTransaction"
    )
    assert _total(later, rpc) > 0


def test_refusals_and_misses_are_counted_apart() -> None:
    metrics = NodeMetrics()
    metrics.observe({"event": "rpc_refused", "task_id": "T", "method": "auditSubmission"})
    metrics.observe({"event": "phase_missed", "task_id": "T", "phase": "auditPayload"})
    metrics.observe({"event": "phase_failed", "task_id": "T", "phase": "auditPayload", "ms": 5})
    metrics.observe({"event": "something_else", "task_id": "T"})
    metrics.k2_call("getSlot", 0.2, ok=False)
    found = _samples(metrics.render().decode())
    assert _total(found, "k2node_task_actions_total", outcome="refused") == 1
    assert _total(found, "k2node_task_actions_total", outcome="done") == 0
    assert _total(found, "k2node_phases_total", outcome="missed") == 1
    assert _total(found, "k2node_phases_total", outcome="failed") == 1
    assert _total(found, "k2node_k2_rpc_errors_total", method="getSlot") == 1
