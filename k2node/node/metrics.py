"""`GET /metrics`: the node in Prometheus' text format, through prometheus-client.

Most figures come from the node's events as they are emitted (a dictionary lookup and an
increment each: nothing the timers would notice); counts the parts keep anyway (process
starts, IPFS bytes, K2 calls) are read when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from k2node.ipfs.embedded import IpfsStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DISPATCH_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class _Scraped(Collector):
    """Counts read from the node's parts at scrape time."""

    def __init__(self, processes: Callable[[], Mapping[str, Any]], ipfs: IpfsStats | None) -> None:
        self._processes = processes
        self._ipfs = ipfs

    def collect(self) -> Iterable[CounterMetricFamily]:
        restarts = CounterMetricFamily(
            "k2node_task_restarts", "Task processes started again (crash, watchdog, reload)",
            labels=["task_id"],
        )  # fmt: skip
        for task_id, process in self._processes().items():
            starts = getattr(process, "starts", 0)
            restarts.add_metric([task_id], max(0, starts - 1))
        yield restarts
        if self._ipfs is not None:
            moved = CounterMetricFamily(
                "k2node_ipfs_bytes", "Bytes through the embedded IPFS store", labels=["direction"]
            )
            moved.add_metric(["stored"], self._ipfs.bytes_stored)
            moved.add_metric(["fetched"], self._ipfs.bytes_fetched)
            yield moved
            yield CounterMetricFamily(
                "k2node_ipfs_verification_failures",
                "Blocks refused because they did not match their CID",
                value=self._ipfs.verification_failures,
            )


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.dispatch_delay = Histogram(
            "k2node_phase_dispatch_delay_seconds",
            "From a phase's window opening to its message leaving for the task",
            ["task_id", "phase"], buckets=DISPATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.phase_duration = Histogram(
            "k2node_phase_duration_seconds",
            "How long the task took over a phase",
            ["task_id", "phase"], buckets=PHASE_BUCKETS, registry=r,
        )  # fmt: skip
        self.phases = Counter(
            "k2node_phases", "Phases by outcome: sent, undelivered, done, failed, missed",
            ["task_id", "phase", "outcome"], registry=r,
        )  # fmt: skip
        self.actions = Counter(
            "k2node_task_actions", "The task's namespace calls that act: done or refused",
            ["task_id", "method", "outcome"], registry=r,
        )  # fmt: skip
        self.payouts = Counter(
            "k2node_payouts_settled", "Settled payouts of this node's tasks, by outcome",
            ["task_id", "outcome"], registry=r,
        )  # fmt: skip
        self.rewards = Counter(
            "k2node_rewards_roe", "ROE this node was awarded in settled payouts",
            ["task_id"], registry=r,
        )  # fmt: skip
        self.slashes = Counter(
            "k2node_slashes_roe", "ROE of this node's stake slashed in settled payouts",
            ["task_id"], registry=r,
        )  # fmt: skip
        self.k2_calls = Histogram(
            "k2node_k2_rpc_seconds", "K2 JSON-RPC calls, by method",
            ["method"], buckets=RPC_BUCKETS, registry=r,
        )  # fmt: skip
        self.k2_errors = Counter(
            "k2node_k2_rpc_errors", "K2 JSON-RPC calls that failed or were refused",
            ["method"], registry=r,
        )  # fmt: skip

    def watch(self, processes: Callable[[], Mapping[str, Any]], ipfs: IpfsStats | None) -> None:
        """Also report the task processes' restarts and the IPFS store's counts."""
        self.registry.register(_Scraped(processes, ipfs))

    def k2_call(self, method: str, seconds: float, ok: bool) -> None:
        self.k2_calls.labels(method).observe(seconds)
        if not ok:
            self.k2_errors.labels(method).inc()

    def observe(self, event: Mapping[str, Any]) -> None:
        """An EventHub listener: each event the node emits, counted."""
        name = event.get("event")
        task_id = str(event.get("task_id", ""))
        if name == "phase_sent":
            phase = str(event["phase"])
            self.dispatch_delay.labels(task_id, phase).observe(event["delay_ms"] / 1000)
            outcome = "sent" if event.get("delivered") else "undelivered"
            self.phases.labels(task_id, phase, outcome).inc()
        elif name in ("phase_done", "phase_failed"):
            phase = str(event["phase"])
            outcome = "done" if name == "phase_done" else "failed"
            self.phases.labels(task_id, phase, outcome).inc()
            if isinstance(event.get("ms"), int | float):
                self.phase_duration.labels(task_id, phase).observe(event["ms"] / 1000)
        elif name == "phase_missed":
            self.phases.labels(task_id, str(event["phase"]), "missed").inc()
        elif name in ("rpc_action", "rpc_refused"):
            outcome = "done" if name == "rpc_action" else "refused"
            self.actions.labels(task_id, str(event["method"]), outcome).inc()
        elif name == "payout_settled":
            self.payouts.labels(task_id, str(event["outcome"])).inc()
            self.rewards.labels(task_id).inc(max(0, int(event.get("reward", 0))))
            self.slashes.labels(task_id).inc(max(0, int(event.get("slash", 0))))

    def render(self) -> bytes:
        return generate_latest(self.registry)
