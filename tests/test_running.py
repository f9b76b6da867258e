"""RunningTask: one task's parts, stopped cleanly whenever the stop comes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from k2node.contract.launch import TASK_MODE, TaskArgs
from k2node.crypto import Keypair
from k2node.node.agent import TaskAgent
from k2node.node.clock import SlotTimer
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.ledger import Ledger
from k2node.node.process import TaskSpec
from k2node.node.running import RunningTask
from k2node.settlement.local import LocalK2
from k2node.store import Store
from tests.conftest import create_task, funded


async def test_a_stop_before_the_task_runs_starts_nothing(tmp_path: Path, k2: LocalK2) -> None:
    store = Store.open(tmp_path / "node-db")
    task_id = await create_task(k2, Keypair.generate())
    me = Keypair.generate()
    agent = TaskAgent(task_id, k2, Ledger(store, k2), me, await funded(k2), tmp_path / "task")
    context = TaskContext(agent, "t", "secret", 0, "http://127.0.0.1:1")
    args = TaskArgs("t", task_id, 0, TASK_MODE, me.pubkey, "secret", "u", "u", "0", 0)
    spec = TaskSpec(args, "k2node.examples.hello_task:HelloTask", tmp_path / "task.log")
    task = RunningTask(context, spec, SlotTimer(k2), EventHub())
    task.stop()
    await asyncio.wait_for(task.run(timers=True), 5)  # returns: no timers left running
    assert task.process.pid is None and not task.process.started.is_set()
    store.close()


async def test_replies_that_name_no_phase_of_ours_are_passed_over(
    tmp_path: Path, k2: LocalK2
) -> None:
    """A task's reply with a round that is not one (a list, an object, text) changes
    nothing and stops nothing: the next real reply is heard."""
    store = Store.open(tmp_path / "node-db")
    task_id = await create_task(k2, Keypair.generate())
    me = Keypair.generate()
    ledger = Ledger(store, k2)
    agent = TaskAgent(task_id, k2, ledger, me, await funded(k2), tmp_path / "task")
    context = TaskContext(agent, "t", "secret", 0, "http://127.0.0.1:1")
    args = TaskArgs("t", task_id, 0, TASK_MODE, me.pubkey, "secret", "u", "u", "0", 0)
    spec = TaskSpec(args, "k2node.examples.hello_task:HelloTask", tmp_path / "task.log")
    task = RunningTask(context, spec, SlotTimer(k2), EventHub())
    for hostile in ([3], {"r": 3}, "3", None, 3.5, True):
        task._on_message({"phaseDone": "executeTask", "roundNumber": hostile, "ok": True})
    assert not ledger.phase_done(task_id, "executeTask", 3)
    task._on_message({"phaseDone": "executeTask", "roundNumber": 3, "ok": True})
    assert ledger.phase_done(task_id, "executeTask", 3)
    store.close()
