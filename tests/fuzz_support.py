"""A real node for the fuzz suite, on a thread of its own: the generated requests are sent
from the test's thread with a blocking client and a timeout each, while the node's event
loop runs freely (its rounds, its task process) the whole time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass
from pathlib import Path

from k2node.crypto import Keypair
from k2node.node.runtime import Node
from k2node.settlement.local import LocalK2
from tests.conftest import create_task, node_settings, wait_for

START_S = 60.0


@dataclass
class LiveNode:
    url: str
    task_id: str
    secret: str
    staking_key: str
    # content the node holds: a file, a directory and a file inside it
    held: dict[str, str]


class NodeThread:
    """`Node.manage` on a local K2 with 100 ms slots and one task, run until `stop`."""

    def __init__(self, folder: Path, round_time: int = 20) -> None:
        self._folder = folder
        self._round_time = round_time
        self._ready: concurrent.futures.Future[LiveNode] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fuzzed-node", daemon=True)

    def start(self) -> LiveNode:
        self._thread.start()
        return self._ready.result(START_S)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_S)
        assert not self._thread.is_alive(), "the fuzzed node did not stop"
        if self._failure is not None:
            raise self._failure

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # for the test's thread to raise (start or stop)
            if not self._ready.done():
                self._ready.set_exception(exc)
            self._failure = exc

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        k2 = LocalK2.open(self._folder / "k2", slot_ms=100)
        try:
            task_id = await create_task(k2, Keypair.generate(), round_time=self._round_time)
            settings = node_settings(self._folder / "node", task_id)
            async with Node.manage(settings, k2) as node:
                running = node.tasks[task_id]
                await wait_for(lambda: running.running, within=START_S)
                held = {
                    "file": await node.ipfs.publish(b"hello from the fuzzed node"),
                    "directory": await node.ipfs.publish_directory({"a.txt": b"a", "b.txt": b"b"}),
                }
                held["inner"] = f"{held['directory']}/a.txt"
                live = LiveNode(
                    f"http://127.0.0.1:{node.port}",
                    task_id,
                    running.context.secret,
                    node.staking.pubkey,
                    held,
                )
                self._ready.set_result(live)
                await self._stop.wait()
        finally:
            await k2.aclose()
