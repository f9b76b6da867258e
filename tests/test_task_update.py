"""UpdateTask on the embedded K2: a new version of a task takes over its remaining bounty,
the old one stops and names the new one, and only its manager can do it, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair as SoldersKeypair
from solders.pubkey import Pubkey

from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.node.provision import update_task
from k2node.settlement import transactions
from k2node.settlement.base import TransactionError
from k2node.settlement.local import LocalK2
from tests.conftest import TASK_ARGS, FakeClock, create_task, send, sign_and_send, stake

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "k2node" / "examples" / "config-task.yml"
NEW_FIELDS: dict[str, Any] = {k: v for k, v in TASK_ARGS.items() if k != "total_bounty_amount"} | {
    "task_description": "version two",
    "task_metadata": "",
    "local_vars": "",
}


def _update(
    manager: Keypair, state: dict[str, Any], fields: dict[str, Any] | None = None
) -> tuple[list[Any], SoldersKeypair, Pubkey]:
    new_task, new_pot = SoldersKeypair(), Pubkey.new_unique()
    old = (Pubkey.from_string(state["task_id"]), Pubkey.from_string(state["stake_pot_account"]))
    built = transactions.update_task(
        Pubkey.from_string(manager.pubkey),
        old,
        (new_task.pubkey(), new_pot),
        fields or NEW_FIELDS,
        1000,
    )
    return built, new_task, new_pot


async def test_the_new_version_takes_over_the_bounty_and_the_old_one_stops(
    k2: LocalK2, clock: FakeClock
) -> None:
    manager, node = Keypair.generate(), Keypair.generate()
    old_id = await create_task(k2, manager)
    await stake(k2, node, old_id)
    old = await k2.get_task_state(old_id)
    old_pot = await k2.get_balance(old["stake_pot_account"])
    built, new_task, new_pot = _update(manager, old)
    await sign_and_send(k2, built, manager, new_task)

    new_id = str(new_task.pubkey())
    new = await k2.get_task_state(new_id)
    bounty = TASK_ARGS["total_bounty_amount"]
    assert new["total_bounty_amount"] == bounty
    assert new["task_description"] == "version two" and new["task_manager"] == manager.pubkey
    assert new["stake_pot_account"] == str(new_pot) and not new["is_migrated"]
    old = await k2.get_task_state(old_id)
    assert old["is_migrated"] and old["migrated_to"] == new_id
    assert not old["is_active"] and old["total_bounty_amount"] == 0
    assert await k2.get_balance(old["stake_pot_account"]) == old_pot - bounty
    assert await k2.get_balance(str(new_pot)) == bounty + transactions.STAKE_POT_SEED_LAMPORTS

    # the old version takes no more work, and its stakers take their stake out of it
    clock.to_slot(k2, 20)
    with pytest.raises(TransactionError, match="task is not active"):
        await send(k2, node, "SubmitTask", old_id, submission="late", round=0)
    before = await k2.get_balance(node.pubkey)
    await send(k2, node, "Withdraw", old_id)
    assert await k2.get_balance(node.pubkey) == before + 2 * ROE_PER_KOII


async def test_only_the_manager_updates_a_task_and_only_once(k2: LocalK2) -> None:
    manager, stranger = Keypair.generate(), Keypair.generate()
    await k2.airdrop(stranger.pubkey, 10 * ROE_PER_KOII)
    old_id = await create_task(k2, manager)
    state = await k2.get_task_state(old_id)

    built, new_task, _ = _update(stranger, state)
    with pytest.raises(TransactionError, match="only the task manager can update a task"):
        await sign_and_send(k2, built, stranger, new_task)
    assert await k2.get_account(str(new_task.pubkey())) is None  # the whole transaction undone

    greedy = NEW_FIELDS | {"bounty_amount_per_round": TASK_ARGS["total_bounty_amount"] + 1}
    built, new_task, _ = _update(manager, state, greedy)
    with pytest.raises(TransactionError, match="bounty_amount_per_round exceeds"):
        await sign_and_send(k2, built, manager, new_task)
    assert not (await k2.get_task_state(old_id))["is_migrated"]

    built, new_task, _ = _update(manager, state)
    await sign_and_send(k2, built, manager, new_task)
    built, again, _ = _update(manager, state)
    with pytest.raises(TransactionError, match=f"already updated to {new_task.pubkey()}"):
        await sign_and_send(k2, built, manager, again)

    # the deploy helper names the task's manager before it sends anything
    with pytest.raises(TransactionError, match=f"managed by {manager.pubkey}"):
        await update_task(k2, stranger, str(new_task.pubkey()), EXAMPLE_CONFIG)


async def test_update_from_a_task_config_names_the_new_executable(k2: LocalK2) -> None:
    manager = Keypair.generate()
    old_id = await create_task(k2, manager)
    cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    new_id = await update_task(k2, manager, old_id, EXAMPLE_CONFIG, cid)
    new = await k2.get_task_state(new_id)
    assert new["task_audit_program"] == cid and new["task_executable_network"] == "IPFS"
    assert new["task_name"] == "k2node hello"
    assert (await k2.get_task_state(old_id))["migrated_to"] == new_id
