"""`POST /namespace-wrapper` and the node API: contract answers, and bad or hostile input."""

from __future__ import annotations

import base64
import dataclasses
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from k2node.contract.jsjson import stringify
from k2node.crypto import Keypair, payload_signing, verify_signature
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.agent import TaskAgent
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.namespace_rpc import METHODS
from k2node.node.ledger import Ledger
from k2node.settlement import transactions, wire
from k2node.settlement.local import LocalK2
from k2node.settlement.wire import Ix
from k2node.store import Store
from k2node.task.namespace import NamespaceError, NamespaceWrapper
from k2node.task.peers import Peer
from tests.conftest import FakeClock, create_task, send, stake


@dataclass
class Env:
    client: TestClient[Any, Any]
    ctx: TaskContext
    k2: LocalK2
    clock: FakeClock
    store: Store
    peer: Keypair
    served: _Stopped

    async def call(self, *args: Any, secret: str | None = None) -> tuple[int, Any]:
        body = {
            "args": list(args),
            "taskId": self.ctx.task_id,
            "secret": self.ctx.secret if secret is None else secret,
        }
        resp = await self.client.post("/namespace-wrapper", json=body)
        return resp.status, await resp.json()


@pytest.fixture
async def env(tmp_path: Path, k2: LocalK2, clock: FakeClock) -> AsyncIterator[Env]:
    manager, me, peer = Keypair.generate(), Keypair.generate(), Keypair.generate()
    task_id = await create_task(k2, manager)
    await stake(k2, me, task_id)
    await stake(k2, peer, task_id)
    store = Store.open(tmp_path / "node-db")
    agent = TaskAgent(task_id, k2, Ledger(store, k2), me, manager, tmp_path / "task")
    agent.base_path.mkdir()
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    ctx = TaskContext(agent, "test task", "s3cret-s3cret-s3cret", 10, "http://127.0.0.1:1", ipfs)
    served = _Stopped(ctx)
    api = NodeApi({task_id: served}, manager.pubkey, "", EventHub())
    client = TestClient(TestServer(api.app()))
    await client.start_server()
    yield Env(client, ctx, k2, clock, store, peer, served)
    await client.close()
    store.close()
    ipfs.close()


@dataclass
class _Stopped:
    """A task the node knows but whose process is not running."""

    context: TaskContext
    running: bool = False
    server_socket: Path | None = None
    server_port: int = 0
    max_request_body: int | None = None

    async def manual_phase(self, name: str, round_: int, retry: bool) -> dict[str, Any]:
        return {"delivered": False}


async def test_reads_answer_in_contract_shapes(env: Env) -> None:
    env.clock.to_slot(env.k2, 21)
    assert await env.call("getCurrentSlot") == (200, {"response": 21})
    assert await env.call("getRound") == (200, {"response": 1})
    assert await env.call("getAverageSlotTime") == (200, {"response": 1000.0})
    status, body = await env.call("getTaskState", {"is_stake_list_required": True})
    assert status == 200 and len(body["response"]["stake_list"]) == 2
    assert body["response"]["submissions"] == {}
    status, body = await env.call("getTaskSubmissionInfo", 0)
    assert body == {"response": {"submissions": {"0": {}}, "submissions_audit_trigger": {"0": {}}}}
    status, body = await env.call("getTaskDistributionInfo", 0)
    assert set(body["response"]) == {
        "distribution_rewards_submission",
        "distributions_audit_trigger",
        "distributions_audit_record",
    }
    # a Python task signs through the node: it sees the staking public key alone
    status, body = await env.call("getSubmitterAccount")
    shown = body["response"]["_keypair"]
    assert "secretKey" not in shown and shown["publicKey"]["_bn"] == (
        env.ctx.agent.staking.public_bytes.hex()
    )
    status, body = await env.call("getTaskLevelDBPath")
    assert status == 200 and body["response"].endswith("/db")
    assert (await env.call("getDistributionList", env.peer.pubkey, 0)) == (200, {"response": None})


async def test_a_javascript_task_is_handed_the_keypair_its_wrapper_signs_with(
    env: Env,
) -> None:
    javascript = dataclasses.replace(env.ctx, javascript=True)
    account = await METHODS["getSubmitterAccount"](javascript)
    secret = account["_keypair"]["secretKey"]
    assert bytes(secret[str(i)] for i in range(64)) == env.ctx.agent.staking.secret_bytes


async def test_the_rpc_answers_only_this_machine(env: Env) -> None:
    body = {"args": ["getRound"], "taskId": env.ctx.task_id, "secret": env.ctx.secret}
    proxied = {"X-Forwarded-For": "203.0.113.9"}  # through a proxy: not the node's own task
    resp = await env.client.post("/namespace-wrapper", json=body, headers=proxied)
    assert resp.status == 403 and "own tasks only" in (await resp.json())["message"]


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


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{", 422, "JSON object"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"taskId": "t", "secret": "s"}', 422, "args"),
        (b'{"args": [], "taskId": "t", "secret": "s"}', 422, "args"),
        (b'{"args": [5], "taskId": "t", "secret": "s"}', 422, "args"),
        (b'{"args": ["getCurrentSlot"], "secret": "s"}', 422, "taskId"),
        (b'{"args": ["getCurrentSlot"], "taskId": "t"}', 422, "secret"),
        (
            b'{"args": ["getCurrentSlot"], "taskId": "nope", "secret": "s"}',
            401,
            "Invalid secret provided",
        ),
    ],
)
async def test_malformed_bodies(env: Env, raw: bytes, status: int, message: str) -> None:
    resp = await env.client.post("/namespace-wrapper", data=raw)
    assert resp.status == status
    assert message in (await resp.json())["message"]


async def test_wrong_secret_unknown_method_and_arity(env: Env) -> None:
    assert await env.call("getCurrentSlot", secret="wrong") == (
        401,
        {"message": "Invalid secret provided"},
    )
    status, body = await env.call("mintMeSomeKoii")
    assert status == 422 and "unknown method" in body["message"]
    status, body = await env.call("getTaskSubmissionInfo")
    assert status == 422 and "wrong number of arguments" in body["message"]
    status, body = await env.call("getTaskSubmissionInfo", -1)
    assert status == 422 and "round" in body["message"]
    status, body = await env.call("getTaskState", "not options")
    assert status == 422


async def test_oversized_body_is_refused(env: Env) -> None:
    big = io.BytesIO(b"x" * (9 * 1024 * 1024))
    resp = await env.client.post("/namespace-wrapper", data=big)
    assert resp.status == 413
    assert "message" in await resp.json()


async def test_fs_is_confined_to_the_task_folder(env: Env, tmp_path: Path) -> None:
    assert (await env.call("fs", "writeFile", "notes/a.txt", "hello"))[0] == 200
    assert await env.call("fs", "readFile", "notes/a.txt") == (200, {"response": "hello"})
    assert await env.call("fs", "readdir", "notes") == (200, {"response": ["a.txt"]})
    secret_file = tmp_path / "outside.txt"
    secret_file.write_text("secret")
    for path in ("../outside.txt", str(secret_file), "notes/../../outside.txt", "", "a\x00b"):
        status, body = await env.call("fs", "readFile", path)
        assert status == 422, path
    status, body = await env.call("fs", "chmod", "notes/a.txt")
    assert status == 422 and "not supported" in body["message"]
    status, body = await env.call("fs", "readFile", "missing.txt")
    assert status == 422


async def test_fs_streams_cross_json_as_the_wrapper_sees_them(env: Env) -> None:
    assert (await env.call("fs", "writeFile", "img.bin", "\u00ff!"))[0] == 200
    status, body = await env.call("fsReadStream", "img.bin")
    assert status == 200 and body["response"] == {"type": "Buffer", "data": [195, 191, 33]}
    status, body = await env.call("fsWriteStream", "out/log.txt")
    assert status == 200 and body["response"] == {"path": "out/log.txt", "flags": "w"}
    assert await env.call("fs", "readFile", "out/log.txt") == (200, {"response": ""})
    for hostile in ("../x", "", 5):
        assert (await env.call("fsReadStream", hostile))[0] == 422
        assert (await env.call("fsWriteStream", hostile))[0] == 422
    (env.ctx.agent.base_path / "big.bin").write_bytes(bytes(2 * 1024 * 1024))
    status, body = await env.call("fsReadStream", "big.bin")
    assert status == 422 and "at most" in body["message"]


async def test_node_routes(env: Env) -> None:
    resp = await env.client.get("/tasks")
    assert await resp.json() == [{"TaskName": "test task", "TaskID": env.ctx.task_id}]
    resp = await env.client.get(f"/task/{env.ctx.task_id}/value")
    assert resp.status == 422
    assert await resp.json() == {"message": f"Task {env.ctx.task_id} not running"}
    resp = await env.client.get("/nothing-here")
    assert resp.status == 404 and "message" in await resp.json()
    resp = await env.client.post(f"/admin/tasks/{env.ctx.task_id}/phase", json={"x": 1})
    assert resp.status == 422
    resp = await env.client.get("/namespace-wrapper")  # a 405 says what is allowed
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert "message" in await resp.json()


async def test_ipfs_upload_and_get(env: Env) -> None:
    files = {"a.json": base64.b64encode(b'{"x":1}').decode()}
    status, body = await env.call("ipfsUpload", files, 1)
    assert status == 200 and body["response"].startswith("bafy")
    directory = body["response"]
    assert await env.call("ipfsGet", directory, "a.json") == (
        200,
        {"response": base64.b64encode(b'{"x":1}').decode()},
    )
    status, body = await env.call("ipfsUploadFile", base64.b64encode(b"hello\n").decode())
    assert body == {"response": "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"}
    for bad in (
        ("ipfsUpload", {"a": "%%%"}),
        ("ipfsUpload", {}),
        ("ipfsUpload", files, 7),
        ("ipfsGet", directory, "a.json", 10**12),
        ("ipfsGet", directory, "a.json", 3),
        ("ipfsGet", "not-a-cid"),
        ("ipfsGet", directory, "missing"),
    ):
        status, body = await env.call(*bad)
        assert status == 422 and body["message"], bad


async def test_a_task_sees_its_peers_and_not_itself(env: Env) -> None:
    async with aiohttp.ClientSession() as session:
        url = str(env.client.make_url("")).rstrip("/")
        ns = NamespaceWrapper(env.ctx.task_id, env.ctx.secret, url, session)
        assert await ns.peers() == [Peer(env.peer.pubkey, "http://127.0.0.1:1")]


async def test_signed_submissions_on_ipfs(env: Env, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        ns = NamespaceWrapper(
            env.ctx.task_id, env.ctx.secret, str(env.client.make_url("")).rstrip("/"), session
        )
        me = env.ctx.agent.staking.pubkey
        cid = await ns.upload_signed_submission(3, {"v": [1, 2]})
        assert await ns.fetch_signed_submission(cid, 3, me) == {"v": [1, 2]}
        assert await ns.fetch_signed_submission(cid, 3, env.peer.pubkey) is None  # not theirs
        assert await ns.fetch_signed_submission(cid, 4, me) is None  # wrong round's file
        assert await ns.fetch_signed_submission("QmNotACid", 3, me) is None
        # a file whose signature covers other content
        signed = payload_signing("0" * 64, env.ctx.agent.staking)
        forged = stringify({"signedMessage": signed, "submission": {"v": [1, 2]}})
        forged_cid = await ns.ipfs_upload({"submissionValues3.json": forged})
        assert await ns.fetch_signed_submission(forged_cid, 3, me) is None
        json_cid = await ns.ipfs_upload_json({"k": [1, "ü"]}, "v.json", 1)
        assert await ns.ipfs_get_json(json_cid, "v.json") == {"k": [1, "ü"]}
        local = tmp_path / "report.txt"
        local.write_bytes(b"report")
        file_cid = await ns.ipfs_upload_file(local)
        assert await ns.ipfs_get(file_cid, "report.txt") == b"report"
        with pytest.raises(NamespaceError, match="maxBytes"):
            await ns.ipfs_get(file_cid, "report.txt", max_bytes=0)


async def test_admin_phase_calls_need_loopback_or_the_token(tmp_path: Path) -> None:
    api = NodeApi({}, "main", "t0ken", EventHub())
    client = TestClient(TestServer(api.app()))
    await client.start_server()
    url = "/admin/tasks/x/phase"
    proxied = {"X-Forwarded-For": "203.0.113.9"}  # seen through a proxy: not loopback
    assert (await client.post(url, json={}, headers=proxied)).status == 403
    wrong = proxied | {"Authorization": "Bearer nope"}
    assert (await client.post(url, json={}, headers=wrong)).status == 403
    right = proxied | {"Authorization": "Bearer t0ken"}
    assert (await client.post(url, json={}, headers=right)).status == 404  # no such task
    await client.close()


async def test_node_registration(env: Env) -> None:
    task = env.ctx.task_id
    now = int(time.time() * 1000)

    def registration(key: Keypair, stamp: int, signer: Keypair | None = None) -> dict[str, str]:
        body = {"url": "http://127.0.0.1:30017", "timestamp": stamp}
        return {"signature": payload_signing(body, signer or key), "publicKey": key.pubkey}

    async def register(body: Any) -> int:
        return (await env.client.post(f"/register-node/{task}", json=body)).status

    assert await register(registration(env.peer, now)) == 200
    assert await register(registration(env.peer, now)) == 409  # duplicate
    assert await register(registration(env.peer, now - 1)) == 409  # older than held
    assert await register(registration(env.peer, now + 1)) == 200  # newer replaces
    assert await register(registration(env.peer, now - 10 * 60 * 1000)) == 409  # stale
    stranger = Keypair.generate()
    assert await register(registration(env.peer, now + 2, signer=stranger)) == 409
    assert await register(registration(stranger, now)) == 409  # not staked
    for bad in ({}, {"signature": 5}, {"signature": "x", "publicKey": "nope"}, [1]):
        assert await register(bad) == 422
    resp = await env.client.post("/register-node/unknown", json=registration(env.peer, now))
    assert resp.status == 404
    nodes = await (await env.client.get(f"/nodes/{task}")).json()
    assert [(n["submitterPubkey"], n["data"]["timestamp"]) for n in nodes] == [
        (env.peer.pubkey, now + 1)
    ]
    assert (await env.client.get("/nodes/unknown")).status == 404


async def test_the_newest_wrappers_chain_reads(env: Env) -> None:
    task_id = env.ctx.task_id
    status, body = await env.call("getProgramAccounts")
    assert status == 200 and [a["pubkey"] for a in body["response"]] == [task_id]
    status, body = await env.call(
        "getTaskStateById", task_id, {"is_stake_list_required": True}, "KOII"
    )
    assert status == 200 and len(body["response"]["stake_list"]) == 2
    for bad in ((task_id, {}, "KPL"), (str(Pubkey.new_unique()), {}, "KOII"), (5, {}, "KOII")):
        assert (await env.call("getTaskStateById", *bad))[0] == 422
    assert (await env.call("getSubmitterAccount", "KOII"))[0] == 200
    assert (await env.call("getSubmitterAccount", "KPL"))[0] == 422


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
