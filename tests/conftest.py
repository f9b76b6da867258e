from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair as SoldersKeypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from k2node.config import Settings
from k2node.contract.units import ROE_PER_KOII, SlotClock
from k2node.crypto import Keypair
from k2node.ipfs.embedded import EmbeddedIpfs
from k2node.node.clock import SlotTimer
from k2node.settlement import transactions, wire
from k2node.settlement.base import SlotClocked
from k2node.settlement.local import LocalK2
from k2node.settlement.program import PROGRAM_NAMES
from k2node.settlement.reads import SharedReads
from k2node.settlement.wire import Ix

REPO = Path(__file__).resolve().parents[1]
# Reference data from independent implementations, copied from the team's shared/vectors
VECTORS = REPO / "tests" / "vectors"
SHARED_VECTORS = REPO.parent / "shared" / "vectors"
# Every K2 read in the tests' own process is compared with the world it copies.
SharedReads.check = True


class FakeClock:
    """Wall time the test moves by hand, or a sleep on `timer()` moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def to_slot(self, k2: LocalK2, slot: int) -> None:
        self.now = k2.wall_time_of_slot(slot) + 0.001

    def timer(self, slots: SlotClock) -> VirtualTimer:
        return VirtualTimer(slots, self)


class VirtualTimer(SlotTimer):
    """The scheduler's clock in virtual time: a sleep moves the time and returns at once."""

    def __init__(self, slots: SlotClock, clock: FakeClock) -> None:
        super().__init__(SlotClocked(slots, clock))
        self._clock = clock

    async def sleep(self, seconds: float) -> None:
        self._clock.now += max(0.0, seconds)
        await asyncio.sleep(0)

    async def sleep_until_slot(self, slot: int) -> bool:
        if self.current_slot() >= slot:
            return False
        self._clock.now = self.wall_time_of_slot(slot) + 1e-6
        await asyncio.sleep(0)
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def k2(tmp_path: Path, clock: FakeClock) -> Iterator[LocalK2]:
    chain = LocalK2.open(tmp_path / "k2", slot_ms=1000, clock=clock)
    yield chain
    chain.close()


@pytest.fixture
def fast_chain(tmp_path: Path) -> Iterator[LocalK2]:
    """A local K2 on the wall clock with 100 ms slots, for real nodes."""
    k2 = LocalK2.open(tmp_path / "k2", slot_ms=100)
    yield k2
    k2.close()


# The tests' task: round_time 20, submission_window 8, audit_window 8 (slots of one second):
# round N is submitted in [S(N+1), +8), audited in [S(N+1)+8, +8),
# its list goes in [S(N+2), +8), is audited in [S(N+2)+8, +8); payout from S(N+2)+16.
TASK_ARGS: dict[str, Any] = {
    "task_name": "test task",
    "task_description": "for tests",
    "task_executable_network": "DEVELOPMENT",
    "task_audit_program": "main",
    "round_time": 20,
    "submission_window": 8,
    "audit_window": 8,
    "minimum_stake_amount": 1 * ROE_PER_KOII,
    "total_bounty_amount": 100 * ROE_PER_KOII,
    "bounty_amount_per_round": 3 * ROE_PER_KOII,
    "allowed_failed_distributions": 1,
}


async def _fee_payer(k2: LocalK2) -> Keypair:
    """A System wallet of the test's that pays fees and funds accounts: a new one each
    time, so that the same instruction sent twice is two transactions, not a replay."""
    payer = Keypair.generate()
    await k2.airdrop(payer.pubkey, 10 * ROE_PER_KOII)
    return payer


async def funded(k2: LocalK2, koii: int = 100) -> Keypair:
    """A new System wallet holding `koii`: a node's main wallet."""
    wallet = Keypair.generate()
    await k2.airdrop(wallet.pubkey, koii * ROE_PER_KOII)
    return wallet


async def sign_and_send(
    k2: LocalK2, instructions: list[Instruction], payer: Keypair, *signers: Any
) -> str:
    solders_signers = [s if isinstance(s, SoldersKeypair) else wire.signer(s) for s in signers]
    signed = await transactions.signed_now(k2, instructions, wire.signer(payer), solders_signers)
    return await k2.send(signed.wire)


async def send(k2: LocalK2, key: Keypair, ix: str, task_id: str, **args: Any) -> str:
    """Send the task program's `ix` for `key` as a node would; a wallet of the test's pays."""
    payer = await _fee_payer(k2)
    task, me = Pubkey.from_string(task_id), Pubkey.from_string(key.pubkey)
    if ix in ("AuditSubmissions", "AuditDistribution"):
        kind = Ix.AUDIT_SUBMISSIONS if ix == "AuditSubmissions" else Ix.AUDIT_DISTRIBUTION
        candidate = Pubkey.from_string(args["candidate"])
        built = [transactions.vote(kind, task, me, candidate, args["is_valid"], args["round"])]
    elif ix == "UploadDistributionList":
        text = json.dumps(args["list"], separators=(",", ":")).encode()
        signature = ""
        for piece in transactions.upload_list(task, me, text, args["round"]):
            signature = await sign_and_send(k2, [piece], payer, key)
        return signature
    elif ix in ("Payout", "ClaimReward"):
        pot = Pubkey.from_string((await k2.get_task_state(task_id))["stake_pot_account"])
        if ix == "Payout":
            built = [transactions.with_stake_pot(Ix.PAYOUT, task, me, pot, round=args["round"])]
        else:
            built = [transactions.claim(task, me, pot, Pubkey.from_string(args["to"]))]
    elif ix == "SetActive":
        built = [transactions.round_action(Ix.SET_ACTIVE, task, me, is_active=args["is_active"])]
    else:
        names = {
            "SubmitTask": Ix.SUBMIT_TASK,
            "SubmitDistributionList": Ix.SUBMIT_DISTRIBUTION_LIST,
            "Withdraw": Ix.WITHDRAW,
        }
        built = [transactions.round_action(names[ix], task, me, **args)]
    return await sign_and_send(k2, built, payer, key)


async def create_task(k2: LocalK2, manager: Keypair, **overrides: Any) -> str:
    args = TASK_ARGS | overrides
    space = 10_000
    await k2.airdrop(manager.pubkey, args["total_bounty_amount"] + 10 * ROE_PER_KOII)
    task, pot = SoldersKeypair(), SoldersKeypair().pubkey()
    fields = {"task_metadata": "", "local_vars": "", **args}
    payer = Pubkey.from_string(manager.pubkey)
    await sign_and_send(
        k2, transactions.create_task(payer, task.pubkey(), pot, fields, space), manager, task
    )
    return str(task.pubkey())


async def stake(k2: LocalK2, key: Keypair, task_id: str, amount: int = 2 * ROE_PER_KOII) -> None:
    """Stake as the Desktop node does: a wallet creates the staking account (owned by the
    task program) with the stake in it, and the staking key stakes it."""
    payer = await _fee_payer(k2)
    pot = Pubkey.from_string((await k2.get_task_state(task_id))["stake_pot_account"])
    built = transactions.stake(
        Pubkey.from_string(payer.pubkey),
        Pubkey.from_string(key.pubkey),
        Pubkey.from_string(task_id),
        pot,
        amount,
        "http://127.0.0.1:1",
        await transactions.staking_lamports(k2, key.pubkey),
    )
    await sign_and_send(k2, built, payer, key)


def full_disk(*_: Any, **__: Any) -> NoReturn:
    """A write to a disk with no room left: a stand-in for any store's or file's write."""
    raise OSError(28, "No space left on device")


@pytest.fixture
def ipfs_store(tmp_path: Path) -> Iterator[EmbeddedIpfs]:
    ipfs = EmbeddedIpfs.open(tmp_path / "ipfs")
    yield ipfs
    ipfs.close()


@pytest.fixture
def keys() -> dict[str, Keypair]:
    """A task manager and four nodes (a, b, c, d), for the K2 rules' tests."""
    return {name: Keypair.generate() for name in ("manager", "a", "b", "c", "d")}


async def staked_task(k2: LocalK2, keys: dict[str, Keypair], **overrides: Any) -> str:
    task_id = await create_task(k2, keys["manager"], **overrides)
    for name in ("a", "b", "c", "d"):
        await stake(k2, keys[name], task_id)
    return task_id


async def submit_all(
    k2: LocalK2, clock: FakeClock, keys: dict[str, Keypair], task_id: str, round_: int
) -> None:
    clock.to_slot(k2, 20 * (round_ + 1))
    for name in ("a", "b", "c", "d"):
        await send(k2, keys[name], "SubmitTask", task_id, submission=f"v-{name}", round=round_)


async def signed_submission(
    k2: LocalK2,
    key: Keypair,
    task_id: str,
    payer: Keypair,
    blockhash: str | None = None,
    checked: bool = True,
) -> wire.Signed:
    """A signed SubmitTask of round 0, not sent (`checked=False`: stand-in signatures)."""
    task, me = Pubkey.from_string(task_id), Pubkey.from_string(key.pubkey)
    ix = transactions.round_action(Ix.SUBMIT_TASK, task, me, submission="x", round=0)
    blockhash = blockhash or (await k2.latest_blockhash())[0]
    signers = [wire.signer(key)]
    return wire.sign([ix], wire.signer(payer), signers, Hash.from_string(blockhash), checked)


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], within: float = 30.0, every: float = 0.05
) -> None:
    """Wait on a condition, never on a fixed sleep; fail with a clear message at the bound."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


class RecordingK2(LocalK2):
    """A local K2 that remembers every transaction it was sent, accepted or not."""

    sent: list[tuple[str, str, Any]]

    async def send(self, raw: bytes) -> str:
        if not hasattr(self, "sent"):
            self.sent = []
        message = Transaction.from_bytes(raw).message
        for compiled in message.instructions:
            if message.account_keys[compiled.program_id_index] != wire.PROGRAM_ID:
                continue
            ix, fields = wire.decode(compiled.data)
            roles = wire.roles(ix, [message.account_keys[i] for i in compiled.accounts])
            signer = roles.get("signer") or roles.get("payer")
            self.sent.append((PROGRAM_NAMES[ix], str(signer), fields.get("round")))
        return await super().send(raw)

    def attempts(self, ix: str, signer: str) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for sent_ix, sent_signer, round_ in getattr(self, "sent", []):
            if sent_ix == ix and sent_signer == signer:
                counts[round_] = counts.get(round_, 0) + 1
        return counts


def node_settings(data_dir: Path, task_id: str, entry: str = "", **extra: Any) -> Settings:
    from k2node.config import DEFAULT_TASK_ENTRY

    return Settings(
        data_dir=data_dir,
        wallet_location=data_dir / "wallets" / "id.json",
        tasks=(task_id,),
        task_stakes=(2 * ROE_PER_KOII,),
        server_port=0,
        task_entry=entry or DEFAULT_TASK_ENTRY,
        **extra,
    )


def task_file(name: str) -> str:
    return str(REPO / "tests" / "tasks" / name)


NPM_CACHE = Path.home() / ".cache" / "k2node-tests"


def npm_modules(package: str, folder: str, name: str) -> Path:
    """A node_modules holding `package` (an npm spec whose module is `name`), installed once
    into ~/.cache/k2node-tests/<folder>; the test is skipped, saying why, where Node.js, npm
    or the registry is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed on this machine")
    cache = NPM_CACHE / folder
    modules = cache / "node_modules"
    if not (modules / name).is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
                str(cache),
                package,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install {package}: {done.stderr.strip()[-300:]}")
    return modules


def log_events(path: Path) -> list[dict[str, object]]:
    """The JSON events of a node's log file (other lines skipped; none if it is not there)."""
    found = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found
