"""Three nodes and their embedded K2 on one machine whose power is cut (tests/powercut.py),
run in virtual time, in this process, one life at a time: each life opens what the last
cut left, runs the node's own code (ledger, agent, scheduler, payouts, the task's code
in-process) until the next cut, and ends; the next starts a slot or a few later.

The journal (tests/powercut_k2.py), outside the machine, keeps what the K2 was sent and
answered, and what the K2's log kept at each cut (its whole history, as snapshots delete
the log they cover).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog
from solders.keypair import Keypair as SoldersKeypair

from k2node.contract.rounds import Schedule
from k2node.contract.units import ROE_PER_KOII, SlotClock
from k2node.examples.hello_task import HelloTask
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.agent import TaskAgent
from k2node.node.context import TaskContext
from k2node.node.events import EventHub
from k2node.node.ledger import Ledger
from k2node.node.process import OnReply, TaskSpec
from k2node.node.provision import deploy_task, ensure_balance
from k2node.node.running import KEEP_LEDGER_ROUNDS, RunningTask
from k2node.settlement.local import LocalK2
from k2node.settlement.snapshot import LOG_PREFIX
from k2node.store import Store
from k2node.task.core import CoreLogic
from k2node.testing.clock import INTO_SLOT_S, VirtualClock
from k2node.testing.harness import seeded_keypair
from k2node.testing.inprocess import InProcessTask, LocalNamespace
from k2node.testing.tasks import launch_args
from tests.powercut import Machine, PowerCut, Survival
from tests.powercut_k2 import LEDGERED, CutK2, Journal

SLOT_MS = 400.0
NODES = 3
# Node 0 votes against every submission and list; the others, auditing after it, vote on
# its triggers. Node 1 claims its rewards as they come (K2NODE_AUTO_CLAIM).
ACCUSER, CLAIMER = 0, 1
NODE_FUNDS = 50 * ROE_PER_KOII
CONFIG = """
task_name: "power cut"
task_description: "the hello task on a machine whose power is cut"
task_executable_network: "DEVELOPMENT"
task_audit_program: "main"
round_time: 20
submission_window: 8
audit_window: 8
minimum_stake_amount: 1
total_bounty_amount: 100000
bounty_amount_per_round: 1
allowed_failed_distributions: 1
space: 1
"""


@dataclass
class _Life:
    """What one life built, for its teardown (which writes nothing: the power is off)."""

    clock: VirtualClock | None = None
    k2: CutK2 | None = None
    ipfs: EmbeddedIpfs | None = None
    session: aiohttp.ClientSession | None = None
    tasks: list[RunningTask] = field(default_factory=list)
    jobs: list[asyncio.Task[None]] = field(default_factory=list)

    async def teardown(self) -> None:
        for task in self.tasks:
            task.stop()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        if self.k2 is not None:
            self.k2._snapshot_thread.shutdown(wait=True)  # a snapshot's write ends the thread
        if self.ipfs is not None:
            self.ipfs.close()
        if self.session is not None:
            await self.session.close()


class Net:
    def __init__(self, folder: Path, seed: int) -> None:
        self.folder = folder
        self.seed = seed
        self.machine = Machine()
        self.journal = Journal()
        self.keys = [
            (seeded_keypair(seed, f"main{i}"), seeded_keypair(seed, f"staking{i}"))
            for i in range(NODES)
        ]
        self.manager = seeded_keypair(seed, "manager")
        self.task_key = seeded_keypair(seed, "task")
        self.task_id = self.task_key.pubkey
        self.config = folder / "config-task.yml"
        folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(CONFIG)
        self.now: float | None = None  # virtual time: where the last life ended
        self.slot = 0  # and its slot
        self.schedule: Schedule | None = None  # the task's rounds, once deployed
        self.slots: SlotClock | None = None
        self.lives = 0
        self.cuts: list[str] = []  # each cut: where it fell, what it kept
        self._sent_from = 0  # where the last life's sends begin in the journal
        self.k2_path = str(folder / "k2")

    @property
    def staking_keys(self) -> list[str]:
        return [staking.pubkey for _, staking in self.keys]

    def checkpoint(self) -> Callable[[], None]:
        """Remember where the run is, between lives; what is returned takes it back there."""
        self.machine.checkpoint()
        kept = copy.deepcopy(self.journal), self.now, self.slot, self.lives, self._sent_from

        def rollback() -> None:
            self.machine.rollback()
            journal, self.now, self.slot, self.lives, self._sent_from = kept
            self.cuts = []
            self.journal = copy.deepcopy(journal)

        return rollback

    # -- one life --------------------------------------------------------------------------
    def life(
        self, until_round: int, cut_at: int | None, mode: Survival, rng: random.Random
    ) -> bool:
        """Run from what the last cut left until the machine's write `cut_at` or the start
        of round `until_round`, then cut the power with `mode`. True if it was cut at the
        write; the machine then stays off for a slot or a few (see `_downtime`)."""
        self.machine.cut_at = cut_at
        self.lives += 1
        with self._watched_logs():
            asyncio.run(self._life(until_round))
        was_cut = cut_at is not None and self.machine.writes >= cut_at
        if was_cut:
            self.cuts.append(f"life {self.lives}, {self.machine.cut_write}, {mode} kept")
        down = self._downtime(rng) if was_cut else 0
        if down and self.slots is not None:
            self.slot += down
            self.now = self.slots.time_of(self.slot) + INTO_SLOT_S
        kept = self.machine.restore(mode, rng)
        for write in kept.get(self.k2_path, []):
            for key, value in write.ops:
                if value is not None and key.startswith(LOG_PREFIX.encode()):
                    seq = orjson.loads(value)["seq"]
                    before = self.journal.history.setdefault(seq, value)
                    # a number the K2 gave twice: it had lost an entry it had kept
                    assert before == value, f"K2 log entry {seq} written twice, differently"
        return was_cut

    async def _life(self, until_round: int) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_power_cuts)
        life = _Life()
        cut = asyncio.Event()

        def on_cut() -> None:
            if life.clock is not None and life.k2 is not None:
                self.now, self.slot = life.clock.now, life.k2.current_slot()
            loop.call_soon_threadsafe(cut.set)

        self.machine.on_cut = on_cut
        drive = asyncio.create_task(self._drive(life, until_round))
        waiting = asyncio.create_task(cut.wait())
        await asyncio.wait({drive, waiting}, return_when=asyncio.FIRST_COMPLETED)
        self.machine.switch_off()
        for job in (drive, waiting):
            job.cancel()
        outcome = (await asyncio.gather(drive, waiting, return_exceptions=True))[0]
        await life.teardown()
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, PowerCut | asyncio.CancelledError
        ):
            raise outcome

    async def _drive(self, life: _Life, until_round: int) -> None:
        clock = life.clock = VirtualClock() if self.now is None else VirtualClock(self.now)
        k2 = life.k2 = self.open_k2(clock)
        self._check_sends_kept(k2)
        if self.task_id not in k2._world.tasks:  # deployed once it is on K2's disk
            account = SoldersKeypair.from_seed(self.task_key.secret_bytes[:32])
            await deploy_task(k2, self.manager, self.config, task_key=account)
        self.schedule, self.slots = Schedule.of(k2._world.task(self.task_id)), k2.slots
        life.ipfs = EmbeddedIpfs.open(self.folder / "ipfs")
        life.session = aiohttp.ClientSession()
        events = EventHub()
        for i in range(NODES):
            life.tasks.append(await self._node(i, k2, clock, life, events))
        for task in life.tasks:
            life.jobs.append(asyncio.create_task(task.run(True)))
        for task in life.tasks:
            assert isinstance(task.process, InProcessTask)
            await task.process.started.wait()
        await clock.settle()
        for slot in range(k2.current_slot() + 1, self.schedule.round_start(until_round) + 1):
            await clock.advance_to(k2.wall_time_of_slot(slot) + INTO_SLOT_S)
            self.now, self.slot = clock.now, slot

    async def _node(
        self, i: int, k2: CutK2, clock: VirtualClock, life: _Life, events: EventHub
    ) -> RunningTask:
        """Node i started as provision_task starts it: funds, stake, pending actions."""
        main, staking = self.keys[i]
        base = self.folder / f"node{i}"
        ledger = Ledger(Store.open(base / "node-db"), k2)
        agent = TaskAgent(self.task_id, k2, ledger, staking, main, base)
        await ensure_balance(k2, main.pubkey, NODE_FUNDS)
        state = await agent.state()
        url = f"http://node{i}.cut"
        stake = int(state["minimum_stake_amount"])
        await agent.stake(stake, url)
        await ledger.reconcile(self.task_id)
        secret = f"cut-secret-{i}"
        context = TaskContext(agent, state["task_name"], secret, stake, url, life.ipfs)
        args = launch_args(self.task_id, state, main.pubkey, secret, stake, url)
        assert life.session is not None
        namespace = LocalNamespace(context, events, Store.open(base / "task-db"), life.session)
        core: CoreLogic = FalseAccuser() if i == ACCUSER else HelloTask()
        core.audit_rng = random.Random(f"{self.seed}:{self.lives}:{i}")
        return RunningTask(
            context,
            TaskSpec(args, "", base / "task.log"),
            clock.timer(k2.slots),
            events,
            channel=_in_process(core, namespace, clock),
            auto_claim=ROE_PER_KOII if i == CLAIMER else 0,
        )

    @property
    def round(self) -> int:
        """The round the machine is in (after its last life)."""
        return 0 if self.schedule is None else self.schedule.round_of(self.slot)

    def after(self) -> str:
        """Where the last cut fell, for a failure's message."""
        return f"after the cut of {self.cuts[-1]}" if self.cuts else "before any cut"

    @contextlib.contextmanager
    def _watched_logs(self) -> Iterator[None]:
        """The node's warnings and errors while the machine is up, in the journal; nothing
        rendered (in place, as structlog.testing.capture_logs: cached loggers see it)."""
        processors = structlog.get_config()["processors"]
        before = list(processors)
        processors[:] = [self._watch]
        structlog.configure(processors=processors)
        try:
            yield
        finally:
            processors[:] = before
            structlog.configure(processors=processors)

    def _watch(self, _logger: Any, method: str, event: dict[str, Any]) -> Any:
        if method in ("warning", "error", "critical", "exception") and not self.machine.down:
            self.journal.problems.append({"level": method, **event})
        raise structlog.DropEvent

    def _downtime(self, rng: random.Random) -> int:
        """Slots the machine stays off: 1 to 3, so that what the node signs after the cut
        has a blockhash (and signature) of its own, never as many as would close a window
        open at the cut: whatever was owed then is still owed, and can be made, after it.
        A cut in a window's last slot restarts in that slot."""
        s, slot = self.schedule, self.slot
        assert s is not None
        r = s.round_of(slot)
        start = s.round_start(r)
        ends = (start + s.submission_window, start + s.submission_window + s.audit_window)
        next_end = min([e for e in ends if e > slot] + [s.round_start(r + 1)])
        return min(rng.randint(1, 3), next_end - slot - 1)

    def open_k2(self, clock: Callable[[], float]) -> CutK2:
        """The K2 as it reopens from its disk, checked to have kept what it answered."""
        k2 = CutK2.open(Path(self.k2_path), SLOT_MS, clock=clock)
        assert isinstance(k2, CutK2)
        k2.journal, k2.machine, k2.life = self.journal, self.machine, self.lives
        self.check_answers_kept(k2)
        return k2

    # -- what each cut must have kept ------------------------------------------------------
    def check_answers_kept(self, k2: CutK2) -> None:
        """Whatever the K2 answered before the cut is in what it reopened."""
        journal = self.journal
        lost = journal.answered - set(k2._world.signatures)
        assert not lost, f"{self.after()}: the K2 answered {len(lost)} transactions it lost"
        entries = [orjson.loads(v) for v in journal.history.values() if b'"airdrop"' in v]
        kept = {(e["airdrop"][0], e["airdrop"][1]) for e in entries}
        assert kept.issuperset(journal.airdrops), f"{self.after()}: an airdrop was lost"
        journal.answered, journal.airdrops = set(), []
        self.note_outcomes(k2)

    def note_outcomes(self, k2: LocalK2) -> None:
        state = k2._world.tasks.get(self.task_id)
        if state is None:
            return
        for rkey, record in state["distributions_audit_record"].items():
            self.journal.records[int(rkey)] = record
        for rkey, lists in k2._world.private[self.task_id].lists.items():
            submitters = state["distribution_rewards_submission"].get(rkey, {})
            if submitters:
                self.journal.paid[int(rkey)] = dict(lists[list(submitters)[-1]])

    def _check_sends_kept(self, k2: CutK2) -> None:
        """A transaction of a node's that the K2 kept is in the node's ledger, under its
        action's key: after the cut the node finds it, rather than signing it afresh."""
        sent, self._sent_from = self.journal.sent[self._sent_from :], len(self.journal.sent)
        if self.schedule is None:
            return  # (nothing sent yet)
        ledgers = {
            staking.pubkey: Store.open(self.folder / f"node{i}" / "node-db")
            for i, (_, staking) in enumerate(self.keys)
        }
        pruned = self.schedule.round_of(k2.current_slot()) - KEEP_LEDGER_ROUNDS
        for one in sent:
            if one.signature not in k2._world.signatures:
                continue
            for name, signer, round_, detail in one.actions:
                if name not in LEDGERED or signer not in ledgers or (round_ or 0) < pruned:
                    continue
                key = Ledger.key(self.task_id, LEDGERED[name], round_ or 0, detail)
                entry = ledgers[signer].get(key)
                assert entry is not None and entry.get("signature") == one.signature, (
                    f"{self.after()}: {name} of round {round_} by {signer[:8]} is on "
                    f"the K2's disk, and the node's ledger has {entry}"
                )


class FalseAccuser(HelloTask):
    """Works and submits as the example does, and calls every other node's work and list
    wrong: each of its votes raises a trigger the honest nodes then vote on."""

    async def validate_node(self, submission_value: str, round_: int, submitter_key: str) -> bool:
        return False

    async def validate_distribution(
        self, submitter: str, round_: int, distribution: dict[str, Any] | None
    ) -> bool:
        return False


def _in_process(
    core: CoreLogic, namespace: LocalNamespace, clock: VirtualClock
) -> Callable[[TaskSpec, OnReply], InProcessTask]:
    def channel(_spec: TaskSpec, on_reply: OnReply) -> InProcessTask:
        return InProcessTask(core, namespace, on_reply, clock)

    return channel


def _quiet_power_cuts(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A task ended by the power cut is not an error of the node's."""
    if isinstance(context.get("exception"), PowerCut):
        return
    loop.default_exception_handler(context)
