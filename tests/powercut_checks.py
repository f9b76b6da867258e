"""What must hold after a run of power cuts (tests/powercut_net.py), read from the journal
the test kept outside the machine and from the K2 as its disk has it at the end."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter, defaultdict
from typing import Any

import orjson
from solders.transaction import Transaction

from k2node.contract.rounds import Schedule
from k2node.contract.task_state import PAYOUT_SUCCESSFUL
from k2node.settlement.local import LocalK2
from k2node.settlement.program import LAMPORTS_PER_SIGNATURE
from k2node.settlement.snapshot import log_key
from k2node.store import Store
from tests.powercut_k2 import ActionKey, Journal
from tests.powercut_net import SLOT_MS, Net


def history(journal: Journal) -> list[dict[str, Any]]:
    """Every change the K2 ever kept, in order: its log, snapshots notwithstanding."""
    seqs = sorted(journal.history)
    # kept in order: a later entry is never on disk without every earlier one
    assert seqs == list(range(1, len(seqs) + 1)), f"the K2's log has gaps: {_gaps(seqs)[:5]}"
    return [orjson.loads(journal.history[s]) for s in seqs]


def _gaps(seqs: list[int]) -> list[int]:
    have = set(seqs)
    return [s for s in range(1, max(seqs, default=0)) if s not in have]


def final_world(net: Net) -> tuple[dict[str, Any], int]:
    """The K2's world as it reopens from its disk after the last cut, checked against the
    same world replayed from the whole history into a new K2 (snapshots lose or add
    nothing); and the round it is in."""

    async def both() -> tuple[dict[str, Any], dict[str, Any], int]:
        k2 = net.open_k2(lambda: net.now or 0.0)
        reopened = k2._world.to_json()
        round_ = Schedule.of(k2._world.task(net.task_id)).round_of(k2.current_slot())
        replay = net.folder / "replayed-k2"
        store = Store.open(replay)
        meta = k2._store.get("meta")
        store.put_many({"meta": meta} | {log_key(e["seq"]): e for e in history(net.journal)})
        again = LocalK2.open(replay, SLOT_MS, clock=lambda: net.now or 0.0)
        return reopened, again._world.to_json(), round_

    reopened, replayed, round_ = asyncio.run(both())
    assert reopened == replayed, "the K2 reopened to another world than its history makes"
    return reopened, round_


def check_supply(world: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """Every lamport is the faucet's, less the fees burned."""
    faucet = fees = 0
    for entry in entries:
        if "airdrop" in entry:
            faucet += entry["airdrop"][1]
        else:
            tx = Transaction.from_bytes(base64.b64decode(entry["tx"]))
            fees += LAMPORTS_PER_SIGNATURE * len(tx.signatures)
    assert sum(world["balances"].values()) == faucet - fees


def applied_signatures(entries: list[dict[str, Any]]) -> set[str]:
    return {
        str(Transaction.from_bytes(base64.b64decode(e["tx"])).signatures[0])
        for e in entries
        if "tx" in e
    }


def check_each_action_once(journal: Journal, applied: set[str]) -> None:
    """No action was applied twice, and none was signed again once it had been applied
    (the one applied is the last signed: an earlier one had expired unapplied)."""
    signed: dict[ActionKey, list[str]] = defaultdict(list)
    for sent in journal.sent:
        for action in sent.actions:
            if action[0] != "ClaimReward" and sent.signature not in signed[action]:
                signed[action].append(sent.signature)
    for action, signatures in signed.items():
        landed = [s for s in signatures if s in applied]
        assert len(landed) <= 1, f"{action} applied {len(landed)} times"
        assert not landed or landed[0] == signatures[-1], f"{action} signed again after it landed"


def check_none_lost(journal: Journal, applied: set[str], nodes: list[str], rounds: range) -> None:
    """Each round: every node's submission, one distribution list naming every node, and
    its payout made."""
    done: Counter[tuple[str, str, int | None]] = Counter()
    seen: set[str] = set()
    for sent in journal.sent:
        if sent.signature in applied and sent.signature not in seen:
            seen.add(sent.signature)
            for name, signer, round_, _detail in sent.actions:
                done[(name, signer, round_)] += 1
    counted = Counter((name, r) for name, _signer, r in done.elements())
    for r in rounds:
        missing = [k[:8] for k in nodes if done[("SubmitTask", k, r)] == 0]
        assert not missing, f"round {r}: no submission from {missing}"
        assert counted[("SubmitDistributionList", r)] == 1, f"round {r}: lists"
        assert journal.records.get(r) == PAYOUT_SUCCESSFUL, f"round {r}: {journal.records.get(r)}"
        assert set(journal.paid.get(r, {})) == set(nodes), f"round {r}: {journal.paid.get(r)}"
