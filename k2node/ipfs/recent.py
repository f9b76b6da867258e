"""Small files read lately, kept in memory by CID and path.

Content under a CID never changes, and what is kept here was verified when it was read, so
a copy serves every later read of it. Auditors read each other's small submissions many
times a round (several auditors per submission, and in a simulation all of them share one
store): kept, each is read from disk, checked and decoded once.
"""

from __future__ import annotations

from collections import OrderedDict

SMALL_FILE_BYTES = 16 * 1024  # larger files are read from the blocks each time
KEPT_BYTES = 4 * 1024 * 1024  # all kept files together; the least recently read go first


class RecentFiles:
    def __init__(self, file_bytes: int = SMALL_FILE_BYTES, kept_bytes: int = KEPT_BYTES) -> None:
        self._file_bytes = file_bytes
        self._kept_bytes = kept_bytes
        self._files: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self.hits = 0

    def get(self, cid: str, path: str, max_bytes: int) -> bytes | None:
        """The file if kept and within `max_bytes` (a larger one is refused by the reader,
        as it would be uncached)."""
        found = self._files.get((cid, path))
        if found is None or len(found) > max_bytes:
            return None
        self._files.move_to_end((cid, path))
        self.hits += 1
        return found

    def keep(self, cid: str, path: str, data: bytes) -> None:
        if len(data) > self._file_bytes or (cid, path) in self._files:
            return
        self._files[(cid, path)] = data
        self._size += len(data)
        while self._size > self._kept_bytes:
            _, dropped = self._files.popitem(last=False)
            self._size -= len(dropped)

    def __len__(self) -> int:
        return len(self._files)
