"""A webpacked JavaScript template task (tests/js_hello: the bundled example's logic in
JavaScript) run by its id, and Python and JavaScript copies of the example on one task.

Where Node.js and npm exist, the project's packages (webpack, express, ws...) are installed
once into ~/.cache/k2node-tests/hello-js and the bundle is built once per run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import base58
import pytest

from k2node.contract.distribution import (
    default_distribution,
    distribution_matches,
    safety_check,
    select_distribution_submitter,
)
from k2node.contract.jsjson import stringify
from k2node.contract.units import ROE_PER_KOII
from k2node.crypto import Keypair
from k2node.examples.hello_task import DIFFICULTY, proof_digest
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.provision import deploy_task
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import (
    REPO,
    VECTORS,
    RecordingK2,
    create_task,
    node_settings,
    npm_modules,
    wait_for,
)

HELLO = REPO / "tests" / "js_hello"
RULES_SCRIPT = REPO / "tests" / "js" / "hello_rules.mjs"
FAST_ROUNDS: dict[str, Any] = {"round_time": 20, "submission_window": 8, "audit_window": 8}
EVERYTHING = {
    "is_submission_required": True,
    "is_distribution_required": True,
    "is_available_balances_required": True,
    "is_stake_list_required": True,
}


def _modules() -> Path:
    """The project's node_modules: each package of its package.json, installed once."""
    manifest = json.loads((HELLO / "package.json").read_text())
    modules = Path()
    for name, version in (manifest["dependencies"] | manifest["devDependencies"]).items():
        modules = npm_modules(f"{name}@{version}", "hello-js", name)
    return modules


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project (its package.json says "type": "module", as the template's),
    built with its own webpack config: dist/main.js."""
    modules = _modules()
    where = tmp_path_factory.mktemp("hello-js") / "project"
    shutil.copytree(HELLO, where)
    (where / "node_modules").symlink_to(modules)
    built = subprocess.run(
        ["node", str(modules / "webpack-cli" / "bin" / "cli.js")],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert json.loads((where / "package.json").read_text())["type"] == "module"
    return where


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[RecordingK2]:
    k2 = RecordingK2.open(tmp_path / "k2", slot_ms=100)
    assert isinstance(k2, RecordingK2)
    yield k2
    k2.close()


async def _publish(data_dir: Path, data: bytes) -> str:
    store = EmbeddedIpfs.open(data_dir / "ipfs")
    try:
        return await store.publish(data)
    finally:
        store.close()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    try:
        async with http.get(url) as resp:
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, ValueError):
        return 0, None


def _random_key(rng: random.Random) -> str:
    return str(base58.b58encode(rng.randbytes(32)).decode())


def _selection_cases(rng: random.Random) -> list[dict[str, Any]]:
    """Task states the vectors do not cover: keys dropping in and out over three rounds,
    odd submission strings, failed payouts with the failed submitters left out."""
    values = ["bafy" + "x" * 50, 'a"quote\\and\nnewline', "é€😀", "", "0", "\u2028"]
    cases = []
    for _ in range(60):
        keys = [_random_key(rng) for _ in range(rng.randint(1, 7))]
        round_ = rng.randint(0, 4)
        submissions: dict[str, Any] = {}
        for r in range(max(0, round_ - 2), round_ + 1):
            chosen = [k for k in keys if rng.random() < 0.8]
            submissions[str(r)] = {
                k: {
                    "submission_value": rng.choice(values),
                    "slot": rng.randint(0, 10**6),
                    "round": r,
                }
                for k in chosen
            }
        failed = rng.random() < 0.4
        current = list(submissions[str(round_)])
        lists: dict[str, Any] = {
            str(round_): {k: {} for k in rng.sample(current, min(len(current), 2))}
        }
        record = {str(round_): "PayoutFailed"} if failed or rng.random() < 0.3 else {}
        state = {
            "submissions": submissions,
            "distribution_rewards_submission": lists,
            "distributions_audit_record": record,
        }
        cases.append({"state": state, "round": round_, "failed": failed})
    return cases


def _list_cases(rng: random.Random) -> list[dict[str, Any]]:
    cases = []
    for _ in range(60):
        keys = [_random_key(rng) for _ in range(rng.randint(0, 6))]
        triggers: dict[str, Any] = {}
        for key in keys:
            if rng.random() < 0.5:  # a trigger with 0-3 votes, each way
                votes = [{"is_valid": rng.random() < 0.5} for _ in range(rng.randint(0, 3))]
                triggers[key] = {"trigger_by": keys[0], "slot": 1, "votes": votes}
        stakes = {k: rng.choice([0, 3, 90, 2 * ROE_PER_KOII, rng.randint(1, 2**52)]) for k in keys}
        cases.append(
            {
                "submissions": {k: {"submission_value": "x", "slot": 1, "round": 0} for k in keys},
                "triggers": triggers,
                "stake_list": stakes,
                "bounty": rng.choice([0, 1, 7, 3 * ROE_PER_KOII, rng.randint(1, 2**52)]),
            }
        )
    return cases


def test_the_javascript_rules_agree_with_the_python_node_byte_for_byte() -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed on this machine")
    rng = random.Random(7)
    vectors = json.loads((VECTORS / "distribution-selection.json").read_text())["cases"]
    selection = vectors + _selection_cases(rng)
    lists = _list_cases(rng)
    a, b = _random_key(rng), _random_key(rng)
    matches: list[dict[str, Any]] = [
        {"expected": {a: 1, b: 0}, "uploaded": {b: 0, a: 1}},
        {"expected": {a: 1, b: 0}, "uploaded": {a: 1}},
        {"expected": {a: 1}, "uploaded": {a: 1.5}},
        {"expected": {a: 1}, "uploaded": {a: True}},
        {"expected": {a: 1}, "uploaded": [a]},
        {"expected": {a: 1}, "uploaded": None},
        {"expected": {a: 1}, "uploaded": {a: 1, b: 0}},
    ]
    cases = {"selection": selection, "lists": lists, "matches": matches}
    done = subprocess.run(
        ["node", str(RULES_SCRIPT)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = json.loads(done.stdout)
    for case, chosen in zip(selection, out["selected"], strict=True):
        s = case["state"]
        expected = select_distribution_submitter(
            s["submissions"],
            s["distribution_rewards_submission"],
            s["distributions_audit_record"],
            case["round"],
            case["failed"],
        )
        assert chosen == (expected or ""), case
    for vector, chosen in zip(vectors, out["selected"], strict=False):
        assert chosen == vector["selected"]  # and both as the JavaScript libraries chose
    for case, text in zip(lists, out["lists"], strict=True):
        by_python = safety_check(
            default_distribution(
                case["submissions"], case["triggers"], case["stake_list"], case["bounty"]
            ),
            case["submissions"],
            case["bounty"],
        )
        assert text == stringify(by_python), case  # the same list, to the byte
    for case, matched in zip(matches, out["matches"], strict=True):
        assert matched == distribution_matches(case["expected"], case["uploaded"]), case


async def test_a_webpacked_template_task_runs_by_its_id(project: Path, fast_chain: LocalK2) -> None:
    bundle = (project / "dist" / "main.js").read_bytes()
    # where it was built, beside the project's "type": "module", Node.js will not run it
    in_place = await asyncio.to_thread(
        subprocess.run,
        ["node", "dist/main.js"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert in_place.returncode != 0 and "require is not defined" in in_place.stderr
    # the nodes' data folders inside that project too: the node starts a bundle as
    # CommonJS wherever it lies (k2node/node/commonjs.cjs)
    holder, fetcher = project / "node-a", project / "node-b"
    cid = await _publish(holder, bundle)
    task_id = await deploy_task(fast_chain, Keypair.generate(), project / "config-task.yml", cid)
    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:
        nodes = [
            await stack.enter_async_context(Node.manage(node_settings(d, task_id), fast_chain))
            for d in (holder, fetcher)
        ]
        keys = [n.staking.pubkey for n in nodes]

        async def paid() -> bool:
            state = await fast_chain.get_task_state(task_id, EVERYTHING)
            return all(state["available_balances"].get(k, 0) > 0 for k in keys)

        await wait_for(paid, within=60)
        base = f"http://127.0.0.1:{nodes[1].port}/task/{task_id}"
        assert await _get(http, f"{base}/") == (200, {"status": 200, "message": "Running"})
        status, proof = await _get(http, f"{base}/proof/0")
        assert status == 200 and proof["digest"].startswith(DIFFICULTY)
        assert proof_digest(f"{task_id}:0", proof["nonce"]) == proof["digest"]
        status, value = await _get(http, f"{base}/value")
        assert status == 200 and value["value"].startswith(DIFFICULTY)
        status, refused = await _get(http, f"{base}/proof/zero")
        assert status == 400 and refused == {"message": "round must be an integer"}
        state = await fast_chain.get_task_state(task_id, EVERYTHING)
    for data, node in zip((holder, fetcher), nodes, strict=True):
        kept = data / "executables" / f"{cid}.js"
        assert kept.read_bytes() == bundle
        assert node.tasks[task_id].process.spec.entry == str(kept)
    # each found the other's proof right: no audit was raised against either
    assert not any(state["submissions_audit_trigger"].values())


async def test_python_and_javascript_nodes_on_one_task_agree_for_five_rounds(
    project: Path, tmp_path: Path, chain: RecordingK2
) -> None:
    bounty = 2 * ROE_PER_KOII
    task_id = await create_task(
        chain, Keypair.generate(), bounty_amount_per_round=bounty, **FAST_ROUNDS
    )
    # a DEVELOPMENT task: each node runs its own K2NODE_TASK_ENTRY; the JavaScript one runs
    # the bundle where webpack wrote it, in its project whose package.json says "module"
    js_data = tmp_path / "js"
    js_entry = project / "dist" / "main.js"
    rounds = range(5)
    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:
        python = await stack.enter_async_context(
            Node.manage(node_settings(tmp_path / "py", task_id), chain)
        )
        javascript = await stack.enter_async_context(
            Node.manage(node_settings(js_data, task_id, str(js_entry)), chain)
        )
        keys = {"python": python.staking.pubkey, "javascript": javascript.staking.pubkey}

        async def settled() -> bool:
            state = await chain.get_task_state(task_id, {"is_distribution_required": True})
            records = state["distributions_audit_record"]
            return all(records.get(str(r), "Uninitialized") != "Uninitialized" for r in rounds)

        await wait_for(settled, within=60)
        state = await chain.get_task_state(task_id, EVERYTHING)
        from_feeds = {
            name: (await _get(http, f"http://127.0.0.1:{n.port}/task/{task_id}/feed/stats"))[1]
            for name, n in (("python", python), ("javascript", javascript))
        }
    lists = state["distribution_rewards_submission"]
    share = bounty // 2
    for r in rounds:
        assert set(state["submissions"][str(r)]) == set(keys.values()), r
        assert state["submissions_audit_trigger"].get(str(r), {}) == {}, r
        assert state["distributions_audit_trigger"].get(str(r), {}) == {}, r
        assert state["distributions_audit_record"][str(r)] == "PayoutSuccessful", r
        selected = select_distribution_submitter(state["submissions"], {}, {}, r, False)
        assert selected is not None and list(lists[str(r)]) == [selected], r  # that one only
        paid = await chain.get_distribution_list(task_id, selected, r)
        assert paid == dict.fromkeys(keys.values(), share), r
    for key in keys.values():
        assert state["available_balances"][key] >= len(rounds) * share
        assert all(n == 1 for n in chain.attempts("SubmitTask", key).values())
    # each audited the other through the other's own feed route at least once
    assert from_feeds["python"]["auditsFromFeed"] > 0, from_feeds
    assert from_feeds["javascript"]["auditsFromFeed"] > 0, from_feeds


def _deploy(project: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "k2node", "task", "deploy", str(project)),
            *("--data-dir", str(data), "--env-file", str(data / "none")),
        ],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_task_deploy_of_a_javascript_project_publishes_its_bundle(
    project: Path, tmp_path: Path
) -> None:
    unbuilt = tmp_path / "unbuilt"
    shutil.copytree(project, unbuilt, ignore=shutil.ignore_patterns("dist", "node_modules"))
    refused = _deploy(unbuilt, tmp_path / "refused")
    assert refused.returncode == 1 and "dist/main.js" in refused.stderr, refused.stderr
    assert "build it first" in refused.stderr

    data = tmp_path / "node"
    done = _deploy(project, data)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()  # deployed task <id>: executable <cid>
    task_id, cid = words[2].rstrip(":"), words[-1]
    k2 = LocalK2.open(data / "k2")
    try:
        state = await k2.get_task_state(task_id)
    finally:
        k2.close()
    assert (state["task_executable_network"], state["task_audit_program"]) == ("IPFS", cid)
    assert state["task_name"] == "k2node hello js"  # from the project's config-task.yml
    store = EmbeddedIpfs.open(data / "ipfs")
    try:
        assert (
            await store.fetch(cid, max_bytes=1 << 26) == (project / "dist" / "main.js").read_bytes()
        )
    finally:
        store.close()
