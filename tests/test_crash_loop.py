"""kill -9 of a node at random instants, again and again, on its embedded K2; then clean
rounds. Nothing is sent twice, nothing is lost, no error on restart, and the K2's supply adds
up: what the faucet gave less the fees burned. `make soak` runs the long variant."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from solders.transaction import Transaction

from k2node.node.provision import free_port
from k2node.settlement.local import LocalK2
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from k2node.settlement.snapshot import LOG_PREFIX
from tests.conftest import log_events

SLOT_MS = "100"  # the example's rounds take 2 s


def _start(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"K2NODE_SLOT_MS": SLOT_MS, "K2NODE_LOG_FORMAT": "json"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "k2node", "run", "--data-dir", str(data), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _crash_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    data, log, port = tmp_path / "data", tmp_path / "node.log", free_port()
    for _ in range(kills):
        node = _start(data, port, log)
        time.sleep(rng.uniform(0.8, 3.0))  # anywhere: starting, mid-phase, mid-send
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=30)
    node = _start(data, port, log)
    time.sleep(10)  # five clean rounds
    node.send_signal(signal.SIGTERM)
    assert node.wait(timeout=30) == 0

    events = log_events(log)
    errors = [e for e in events if e.get("level") in ("error", "critical")]
    assert errors == [], errors[:5]
    refused = [e for e in events if e.get("event") in ("rpc_refused", "payout_refused")]
    assert not [e for e in refused if "already" in str(e.get("error"))], refused[:5]

    k2 = LocalK2.open(data / "k2", float(SLOT_MS))
    try:
        faucet = fees = 0
        for _key, entry in k2._store.items(LOG_PREFIX):  # (no snapshot in so short a run)
            if "airdrop" in entry:
                faucet += entry["airdrop"][1]
                continue
            tx = Transaction.from_bytes(base64.b64decode(entry["tx"]))
            fees += LAMPORTS_PER_SIGNATURE * len(tx.signatures)
        # the supply adds up: every lamport is the faucet's, less the fees burned
        assert sum(k2._world.balances.values()) == faucet - fees
        (task_id,) = k2._world.tasks
        state = _state(k2, task_id)
    finally:
        k2.close()
    rounds = [int(r) for r, subs in state["submissions"].items() if subs]
    current = state["current_round"]
    # the clean rounds at the end were all submitted, once each (K2 takes one per round)
    assert {current - 3, current - 2} <= set(rounds), (current, sorted(rounds))
    records = state["distributions_audit_record"]
    assert all(v == "PayoutSuccessful" for v in records.values()), records


def _state(k2: LocalK2, task_id: str) -> dict[str, Any]:
    wanted = {"is_submission_required": True, "is_distribution_required": True}
    return asyncio.run(k2.get_task_state(task_id, wanted))


@pytest.mark.timeout(300)
def test_a_few_kills(tmp_path: Path) -> None:
    _crash_loop(tmp_path, kills=6, seed=1)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_thirty_kills(tmp_path: Path) -> None:
    _crash_loop(tmp_path, kills=30, seed=2)
