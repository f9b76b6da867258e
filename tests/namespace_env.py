"""A node API serving one task's `POST /namespace-wrapper`, with a staked peer beside it:
what the namespace wrapper tests call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from k2node.crypto import Keypair
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.agent import TaskAgent
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.http.api import NodeApi
from k2node.node.ledger import Ledger
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import FakeClock, create_task, stake


@dataclass
class Env:
    """The node's API on a test client, its task's context, and a peer staked on the task."""

    client: TestClient[Any, Any]
    ctx: TaskContext
    k2: LocalK2
    clock: FakeClock
    store: Store
    peer: Keypair
    served: StoppedTask

    async def call(self, *args: Any, secret: str | None = None) -> tuple[int, Any]:
        body = {
            "args": list(args),
            "taskId": self.ctx.task_id,
            "secret": self.ctx.secret if secret is None else secret,
        }
        resp = await self.client.post("/namespace-wrapper", json=body)
        return resp.status, await resp.json()


@dataclass
class StoppedTask:
    """A task the node knows but whose process is not running."""

    context: TaskContext
    running: bool = False
    server_socket: Path | None = None
    server_port: int = 0
    max_request_body: int | None = None

    async def manual_phase(self, name: str, round_: int, retry: bool) -> dict[str, Any]:
        return {"delivered": False}


@asynccontextmanager
async def namespace_env(tmp_path: Path, k2: LocalK2, clock: FakeClock) -> AsyncIterator[Env]:
    manager, me, peer = Keypair.generate(), Keypair.generate(), Keypair.generate()
    task_id = await create_task(k2, manager)
    await stake(k2, me, task_id)
    await stake(k2, peer, task_id)
    store = Store.open(tmp_path / "node-db")
    agent = TaskAgent(task_id, k2, Ledger(store, k2), me, manager, tmp_path / "task")
    agent.base_path.mkdir()
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    ctx = TaskContext(agent, "test task", "s3cret-s3cret-s3cret", 10, "http://127.0.0.1:1", ipfs)
    served = StoppedTask(ctx)
    api = NodeApi({task_id: served}, manager.pubkey, "", EventHub())
    client = TestClient(TestServer(api.app()))
    await client.start_server()
    try:
        yield Env(client, ctx, k2, clock, store, peer, served)
    finally:
        await client.close()
        store.close()
        ipfs.close()
