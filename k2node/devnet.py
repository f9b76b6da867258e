"""`k2node devnet --nodes N [TASK]`: a `k2node k2` service and N nodes on loopback, one
command; their logs merged with a node column, Ctrl-C stopping all of them.

Each process gets a session of its own, so a Ctrl-C on the terminal reaches this process
alone and the stop goes in order: the nodes first (they may still owe K2 an action), then
the K2 service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiohttp

from k2node.config import DEFAULT_TASK_CONFIG, DEFAULT_TASK_ENTRY
from k2node.crypto import load_or_create_wallet
from k2node.node.process import STOP_TIMEOUT_S
from k2node.node.provision import deploy_task, free_port
from k2node.settlement.rpc import K2Unreachable, RpcSettlement

START_TIMEOUT_S = 30.0
# The lying variant a `--liars` node runs: the task with wrong submissions.
LIAR_WRAPPER = """# written by `k2node devnet --liars`: {entry} with wrong submissions
from k2node.task.runner import load_entry
from k2node.testing.adversaries import Role, playing

LiarTask = playing(Role.LIAR, type(load_entry({entry!r})))
"""


class DevnetError(Exception):
    pass


@dataclass
class Member:
    name: str
    process: asyncio.subprocess.Process
    port: int


def _task_files(task: str | None) -> tuple[str, Path]:
    """The task's entry and its config-task.yml (beside its file), the example's by default."""
    if task is None:
        return DEFAULT_TASK_ENTRY, DEFAULT_TASK_CONFIG
    target, _, cls = task.rpartition(":")
    if not target or not cls:
        raise DevnetError(f"the task must be path/to/task.py:Class or module:Class, not {task!r}")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise DevnetError(f"{target} does not exist")
        config = path.parent / "config-task.yml"
        if not config.is_file():
            raise DevnetError(f"no config-task.yml beside {target}")
        return f"{path}:{cls}", config
    return task, DEFAULT_TASK_CONFIG


class Devnet:
    def __init__(self, folder: Path, out: TextIO) -> None:
        self.folder = folder
        self.members: list[Member] = []
        self._out = out
        self._pumps: list[asyncio.Task[None]] = []
        self._width = 5

    async def _spawn(self, name: str, port: int, args: list[str], env: dict[str, str]) -> Member:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "k2node",
            *args,
            env=os.environ | env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C is ours to pass on, in order
        )
        member = Member(name, process, port)
        self.members.append(member)
        self._pumps.append(asyncio.create_task(self._pump(member)))
        self.say(f"started {name} pid={process.pid} port={port}")
        return member

    def say(self, line: str, name: str = "devnet") -> None:
        self._out.write(f"{name:<{self._width}} | {line}\n")
        self._out.flush()

    async def _pump(self, member: Member) -> None:
        assert member.process.stdout is not None
        async for raw in member.process.stdout:
            self.say(raw.decode(errors="replace").rstrip(), member.name)

    async def start_k2(self, slot_ms: float) -> str:
        port = free_port()
        args = ["k2", "--port", str(port), "--ws-port", str(free_port())]
        args += ["--data-dir", str(self.folder / "k2"), "--slot-ms", str(slot_ms)]
        await self._spawn("k2", port, args, {})
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
            while True:
                try:
                    await RpcSettlement.connect(url, session)
                    return url
                except K2Unreachable:
                    if asyncio.get_running_loop().time() > deadline:
                        raise DevnetError(f"the K2 service did not answer at {url}") from None
                    await asyncio.sleep(0.1)

    async def deploy(self, k2_url: str, config: Path) -> str:
        manager, _ = load_or_create_wallet(self.folder / "manager.json")
        async with aiohttp.ClientSession() as session:
            settlement = await RpcSettlement.connect(k2_url, session)
            task_id = await deploy_task(settlement, manager, config)
        self.say(f"deployed task {task_id} from {config}")
        return task_id

    async def start_nodes(
        self, count: int, liars: int, k2_url: str, task_id: str, entry: str, console: bool
    ) -> None:
        self._width = max(self._width, len(f"node{count}"))
        for i in range(1, count + 1):
            data = self.folder / f"node{i}"
            port = free_port()
            env = {
                "K2_NODE_URL": k2_url,
                "TASKS": task_id,
                "K2NODE_TASK_ENTRY": entry,
                "K2NODE_LOG_FORMAT": "console" if console else "json",
            }
            name = f"node{i}"
            if i > count - liars:
                name = f"liar{i}"
                wrapper = self.folder / "liar_task.py"
                wrapper.write_text(LIAR_WRAPPER.format(entry=entry))
                # its code lives outside the task's folder: the sandbox would not let it in
                env |= {"K2NODE_TASK_ENTRY": f"{wrapper}:LiarTask", "K2NODE_TASK_SANDBOX": "off"}
            args = ["run", "--data-dir", str(data), "--port", str(port)]
            args += ["--env-file", str(self.folder / "no.env")]
            await self._spawn(name, port, args, env)
        for member in self.members[1:]:
            self.say(f"{member.name}: http://127.0.0.1:{member.port}/task/{task_id}/")

    async def wait(self) -> str | None:
        """Until a process ends by itself (its name), or this task is cancelled."""
        waits = {asyncio.create_task(m.process.wait()): m for m in self.members}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return waits[next(iter(done))].name
        finally:
            for job in waits:
                job.cancel()

    async def stop(self) -> None:
        """The nodes, then the K2 service: SIGTERM, and SIGKILL after the grace period."""
        nodes = [m for m in self.members if m.name != "k2"]
        await asyncio.gather(*(self._stop_one(m) for m in nodes))
        await asyncio.gather(*(self._stop_one(m) for m in self.members if m.name == "k2"))
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self.say("all stopped")

    async def _stop_one(self, member: Member) -> None:
        process = member.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S + 10)
            except TimeoutError:
                self.say(f"{member.name} did not stop in time: killed")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self.say(f"{member.name} stopped (exit {process.returncode})")


async def run_devnet(
    nodes: int, task: str | None, liars: int, folder: Path, slot_ms: float, stop: asyncio.Event
) -> int:
    if not 1 <= nodes <= 64:
        raise DevnetError(f"--nodes must be 1-64, got {nodes}")
    if not 0 <= liars <= nodes:
        raise DevnetError(f"--liars must be 0-{nodes}, got {liars}")
    entry, config = _task_files(task)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    net = Devnet(folder, sys.stdout)
    ended: str | None = None
    try:
        k2_url = await net.start_k2(slot_ms)
        task_id = await net.deploy(k2_url, config)
        await net.start_nodes(nodes, liars, k2_url, task_id, entry, sys.stdout.isatty())
        waiter = asyncio.create_task(net.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        ended = waiter.result() if waiter.done() else None
        waiter.cancel()
        if ended is not None:
            net.say(f"{ended} ended by itself: stopping the others")
    finally:
        await net.stop()
    return 0 if ended is None else 1
