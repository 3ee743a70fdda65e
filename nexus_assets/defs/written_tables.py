"""The Arrow tables this process has just written, kept to answer its own reads of those files.

The steps of an in-process run read back what the step before them wrote a moment ago (the
dashboard alone reads nine files a page, 365 pages a year); decoding a small Parquet file costs
about half a millisecond, more than the page needs from it. :data:`WRITTEN` keeps each file's
bytes and the table they were made from, and :func:`nexus_assets.defs.storage._read_table`
answers with that table when the file still holds exactly those bytes (read and compared: tens
of microseconds for a partition). Anything else (another process's write, a restated day, a
damaged or deleted file) makes the entry stale, and the file is decoded as before.

What comes back is what reading the file gives: Parquet stores the Arrow schema with its
metadata, and every stored table decodes to the table it was written from
(``nexus_assets_tests/defs/test_written_tables.py`` checks each stored table's shape, and that a
run's outputs are byte-identical with and without it).

Memory is bounded: ``NEXUS_READ_CACHE_MB`` (default 256; 0 turns it off), least recently used
first out; a table larger than an eighth of the budget is not kept. Object-store paths are never
kept (their reads are not answered from here).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable

import pyarrow as pa

__all__ = ["WRITTEN", "WrittenTables"]

_DEFAULT_MB = 256


def _budget_from_env() -> int:
    configured = os.environ.get("NEXUS_READ_CACHE_MB", "").strip()
    megabytes = float(configured) if configured else _DEFAULT_MB
    return max(0, int(megabytes * 2**20))


def _holds(path: str, blob: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(blob) + 1) == blob
    except OSError:
        return False


class WrittenTables:
    """Tables by local file path, each with the bytes written to the file."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self._budget = _budget_from_env() if budget_bytes is None else budget_bytes
        self._entries: OrderedDict[str, tuple[bytes, pa.Table, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, written: Iterable[tuple[str, pa.Table, bytes]]) -> None:
        """Keep each ``(path, table, bytes written to path)`` (call once the files are in place)."""
        if self._budget <= 0:
            return
        for path, table, blob in written:
            size = table.nbytes + len(blob)
            with self._lock:
                self._drop(path)
                if size > self._budget // 8:
                    continue
                self._entries[path] = (blob, table, size)
                self._bytes += size
                while self._bytes > self._budget:
                    self._drop(next(iter(self._entries)))

    def get(self, path: str) -> pa.Table | None:
        """The table written to ``path`` if the file still holds the bytes written, else None."""
        with self._lock:
            entry = self._entries.get(path)
        if entry is None:
            return None
        blob, table, _ = entry
        if not _holds(path, blob):
            with self._lock:
                if self._entries.get(path) is entry:
                    self._drop(path)
            return None
        with self._lock:
            if path in self._entries:
                self._entries.move_to_end(path)
        return table

    def set_budget(self, budget_bytes: int) -> None:
        """A new budget (0 turns keeping off); what no longer fits is let go."""
        with self._lock:
            self._budget = max(0, budget_bytes)
            while self._entries and self._bytes > self._budget:
                self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None:
            self._bytes -= entry[2]


WRITTEN = WrittenTables()
"""This process's tables just written (budget read from the environment when first imported)."""
