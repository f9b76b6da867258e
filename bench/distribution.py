"""The distribution rule at scale: selection of the distribution submitter, generation of
the list and its audit (regenerated and compared), from 1,000 to 1,000,000 submitters."""

from __future__ import annotations

import time
from pathlib import Path

from common import growth, record  # bench/, beside this file

from k2node.contract.distribution import default_distribution, select_distribution_submitter
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair

CURVE = (1_000, 10_000, 100_000, 1_000_000)


def _once(n: int) -> tuple[float, float, float]:
    keys = [Keypair.generate().pubkey for _ in range(min(n, 2000))]
    names = [f"{keys[i % len(keys)]}{i}" for i in range(n)]
    entries = {k: {"submission_value": f"v{i}", "slot": i, "round": 2} for i, k in enumerate(names)}
    submissions = {"0": entries, "1": entries, "2": entries}
    stakes = dict.fromkeys(names, ROE_PER_KOII)
    started = time.perf_counter()
    select_distribution_submitter(submissions, {}, {}, 2, False)
    selected = time.perf_counter() - started
    started = time.perf_counter()
    dist = default_distribution(entries, {}, stakes, 10**12)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    if default_distribution(entries, {}, stakes, 10**12) != dist:
        raise AssertionError("the audit regenerated another list")
    audited = time.perf_counter() - started
    return selected, generated, audited


async def bench_distribution(_: Path) -> None:
    print("distribution: select, generate and audit, by submitters in the round")
    points = []
    for n in CURVE:
        selected, generated, audited = _once(n)
        total = selected + generated + audited
        points.append((n, total))
        print(
            f"  {n:>9,}: select {selected * 1000:6.0f} ms  generate {generated * 1000:6.0f} ms"
            f"  audit {audited * 1000:6.0f} ms  total {total:6.2f} s"
        )
        record("distribution_curve", **{f"submitters_{n}_s": total})
    print(f"  time grows {growth(points)}; targets: 100,000 < 1 s, 1,000,000 < 10 s")
