"""A task whose bounty cannot pay a round is paused (no new work, no fees spent on it) with
one line, and resumed when refilled; rewards are claimed automatically above a threshold."""

from __future__ import annotations

from pathlib import Path

from solders.pubkey import Pubkey
from structlog.testing import capture_logs

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.examples.hello_task import HelloTask
from k2node.node.runtime import Node
from k2node.settlement import transactions
from k2node.settlement.local import LocalK2
from k2node.testing import TaskHarness
from tests.conftest import REPO, create_task, node_settings, sign_and_send, wait_for


def _config(path: Path, total_koii: int) -> Path:
    text = (REPO / "k2node" / "examples" / "config-task.yml").read_text()
    path.write_text(text.replace("total_bounty_amount: 1000", f"total_bounty_amount: {total_koii}"))
    return path


def _submitted_rounds(state: dict[str, object], key: str) -> list[int]:
    subs = state["submissions"]
    assert isinstance(subs, dict)
    return sorted(int(r) for r, by in subs.items() if key in by)


async def test_an_empty_bounty_pauses_new_work_until_refilled(tmp_path: Path) -> None:
    config = _config(tmp_path / "config-task.yml", total_koii=3)  # three rounds of 1 KOII
    with capture_logs() as logs:
        async with TaskHarness.start(HelloTask, tmp_path / "h", 2, config=config, seed=4) as h:
            await h.run_rounds(9)
            state = await h.state()
            assert int(state["total_bounty_amount"]) == 0
            paused = [e for e in logs if e["event"] == "task_paused"]
            assert len(paused) == 2  # one line per node
            paused_at = paused[0]["round"]
            for node in h.nodes:
                submitted = _submitted_rounds(state, node.staking_key)
                # nothing new once paused: the last submission is of the round before
                assert max(submitted) == paused_at - 2, submitted
            # refilled: work and submissions start again, one line each
            funder, payer = Keypair.generate(), Keypair.generate()
            await h.k2.airdrop(payer.pubkey, 20 * ROE_PER_KOII)
            fund = transactions.fund_task(
                Pubkey.from_string(payer.pubkey),
                Pubkey.from_string(funder.pubkey),
                Pubkey.from_string(h.task_id),
                Pubkey.from_string(state["stake_pot_account"]),
                10 * ROE_PER_KOII,
            )
            await sign_and_send(h.k2, fund, payer, funder)
            await h.run_rounds(3)
            state = await h.state()
            resumed = [e for e in logs if e["event"] == "task_resumed"]
            assert len(resumed) == 2
            for node in h.nodes:
                assert max(_submitted_rounds(state, node.staking_key)) >= resumed[0]["round"]


async def test_rewards_are_claimed_once_they_reach_the_threshold(
    tmp_path: Path, fast_chain: LocalK2
) -> None:
    task_id = await create_task(
        fast_chain, Keypair.generate(), round_time=20, submission_window=8, audit_window=8
    )
    settings = node_settings(tmp_path / "n", task_id, auto_claim=2 * ROE_PER_KOII)
    with capture_logs() as logs:
        async with Node.manage(settings, fast_chain) as node:
            main = node.wallets.main.pubkey
            before = await fast_chain.get_balance(main)
            await wait_for(lambda: any(e["event"] == "rewards_claimed" for e in logs), 60)
            after = await fast_chain.get_balance(main)
    claimed = next(e for e in logs if e["event"] == "rewards_claimed")
    assert claimed["amount"] >= 2 * ROE_PER_KOII
    assert after >= before + claimed["amount"] - 1_000_000  # less the fees paid meanwhile
