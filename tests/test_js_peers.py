"""JavaScript tasks reach their peers with k2node's helper (k2node/task/peers.cjs): on a devnet
of three nodes, each honest task gets the others' JSON and WebSockets through their nodes,
while a peer answering garbage and one that never answers fail by name within the caller's
deadline, and every round's submission still lands in its window. Real Node.js."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from solders.pubkey import Pubkey

from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement import transactions
from k2node.settlement.local import LocalK2
from tests.conftest import (
    REPO,
    create_task,
    funded,
    node_settings,
    npm_modules,
    sign_and_send,
    task_file,
    wait_for,
)

HELPER = REPO / "k2node" / "task" / "peers.cjs"
ROUNDS: dict[str, Any] = {"round_time": 30, "submission_window": 20, "audit_window": 8}


@pytest.fixture(scope="module")
def ws_modules() -> Path:
    return npm_modules("ws@8.18.0", "ws", "ws")


def _task_folder(folder: Path, entry: str, ws_modules: Path) -> str:
    folder.mkdir()
    shutil.copy(task_file("peers_task.js"), folder / entry)
    shutil.copy(HELPER, folder / "peers.cjs")
    (folder / "node_modules").symlink_to(ws_modules)
    return str(folder / entry)


async def _stake_at(k2: LocalK2, task_id: str, url: str) -> str:
    """A staking key of the task's whose node is at `url`: one that never answers."""
    payer, key = await funded(k2), Keypair.generate()
    pot = Pubkey.from_string((await k2.get_task_state(task_id))["stake_pot_account"])
    built = transactions.stake(
        Pubkey.from_string(payer.pubkey),
        Pubkey.from_string(key.pubkey),
        Pubkey.from_string(task_id),
        pot,
        2 * 10**9,
        url,
        None,  # a new staking account
    )
    await sign_and_send(k2, built, payer, key)
    return key.pubkey


async def _run_devnet(
    tmp_path: Path, fast_chain: LocalK2, ws_modules: Path, silent_port: int
) -> tuple[list[str], str, tuple[int, int], list[dict[str, Any]]]:
    """Two honest JavaScript tasks, one answering garbage, and a staked key whose URL never
    answers; what each honest one reached in two rounds begun with every node staked."""
    task_id = await create_task(fast_chain, Keypair.generate(), **ROUNDS)
    quiet = await _stake_at(fast_chain, task_id, f"http://127.0.0.1:{silent_port}")
    entries = [
        _task_folder(tmp_path / name, entry, ws_modules)
        for name, entry in (("a", "main.js"), ("b", "main.js"), ("c", "garbage.js"))
    ]
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                Node.manage(node_settings(tmp_path / f"node{i}", task_id, entry), fast_chain)
            )
            for i, entry in enumerate(entries)
        ]
        keys = [n.staking.pubkey for n in nodes]
        state = await fast_chain.get_task_state(task_id)
        now = (fast_chain.current_slot() - state["starting_slot"]) // state["round_time"]
        checked = (now + 1, now + 2)  # rounds begun with every node staked

        async def submitted() -> bool:
            state = await fast_chain.get_task_state(task_id, {"is_submission_required": True})
            done = state["submissions"]
            return all(k in done.get(str(r), {}) for r in checked for k in keys[:2])

        await wait_for(submitted, within=60)
        async with aiohttp.ClientSession() as http:
            reached = []
            for node in nodes[:2]:
                url = f"http://127.0.0.1:{node.port}/task/{task_id}/reached"
                async with http.get(url) as resp:
                    reached.append(await resp.json())
    return keys, quiet, checked, reached


async def test_javascript_tasks_reach_their_peers_and_bad_ones_stall_nothing(
    tmp_path: Path, fast_chain: LocalK2, ws_modules: Path
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, reads nothing, answers nothing

    silence = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        keys, quiet, checked, reached = await _run_devnet(
            tmp_path, fast_chain, ws_modules, silence.sockets[0].getsockname()[1]
        )
    finally:
        silence.close()
        for writer in held:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in held), return_exceptions=True)
    for mine, found in zip(keys[:2], reached, strict=True):
        other = keys[1] if mine == keys[0] else keys[0]
        for r in checked:
            got = found[str(r)]
            answers, sockets = got["answers"], got["sockets"]
            assert set(answers) == set(sockets) == {other, keys[2], quiet}, got  # not itself
            assert answers[other] == {"ok": {"stakingKey": other}}, got
            assert "bad answer" in answers[keys[2]]["error"], got
            assert answers[quiet]["error"].startswith("no answer"), got
            assert sockets[other] == sockets[keys[2]] == {"ok": f"ping {r}"}, got
            assert "error" in sockets[quiet], got
            assert got["took"] < 1800, got  # the 1 s deadlines, not the silent peer's silence
