"""How the local K2 keeps its world in LevelDB: a log of applied transactions, and a snapshot
of the world that the log continues.

A snapshot is the world cut into pieces of at most CHUNK_ENTRIES map entries (per task, per
section, per round; see WORLD_LAYOUT), written in one atomic write batch together with a
header (the log seq it covers and its number of pieces), the deletion of the last snapshot's
surplus pieces, and the deletion of the log entries it covers. A crash before the batch
leaves the previous snapshot and the whole log; a crash after it leaves the new snapshot and
the log after it: nothing is lost either way. The log entries to delete are known by number
(from the previous snapshot's seq, or the first entry seen at open), never found by a scan.

LocalK2 builds and writes a snapshot on a worker thread while holding the lock that every
transaction takes, so the world stands still meanwhile and the event loop stays free. That
works because no single step holds the GIL for long: the json module's C encoder never
releases it, but each piece is small (about a millisecond to encode), and between pieces
the interpreter hands the GIL to the loop's thread after at most its switch interval (5 ms).
One whole-world `json.dumps` in a thread would hold it for hundreds of milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeAlias

from k2node.contract.task_state import ROUND_SECTIONS
from k2node.settlement.world import World
from k2node.store import Store, StoreError

LOG_PREFIX = "log/"
HEADER = "snapshot"
CHUNK_ENTRIES = 1_000


def log_key(seq: int) -> str:
    return f"{LOG_PREFIX}{seq:012d}"


def _piece_key(index: int) -> str:
    return f"{HEADER}/{index:08d}"


@dataclass(frozen=True)
class _Map:
    """A map, cut into chunks of entries; its dict values follow `values` when it is set."""

    values: Layout | None = None


# Where the world's JSON may grow large: a dict names the parts of a record worth cutting
# (the rest of the record is one piece), a _Map is a map. Anything else stays inline; the
# loader does not depend on the layout, so changing it only changes the size of pieces.
Layout: TypeAlias = "_Map | dict[str, Layout]"

_TASK_STATE: Layout = {
    **dict.fromkeys(ROUND_SECTIONS, _Map(_Map())),  # round -> key -> entry
    "available_balances": _Map(),
    "stake_list": _Map(),
    "ip_address_list": _Map(),
}
_TASK_PRIVATE: Layout = {
    "lists": _Map(_Map(_Map())),  # round -> submitter -> node -> amount
    "attempts": _Map(),
    "attempt_submitters": _Map(_Map()),
    "last_submission": _Map(),
    "uploads": _Map(_Map(_Map())),  # round -> uploader/attempt -> chunk index -> hex
}
WORLD_LAYOUT: Layout = {
    "balances": _Map(),
    "tasks": _Map(_TASK_STATE),
    "private": _Map(_TASK_PRIVATE),
    "signatures": _Map(),
    "accounts": _Map(),
}

# A piece: the path of keys to a dict, and entries to add to it, in order. A dict that is
# cut further appears as {} in its parent's piece and is filled by the pieces after it, so
# every dict keeps its key order (submission order matters to the distribution rules).
Piece: TypeAlias = tuple[list[str], dict[str, Any]]


def _pieces(value: dict[str, Any], layout: Layout, path: list[str]) -> Iterator[Piece]:
    if isinstance(layout, dict):
        yield path, {k: {} if k in layout and isinstance(v, dict) else v for k, v in value.items()}
        for name, part in layout.items():
            inner = value.get(name)
            if isinstance(inner, dict):
                yield from _pieces(inner, part, [*path, name])
        return
    entries = iter(value.items())
    while chunk := dict(islice(entries, CHUNK_ENTRIES)):
        if layout.values is None:
            yield path, chunk
            continue
        yield path, {k: {} if isinstance(v, dict) else v for k, v in chunk.items()}
        for k, v in chunk.items():
            if isinstance(v, dict):
                yield from _pieces(v, layout.values, [*path, k])


def world_pieces(world: World) -> Iterator[Piece]:
    return _pieces(world.to_json(), WORLD_LAYOUT, [])


def assemble(pieces: Iterator[Piece]) -> dict[str, Any]:
    """The JSON value that `pieces` were cut from."""
    root: dict[str, Any] = {}
    for path, entries in pieces:
        target = root
        for key in path:
            target = target[key]
        target.update(entries)
    return root


class Snapshots:
    """The world's snapshot in the store, and what the next one replaces.

    `write` runs on one thread at a time; LocalK2 keeps the world still while it runs.
    """

    def __init__(
        self, store: Store, seq: int, pieces: int, log_start: int, entries: int = 0
    ) -> None:
        self._store = store
        self.seq = seq  # the last log entry the snapshot covers
        self.entries = entries  # the map entries it holds: what writing the next one costs
        self._pieces = pieces
        self._log_start = log_start  # the lowest log entry that may still be stored

    @classmethod
    def load(cls, store: Store) -> tuple[Snapshots, World]:
        header = store.get(HEADER)
        if header is None:
            return cls(store, 0, 0, 1), World()
        seq = int(header["seq"])
        count = int(header["pieces"])
        world = World.from_json(assemble(_stored_pieces(store, count)))
        return cls(store, seq, count, seq + 1, int(header.get("entries", 0))), world

    def saw_log_entry(self, seq: int) -> None:
        """Note an entry found in the log at open, so the next snapshot deletes it too."""
        self._log_start = min(self._log_start, seq)

    def write(self, world: World, seq: int) -> None:
        """Replace the snapshot with `world` as of log entry `seq`, and drop the log up to it."""
        items: dict[str, Any] = {
            _piece_key(i): piece for i, piece in enumerate(world_pieces(world))
        }
        count = len(items)
        entries = sum(len(piece[1]) for piece in items.values())
        stale = [_piece_key(i) for i in range(count, self._pieces)]
        stale += [log_key(s) for s in range(self._log_start, seq + 1)]
        items[HEADER] = {"seq": seq, "pieces": count, "entries": entries}
        self._store.put_many(items, delete=stale)
        self.seq, self._pieces, self._log_start = seq, count, seq + 1
        self.entries = entries


def _stored_pieces(store: Store, count: int) -> Iterator[Piece]:
    for index in range(count):
        found = store.get(_piece_key(index))
        if found is None:
            raise StoreError(f"{store.path}: snapshot piece {index} of {count} is missing")
        path, entries = found
        yield path, entries
