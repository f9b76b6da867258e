"""`POST /namespace-wrapper` and the node API: contract answers, and bad or hostile input."""

from __future__ import annotations

import base64
import dataclasses
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from solders.pubkey import Pubkey

from k2node.contract.jsjson import stringify
from k2node.crypto import Keypair, payload_signing
from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.http.namespace_rpc import METHODS
from k2node.settlement.local import LocalK2
from k2node.task.namespace import NamespaceError, NamespaceWrapper
from k2node.task.peers import Peer
from tests.conftest import FakeClock
from tests.namespace_env import Env, namespace_env


@pytest.fixture
async def env(tmp_path: Path, k2: LocalK2, clock: FakeClock) -> AsyncIterator[Env]:
    async with namespace_env(tmp_path, k2, clock) as served:
        yield served


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
