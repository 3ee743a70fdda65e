"""The materialised partitions as the API reads them: which dates are stored, and each file's
frame and content hash, cached by the file's identity.

The layout is the IO manager's (:func:`nexus_assets.defs.storage.partition_path`): one Parquet
file per table, asset and date. A file is only ever replaced by an atomic rename, so its
``(inode, size, mtime)`` changes whenever its bytes do; the cache keys on that triple and a
rewritten partition is read again on the next request. The SHA-256 of a file's bytes is its data
version here: an answer's ``ETag`` is derived from the hashes of the files it was built from.

Local data directories are cached; an fsspec root (``s3://...``) is read on every request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from nexus_assets.core.parallel import ordered_map
from nexus_assets.defs.ensembles import HORIZON_ENSEMBLES
from nexus_assets.defs.metrics import METRIC_TABLES, METRICS
from nexus_assets.defs.ml import ML_PREDICTIONS
from nexus_assets.defs.ml_signals import ML_SIGNALS
from nexus_assets.defs.partitions import partition_key
from nexus_assets.defs.search import HORIZON_SEARCH, SEARCH_TABLES
from nexus_assets.defs.signals import SIGNAL_TABLES, SIGNALS
from nexus_assets.defs.storage import partition_path

__all__ = ["Stored", "Store", "TABLE_LOCATIONS", "identity_of"]

TABLE_LOCATIONS: dict[str, tuple[str, ...]] = {
    "horizon_ensembles": (HORIZON_ENSEMBLES,),
    **{table: (SIGNALS, table) for table in SIGNAL_TABLES},
    **{table: (HORIZON_SEARCH, table) for table in SEARCH_TABLES},
    **{table: (METRICS, table) for table in METRIC_TABLES},
    "ml_predictions": (ML_PREDICTIONS,),
    "ml_signals": (ML_SIGNALS,),
}
"""Every table the API serves, by table name: its asset key path under the data directory."""


class Stored:
    """One partition file as read: its Arrow table, the SHA-256 of its bytes, the day it is for;
    :attr:`frame` is the table as pandas, built once when first asked for (a range is concatenated
    as Arrow tables and converted once, much cheaper than a pandas frame per day)."""

    __slots__ = ("table", "sha256", "day", "_frame")

    def __init__(self, table: pa.Table, sha256: str, day: dt.date) -> None:
        self.table, self.sha256, self.day = table, sha256, day
        self._frame: pd.DataFrame | None = None

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:  # two threads may both build it: the same frame, harmless
            self._frame = self.table.to_pandas()
        return self._frame


class Store:
    """Reads the API's tables under ``data_dir``; thread safe; at most ``max_files`` frames kept."""

    def __init__(self, data_dir: str, *, max_files: int = 8192) -> None:
        self.data_dir = data_dir
        self._local = "://" not in data_dir or data_dir.startswith("file://")
        self._files: OrderedDict[str, tuple[tuple, Stored]] = OrderedDict()
        self._listings: dict[str, tuple[tuple, tuple[dt.date, ...]]] = {}
        self._lock = threading.Lock()
        self._max_files = max_files

    @property
    def local(self) -> bool:
        """A local data directory: files can be told unchanged by their identity (else: read every time)."""
        return self._local

    def path(self, table: str, asset: str, day: dt.date) -> UPath:
        return partition_path(self.data_dir, list(TABLE_LOCATIONS[table]), partition_key(asset, day))

    def days(self, table: str, asset: str, seen: list | None = None) -> tuple[dt.date, ...]:
        """The dates of ``asset`` whose ``table`` partition is stored, ascending (``seen`` gets the
        folder's identity, to tell later whether an answer built on it still holds)."""
        folder = UPath(self.data_dir).joinpath(*TABLE_LOCATIONS[table]) / f"asset={asset}"
        if not self._local:
            return _listed(folder)
        name = str(folder.path if hasattr(folder, "path") else folder)
        identity = identity_of(name)
        if seen is not None:
            seen.append((name, identity))
        if identity is None:
            return ()
        cached = self._listings.get(name)
        if cached is not None and cached[0] == identity:
            return cached[1]
        days = _listed(folder)
        with self._lock:
            self._listings[name] = (identity, days)
        return days

    def latest(self, table: str, asset: str, seen: list | None = None) -> dt.date | None:
        days = self.days(table, asset, seen)
        return days[-1] if days else None

    def read(self, table: str, asset: str, day: dt.date, seen: list | None = None) -> Stored | None:
        """The stored partition, or None when it is not materialised (``seen``: as for :meth:`days`)."""
        stored, consulted = self._read(table, asset, day)
        if seen is not None and consulted is not None:
            seen.append(consulted)
        return stored

    def read_range(self, table: str, asset: str, start: dt.date, end: dt.date, seen: list | None = None) -> list[Stored]:
        """The stored partitions dated ``start .. end`` (the days without a file are skipped); the
        files are read and parsed on threads (Parquet decoding releases the GIL), in date order."""
        days = [d for d in self.days(table, asset, seen) if start <= d <= end]
        out = []
        for stored, consulted in ordered_map(lambda d: self._read(table, asset, d), days):
            if seen is not None and consulted is not None:
                seen.append(consulted)
            if stored is not None:
                out.append(stored)
        return out

    def _read(self, table: str, asset: str, day: dt.date) -> tuple[Stored | None, tuple | None]:
        path = self.path(table, asset, day)
        if not self._local:
            try:
                return _parsed(path.read_bytes(), day), None
            except FileNotFoundError:
                return None, None
        name = str(path.path if hasattr(path, "path") else path)
        identity = identity_of(name)
        if identity is None:
            return None, (name, None)
        with self._lock:
            cached = self._files.get(name)
            if cached is not None and cached[0] == identity:
                self._files.move_to_end(name)
                return cached[1], (name, identity)
        try:
            with open(name, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:  # replaced or removed between the stat and the open
            return None, (name, None)
        stored = _parsed(data, day)
        with self._lock:
            self._files[name] = (identity, stored)
            while len(self._files) > self._max_files:
                self._files.popitem(last=False)
        return stored, (name, identity)


def identity_of(name: str) -> tuple[int, int, int] | None:
    """A local file's or folder's ``(inode, size, mtime)``: it changes whenever the IO manager
    replaces the file (an atomic rename) or adds one to the folder; None when it is missing."""
    try:
        info = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _parsed(data: bytes, day: dt.date) -> Stored:
    return Stored(pq.read_table(io.BytesIO(data)), hashlib.sha256(data).hexdigest(), day)


def _listed(folder: UPath) -> tuple[dt.date, ...]:
    try:
        names: Sequence[str] = [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return ()
    days = []
    for name in names:
        if name.startswith("date=") and name.endswith(".parquet"):  # hidden temporary files are skipped
            try:
                days.append(dt.date.fromisoformat(name[len("date="):-len(".parquet")]))
            except ValueError:
                continue
    return tuple(sorted(days))
