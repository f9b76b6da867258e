"""LocalK2: the embedded settlement layer, a K2 look-alike.

A slot clock and the task program's rules (program.py) over a world of task states in the
contract's JSON shape (world.py). It takes K2's own transactions, Solana's wire format:
every signature is verified, the blockhash must be one of the last 150 slots', a signature
is applied once, and the payer is charged the fee. Applied transactions are appended to a
LevelDB log (their wire bytes and slot) and the world is snapshotted now and then
(snapshot.py), so a restart replays to exactly the state it had.

A simulation's K2 (`simulated`) keeps its world in memory only and checks no signature:
its transactions come from the simulation's own nodes, in its own process, which sign them
with stand-ins (`checks_signatures`, wire.sign); the world ends with the run.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from solders.hash import Hash
from solders.transaction import Transaction

from k2node.contract.rounds import Schedule
from k2node.contract.task_state import OPTION_SECTIONS
from k2node.contract.units import DEFAULT_SLOT_MS, SlotClock
from k2node.logs import get_logger
from k2node.settlement import accounts
from k2node.settlement.base import (
    Account,
    BlockhashExpired,
    DuplicateTransaction,
    SlotClocked,
    TransactionError,
)
from k2node.settlement.log_writer import LogWriter
from k2node.settlement.program import apply, instruction_names
from k2node.settlement.snapshot import LOG_PREFIX, Snapshots
from k2node.settlement.task_ix import airdrop
from k2node.settlement.world import World
from k2node.store import Store, StoreError

log = get_logger("k2node.k2")

# A blockhash is good for this many slots, as on K2.
BLOCKHASH_SLOTS = 150
# The largest transaction a K2 validator takes (Solana's packet size).
MAX_TRANSACTION_BYTES = 1232
# A snapshot is written after SNAPSHOT_EVERY transactions, or after as many as a quarter of
# the last snapshot's entries if that is more: writing one costs time in proportion to the
# world, so spacing them in proportion too keeps their cost per transaction flat however
# large the world grows, and the log replayed at open stays a fraction of the snapshot.
SNAPSHOT_EVERY = 2_000
SNAPSHOT_SHARE = 4
STORE_FORMAT = "wire-1"


@functools.lru_cache(maxsize=64)
def _sections_wanted(options: frozenset[str]) -> frozenset[str]:
    """The heavy sections a getTaskState's options ask for."""
    return frozenset(s for opt in options for s in OPTION_SECTIONS.get(opt, ()))


class LocalK2(SlotClocked):
    def __init__(
        self,
        store: Store,
        world: World,
        snapshots: Snapshots,
        slots: SlotClock,
        clock: Callable[[], float],
        simulated: bool = False,
    ) -> None:
        super().__init__(slots, clock)
        self._simulated = simulated
        self._store = store
        self._world = world
        self._snapshots = snapshots
        # Group commit: an answer waits until its log entry is on disk (log_writer.py).
        self._log_writer = LogWriter(store, snapshots.seq, kept=not simulated)
        self._since_snapshot = 0
        # Held by every write, and by a snapshot while its thread reads the world.
        self._lock = asyncio.Lock()
        self._snapshot_thread = ThreadPoolExecutor(1, thread_name_prefix="k2-snapshot")
        self._snapshot_task: asyncio.Task[None] | None = None
        self._hashes: dict[Hash, int] = {}  # recent blockhash -> its slot
        self.tx_count: dict[str, int] = {}  # received transactions by instruction (tests, metrics)

    @property
    def log_writable(self) -> bool:
        """False while the disk refuses the log's batches (what was applied waits to go down)."""
        return not self._log_writer.disk.active

    @property
    def seq(self) -> int:
        """The number of the last change in the log."""
        return self._log_writer.seq

    @classmethod
    def open(
        cls,
        path: Path,
        slot_ms: float = DEFAULT_SLOT_MS,
        clock: Callable[[], float] = time.time,
        simulated: bool = False,
    ) -> LocalK2:
        """Open (or create) the local K2 at `path` and replay it to its last state;
        `simulated`: a simulation's (see above), whose changes are not written."""
        if slot_ms <= 0:
            raise ValueError("slot time must be positive")
        store = Store.open(path)
        meta = store.get("meta")
        if meta is None:
            meta = {"genesis": clock(), "slot_ms": slot_ms, "format": STORE_FORMAT}
            # synced: a later sync need not carry it (LevelDB may have changed log file),
            # and a K2 that lost its genesis would count its slots from another instant
            store.put("meta", meta, sync=not simulated)
        elif meta.get("format") != STORE_FORMAT:
            store.close()
            raise StoreError(
                f"{path} holds a local K2 written by an older k2node (JSON transactions, not "
                "K2's wire format): move it away to start a new one"
            )
        elif meta["slot_ms"] != slot_ms:
            log.warning("k2_slot_time_kept", stored=meta["slot_ms"], asked=slot_ms)
        snapshots, world = Snapshots.load(store)
        slots = SlotClock(float(meta["genesis"]), float(meta["slot_ms"]))
        k2 = cls(store, world, snapshots, slots, clock, simulated)
        replayed = 0
        for _key, entry in store.items(LOG_PREFIX):
            snapshots.saw_log_entry(entry["seq"])
            if entry["seq"] <= snapshots.seq:
                continue
            if "airdrop" in entry:
                to, amount, signature = entry["airdrop"]
                airdrop(world, to, amount)
                if signature is not None:
                    world.signatures[signature] = entry["slot"]
            else:
                try:
                    tx = Transaction.from_bytes(base64.b64decode(entry["tx"]))
                    apply(world, tx, entry["slot"])
                except TransactionError as exc:  # refused as it was when sent: no change
                    log.warning("k2_log_entry_refused", seq=entry["seq"], error=str(exc))
            k2._log_writer.replayed(entry["seq"])
            replayed += 1
        k2._since_snapshot = replayed  # a K2 restarted often still snapshots on time
        log.info(
            "k2_opened",
            path=str(path),
            seq=k2.seq,
            replayed=replayed,
            slot=k2.current_slot(),
            tasks=len(world.tasks),
        )
        return k2

    def close(self) -> None:
        """Write a final snapshot and close the store.

        Synchronous, on the caller's thread: it runs once the node's other work has stopped.
        """
        if self._store.closed:
            return
        self._log_writer.flush_now()
        self._snapshot_thread.shutdown(wait=True)  # a snapshot being written completes first
        task = self._snapshot_task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            task.cancel()
        if self._snapshots.seq != self.seq and not self._simulated:
            self._snapshots.write(self._world, self.seq)
        self._store.close()

    async def aclose(self) -> None:
        """Close at shutdown, in a time that does not grow with the world: a snapshot being
        written is let finish, and none is started. What the log holds since the last one
        (see SNAPSHOT_EVERY) is replayed on the next open."""
        if self._store.closed:
            return
        task = self._snapshot_task
        if task is not None and not task.done():
            await asyncio.wait({task})
        async with self._lock:  # a snapshot asked for by hand, if any, is done too
            await self._log_writer.close()
            self._snapshot_thread.shutdown(wait=False)
            self._store.close()

    @property
    def checks_signatures(self) -> bool:
        return not self._simulated

    # -- reads -------------------------------------------------------------------------
    async def get_task_state(
        self, task_id: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The task's state; its containers are shared, read-only copies (reads.py)."""
        state = self._world.task(task_id)
        reads = self._world.reads
        asked = frozenset(opt for opt, on in options.items() if on) if options else frozenset()
        out = reads.task_state(state, _sections_wanted(asked))
        out["current_round"] = max(0, Schedule.of(state).round_of(self.current_slot()))
        return out

    async def get_round_sections(
        self, task_id: str, round_: int, sections: tuple[str, ...]
    ) -> dict[str, Any]:
        state = self._world.task(task_id)
        key = str(round_)
        return {s: {key: self._world.reads.part(state, s, key)} for s in sections}

    async def get_section(self, task_id: str, section: str) -> Any:
        return self._world.reads.section(self._world.task(task_id), section)

    async def get_distribution_list(
        self, task_id: str, submitter: str, round_: int
    ) -> dict[str, int] | None:
        self._world.task(task_id)
        private = self._world.private[task_id]
        found = private.lists.get(str(round_), {}).get(submitter)
        return None if found is None else self._world.reads.distribution_list(found)

    async def get_balance(self, pubkey: str) -> int:
        return self._world.balances.get(pubkey, 0)

    async def get_account(self, pubkey: str) -> Account | None:
        return accounts.account(self._world, pubkey)

    async def get_program_accounts(
        self, program: str, filters: list[accounts.Filter]
    ) -> list[tuple[str, Account]]:
        return accounts.program_accounts(self._world, program, filters)

    async def signature_slot(self, signature: str) -> int | None:
        """The slot a transaction was applied at, or None if it was not (or is forgotten)."""
        return self._world.signatures.get(signature)

    async def transaction_applied(self, signature: str) -> bool:
        if signature not in self._world.signatures:
            return False
        await self._log_writer.on_disk(self.seq)  # applied means on disk, for whoever asks
        return True

    def blockhash_of(self, slot: int) -> Hash:
        genesis = repr(self.wall_time_of_slot(0)).encode()
        return Hash(hashlib.sha256(b"k2node-slot:" + genesis + slot.to_bytes(8, "little")).digest())

    async def latest_blockhash(self) -> tuple[str, int]:
        """The current slot's blockhash, and the last slot it is good for."""
        slot = self.current_slot()
        return str(self.blockhash_of(slot)), slot + BLOCKHASH_SLOTS

    def _recent(self, blockhash: Hash, slot: int) -> bool:
        if self._hashes.get(blockhash, -1) >= slot - BLOCKHASH_SLOTS:
            return True
        # refresh the window of good blockhashes (151 hashes: the slot moved, or the hash
        # is unknown)
        self._hashes = {
            self.blockhash_of(s): s for s in range(max(0, slot - BLOCKHASH_SLOTS), slot + 1)
        }
        return blockhash in self._hashes

    # -- writes ------------------------------------------------------------------------
    async def airdrop(self, pubkey: str, amount: int, signature: str | None = None) -> None:
        """The development faucet (requestAirdrop): the node or a devnet's wallets. A
        `signature` is remembered as a transaction's, for clients that confirm it."""
        async with self._lock:
            slot = self.current_slot()
            airdrop(self._world, pubkey, amount)  # raises, nothing changed, if refused
            if signature is not None:
                self._world.signatures[signature] = slot
            seq = self._log(lambda: {"airdrop": [pubkey, amount, signature], "slot": slot})
        await self._log_writer.on_disk(seq)

    async def send(self, raw: bytes) -> str:
        """Check and apply a wire transaction; its signature, or TransactionError saying why."""
        if len(raw) > MAX_TRANSACTION_BYTES:
            raise TransactionError(
                f"transaction is {len(raw)} bytes, at most {MAX_TRANSACTION_BYTES} fit"
            )
        try:
            tx = Transaction.from_bytes(raw)
            tx.sanitize()
        except Exception as exc:  # solders raises its own kinds for every malformation
            raise TransactionError(f"malformed transaction: {exc}") from None
        if tx.message.has_duplicates():
            raise TransactionError("an account is loaded twice (AccountLoadedTwice)")
        if self.checks_signatures:
            try:
                tx.verify()
            except Exception:
                raise TransactionError("signature verification failed") from None
        for name in instruction_names(tx):
            self.tx_count[name] = self.tx_count.get(name, 0) + 1
        signature = str(tx.signatures[0])
        async with self._lock:  # free unless a snapshot is being written
            duplicate = signature in self._world.signatures
            seq = self.seq
            if not duplicate:
                slot = self.current_slot()
                if not self._recent(tx.message.recent_blockhash, slot):
                    raise BlockhashExpired("Blockhash not found (older than 150 slots, or unknown)")
                apply(self._world, tx, slot)  # raises, the world unchanged, when refused
                seq = self._log(lambda: {"tx": base64.b64encode(raw).decode(), "slot": slot})
        await self._log_writer.on_disk(seq)  # "already processed" too only once on disk
        if duplicate:
            raise DuplicateTransaction("This transaction has already been processed")
        return signature

    def _log(self, entry: Callable[[], dict[str, Any]]) -> int:
        """Append an applied change to the log (the caller holds the lock); its number.
        `entry` makes it: a simulation's K2 only counts its changes, and makes none."""
        if self._simulated:
            return self._log_writer.append(None)
        seq = self._log_writer.append(entry())
        self._since_snapshot += 1
        if self._since_snapshot >= self._snapshot_spacing():
            self._start_snapshot()
        return seq

    # -- snapshots ---------------------------------------------------------------------
    def _snapshot_spacing(self) -> int:
        return max(SNAPSHOT_EVERY, self._snapshots.entries // SNAPSHOT_SHARE)

    async def snapshot(self) -> None:
        """Snapshot the world as it is now; transactions wait, the event loop does not."""
        async with self._lock:
            if self._store.closed:
                return
            # the log entries the snapshot covers go down first, so that it deletes them all
            await self._log_writer.flush()
            self._since_snapshot = 0
            job = functools.partial(self._snapshots.write, self._world, self.seq)
            loop = asyncio.get_running_loop()
            await _outlast_cancellation(loop.run_in_executor(self._snapshot_thread, job))

    def _start_snapshot(self) -> None:
        # It runs once this transaction's caller lets the loop go, and takes the lock in turn.
        if self._snapshot_task is None or self._snapshot_task.done():
            self._snapshot_task = asyncio.get_running_loop().create_task(
                self._background_snapshot(), name="k2-snapshot"
            )

    async def _background_snapshot(self) -> None:
        try:
            await self.snapshot()
        except Exception:
            # the log still holds every transaction; the next snapshot covers them
            log.exception("k2_snapshot_failed", seq=self.seq)


async def _outlast_cancellation(future: asyncio.Future[None]) -> None:
    """Wait for `future` to finish even when cancelled, then pass the cancellation on.

    The snapshot's thread reads the world: the lock around it must not be let go (and a
    transaction change the world) while the thread still runs.
    """
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not future.cancelled() and future.exception() is not None:
            log.error("k2_snapshot_failed", error=repr(future.exception()))
        raise asyncio.CancelledError
    future.result()
