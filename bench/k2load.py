"""The local K2 under load: signed wire submissions in one round, taken in process (a curve
from 1,000 to 100,000) and by `k2node k2` over HTTP JSON-RPC."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from pathlib import Path

import aiohttp
from common import (  # bench/, beside this file
    cpu_seconds,
    create_task,
    free_port,
    growth,
    record,
    rpc_post,
    stop,
    wait_rpc,
)
from solders.hash import Hash
from solders.keypair import Keypair as SoldersKeypair
from solders.pubkey import Pubkey

from k2node.crypto import Keypair
from k2node.settlement import transactions, wire
from k2node.settlement.local import LocalK2
from k2node.settlement.wire import Ix

CURVE = (1_000, 10_000, 100_000)
SLOT_MS = 300_000  # long enough to stake, sign and send 100,000 in one submission window
SERVICE_SLOT_MS = 60_000  # the longest `k2node k2` takes: 10,000 fit
SENDERS = 32  # at a time, as over HTTP: their syncs are shared


async def _staked_load(
    path: Path, n: int, slot_ms: int
) -> tuple[str, list[SoldersKeypair], Keypair]:
    """A task with `n` staked keys, made as if three slots ago: reopened now, round 0's
    submission window is open for a slot."""
    k2 = LocalK2.open(path, slot_ms=slot_ms, clock=lambda: time.time() - 3 * slot_ms / 1000)
    args = {
        "task_name": "load",
        "round_time": 3,
        "submission_window": 1,
        "audit_window": 1,
        "total_bounty_amount": 10,
        "bounty_amount_per_round": 1,
        "minimum_stake_amount": 0,
        "allowed_failed_distributions": 0,
    }
    payer = Keypair.generate()
    task_id = await create_task(k2, payer, args)
    await k2.airdrop(payer.pubkey, n * 2 * transactions.STAKING_EXTRA)
    pot = Pubkey.from_string((await k2.get_task_state(task_id))["stake_pot_account"])
    stakers = [SoldersKeypair() for _ in range(n)]
    blockhash = Hash.from_string((await k2.latest_blockhash())[0])
    task = Pubkey.from_string(task_id)
    pending = [
        wire.sign(
            transactions.stake(wire.signer(payer).pubkey(), key.pubkey(), task, pot, 1, "", False),
            wire.signer(payer),
            [key],
            blockhash,
        ).wire
        for key in stakers
    ]
    await _send_all(k2, pending)
    await k2.aclose()
    return task_id, stakers, payer


async def _send_all(k2: LocalK2, txs: list[bytes]) -> None:
    pending = list(txs)

    async def sender() -> None:
        while pending:
            await k2.send(pending.pop())

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


def _submissions(
    task_id: str, stakers: list[SoldersKeypair], payer: Keypair, blockhash: str
) -> list[bytes]:
    task, recent, pays = (
        Pubkey.from_string(task_id),
        Hash.from_string(blockhash),
        wire.signer(payer),
    )
    return [
        wire.sign(
            [
                transactions.round_action(
                    Ix.SUBMIT_TASK, task, k.pubkey(), submission="x" * 64, round=0
                )
            ],
            pays,
            [k],
            recent,
        ).wire
        for k in stakers
    ]


async def _in_process(tmp: Path, n: int) -> tuple[float, float]:
    """Seconds to take `n` submissions, and milliseconds to sign one."""
    task_id, stakers, payer = await _staked_load(tmp / f"k2-subs-{n}", n, SLOT_MS)
    k2 = LocalK2.open(tmp / f"k2-subs-{n}", slot_ms=SLOT_MS)  # real time now: slot 3
    blockhash, _ = await k2.latest_blockhash()
    started = time.perf_counter()
    txs = _submissions(task_id, stakers, payer, blockhash)
    signing_ms = (time.perf_counter() - started) * 1000 / n
    started = time.perf_counter()
    await _send_all(k2, txs)
    await k2.aclose()  # a snapshot the run started counts, as it does in the service
    return time.perf_counter() - started, signing_ms


async def bench_submissions(tmp: Path) -> None:
    print("K2 wire transactions: submissions in one round, local K2 in process, 32 senders")
    points, rate_10k = [], 0.0
    for n in CURVE:
        took, signing_ms = await _in_process(tmp, n)
        points.append((n, took))
        rate_10k = n / took if n == 10_000 else rate_10k
        print(
            f"  {n:>7,}: {took:6.2f} s ({n / took:,.0f}/s, checks and durable log included;"
            f" the node signs one in {signing_ms:.3f} ms)"
        )
        record("k2_curve", **{f"submissions_{n}_per_s": n / took})
    print(f"  time grows {growth(points)}; target >= 3,000/s, signing < 1 ms")
    over_http, refused, busy = await _over_http(tmp, 10_000)
    print(
        f"  k2node k2 over HTTP, 10,000 on 32 connections: {10_000 / over_http:,.0f}/s,"
        f" {refused} refused; the service busy {busy:.0%} of a core, the load generator"
        f" beside it (target: within 2x of in process, {rate_10k / 2:,.0f}/s here)"
    )
    record("k2_http", submissions_per_s=10_000 / over_http, in_process_10k_per_s=rate_10k)


async def _over_http(tmp: Path, n: int) -> tuple[float, int, float]:
    task_id, stakers, payer = await _staked_load(tmp / "k2-service", n, SERVICE_SLOT_MS)
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "k2node", "k2", "--port", str(port), "--data-dir", str(tmp / "k2-service")),
        *("--slot-ms", str(SERVICE_SLOT_MS), "--log-format", "json"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_rpc(session, url)
            answer = await rpc_post(session, url, "getLatestBlockhash")
            txs = _submissions(task_id, stakers, payer, answer["result"]["value"]["blockhash"])
            queue = [base64.b64encode(raw).decode() for raw in txs]
            refused = 0

            async def sender() -> None:
                nonlocal refused
                while queue:
                    reply = await rpc_post(
                        session, url, "sendTransaction", queue.pop(), {"encoding": "base64"}
                    )
                    refused += "error" in reply

            cpu_before = cpu_seconds(service.pid)
            started = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(SENDERS)))
            took = time.perf_counter() - started
            busy = (cpu_seconds(service.pid) - cpu_before) / took
    finally:
        await stop(service)
    return took, refused, busy
