"""What the node signs for a task through `POST /namespace-wrapper`: data, its submission and
votes, sent once each, and transactions the task built, for this task and node alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from k2node.crypto import Keypair, verify_signature
from k2node.settlement import transactions, wire
from k2node.settlement.local import LocalK2
from k2node.settlement.wire import Ix
from tests.conftest import FakeClock, send
from tests.namespace_env import Env, namespace_env


@pytest.fixture
async def env(tmp_path: Path, k2: LocalK2, clock: FakeClock) -> AsyncIterator[Env]:
    async with namespace_env(tmp_path, k2, clock) as served:
        yield served


async def test_sign_and_verify(env: Env) -> None:
    status, body = await env.call("signData", {"a": 1})
    assert status == 200
    signed = body["response"]
    assert verify_signature(signed, env.ctx.agent.staking.pubkey) == {"data": '{"a":1}'}
    me = env.ctx.agent.staking.pubkey
    assert await env.call("verifySignedData", signed, me) == (
        200,
        {"response": {"data": '{"a":1}'}},
    )
    status, body = await env.call("verifySignedData", signed, env.peer.pubkey)
    assert body == {"response": {"error": "Invalid signature"}}


async def test_submission_is_sent_once_and_checked_first(env: Env) -> None:
    env.clock.to_slot(env.k2, 5)
    status, body = await env.call("checkSubmissionAndUpdateRound", "v", 0)
    assert status == 422 and "accepted in slots [20, 28)" in body["message"]
    status, body = await env.call("checkSubmissionAndUpdateRound", "x" * 513, 0)
    assert status == 422 and "513 bytes" in body["message"]
    status, body = await env.call("checkSubmissionAndUpdateRound", {"not": "a string"}, 0)
    assert status == 422
    env.clock.to_slot(env.k2, 20)
    sent_before = env.k2.tx_count.get("SubmitTask", 0)
    assert (await env.call("checkSubmissionAndUpdateRound", "v", 0))[0] == 200
    status, body = await env.call("checkSubmissionAndUpdateRound", "v", 0)
    assert status == 200 and body["response"]["already"] is True
    # one refused attempt (outside the window) and one accepted: nothing sent twice
    assert env.k2.tx_count["SubmitTask"] == sent_before + 1


async def test_votes_accept_bn_keys(env: Env) -> None:
    env.clock.to_slot(env.k2, 20)
    await send(env.k2, env.peer, "SubmitTask", env.ctx.task_id, submission="x", round=0)
    env.clock.to_slot(env.k2, 28)
    candidate = {"_bn": env.peer.public_bytes.hex()}
    status, body = await env.call("auditSubmission", candidate, False, 0)
    assert status == 200 and await env.k2.transaction_applied(body["response"]["signature"])
    state = await env.k2.get_task_state(env.ctx.task_id, {"is_submission_required": True})
    trigger = state["submissions_audit_trigger"]["0"][env.peer.pubkey]
    assert trigger["trigger_by"] == env.ctx.agent.staking.pubkey  # raised by this node
    status, body = await env.call("auditSubmission", env.peer.pubkey, "yes", 0)
    assert status == 422 and "isValid" in body["message"]


def _task_built(env: Env, instructions: list[Instruction], fee_payer: Pubkey) -> dict[str, Any]:
    """A transaction as the wrapper serializes it: unsigned, a Node.js Buffer's JSON."""
    blockhash = env.k2.blockhash_of(env.k2.current_slot())
    message = Message.new_with_blockhash(instructions, fee_payer, blockhash)
    return {"type": "Buffer", "data": list(bytes(Transaction.new_unsigned(message)))}


async def test_a_task_built_transaction_is_signed_only_for_this_task_and_node(env: Env) -> None:
    env.clock.to_slot(env.k2, 20)
    main = Pubkey.from_string(env.ctx.agent.main.pubkey)
    me = Pubkey.from_string(env.ctx.agent.staking.pubkey)
    task = Pubkey.from_string(env.ctx.task_id)
    submit = transactions.round_action(Ix.SUBMIT_TASK, task, me, submission="built", round=0)
    status, body = await env.call(
        "sendAndConfirmTransactionWrapper", _task_built(env, [submit], main), []
    )
    assert status == 200 and await env.k2.transaction_applied(body["response"])
    other_task = transactions.round_action(
        Ix.SUBMIT_TASK, Pubkey.new_unique(), me, submission="x", round=0
    )
    as_peer = transactions.round_action(
        Ix.SUBMIT_TASK, task, Pubkey.from_string(env.peer.pubkey), submission="x", round=0
    )
    drain = transfer(
        TransferParams(from_pubkey=main, to_pubkey=Pubkey.new_unique(), lamports=10**9)
    )
    pot = await env.ctx.agent.stake_pot()
    thief = Pubkey.new_unique()
    claim = transactions.claim(task, me, pot, thief)  # the node's rewards to someone else
    withdraw = transactions.round_action(Ix.WITHDRAW, task, me)
    fund = wire.instruction(
        Ix.FUND_TASK, {"amount": 1}, {"task": task, "signer": me, "stake_pot": pot}
    )
    padded = Instruction(
        submit.program_id, submit.data, [*submit.accounts, AccountMeta(thief, False, True)]
    )
    readonly = Instruction(
        submit.program_id,
        submit.data,
        [AccountMeta(task, False, False), *submit.accounts[1:]],
    )
    refusals = {
        "may not have the node sign CLAIM_REWARD": _task_built(env, [claim], main),
        "may not have the node sign WITHDRAW": _task_built(env, [withdraw], main),
        "may not have the node sign FUND_TASK": _task_built(env, [fund], main),
        "takes 3 accounts, got 4": _task_built(env, [padded], main),
        "not the ones the node sends": _task_built(env, [readonly], main),
        "only call the task program": _task_built(env, [drain], main),
        "only act for this task": _task_built(env, [other_task], main),
        "only act for this task and node": _task_built(env, [as_peer], main),
        "must pay the fee": _task_built(env, [submit], me),
        "Buffer": {"type": "Buffer", "data": [256]},
        "serialized": 5,
        "not a transaction": {"type": "Buffer", "data": [1, 2, 3]},
    }
    for message, serialized in refusals.items():
        status, body = await env.call("sendAndConfirmTransactionWrapper", serialized, [])
        assert status == 422 and message in body["message"], (message, body)


async def test_transfers_from_the_main_wallet_need_the_operators_leave(env: Env) -> None:
    to = Keypair.generate().pubkey
    status, body = await env.call("sendTransaction", env.ctx.agent.main.pubkey, to, 5_000)
    assert status == 422 and "K2NODE_TASK_TRANSFERS" in body["message"]
    env.served.context = replace(env.ctx, transfers_allowed=True)
    status, body = await env.call("sendTransaction", env.ctx.agent.main.pubkey, to, 5_000)
    assert status == 200 and await env.k2.get_balance(to) == 5_000
    assert (await env.call("sendTransaction", env.ctx.agent.main.pubkey, to, -1))[0] == 422
