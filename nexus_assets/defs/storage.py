"""One IO manager for every asset: Hive-style Parquet, one file per asset x date partition.

Layout: ``<root>/<asset key>/asset=<asset>/date=<YYYY-MM-DD>.parquet``. Each file also holds its
rows' own columns, so the whole tree reads as one dataset (DuckDB ``read_parquet(...,
hive_partitioning=true)``, Polars ``scan_parquet``, Spark). Writes are atomic (:mod:`nexus_assets.atomic`): a local file is
written under a hidden temporary name in the same folder and renamed over the target; an object
store (``s3://`` and other fsspec roots) gets a single PUT, which is atomic there. A writer killed
mid-write leaves only its hidden temporary file, which the next write of that partition removes
(at once when the temp's writer process is gone, else after an hour).

Assets hand over ``{partition key: DataFrame}`` (a range run stores one file per key); inputs
come back the same way, in key order, skipping partitions missing at the start of history when
the input says ``allow_missing_partitions``.

Windows counted in observations: a partition mapping is in calendar days, but a step needs a
number of *observations* (non-empty partitions, e.g. ``lookback + h`` rows of a horizon), and
upstream gaps (days without rows) can leave fewer in the mapped window.
:meth:`PartitionFrames.history` reads back from the run's first day, partition by partition,
until the step's own rule says it has enough, continuing into stored partitions older than the
mapped window when it must (found by listing the asset's folder).
:meth:`PartitionFrames.everything` reads a few columns of every stored partition of an asset.

An asset whose partition holds several tables declares them in its definition metadata
(``tables: ["signals", "slopes"]``) and hands over ``{partition key: {table: DataFrame}}``; each
table is its own Hive dataset, ``<root>/<asset key>/<table>/asset=<asset>/date=<day>.parquet``,
and comes back as a :class:`PartitionTables` mapping read lazily. Each file is written atomically;
the tables of one partition are written one after the other, so a writer killed between two
leaves a partition whose tables come from different attempts until it is re-materialised (the
materialisation is only recorded after the last write, so Dagster shows it as not done).

Contracts: before anything is written, every partition of a table named in
:data:`nexus_assets.core.contract.STORED_TABLES` (a multi-table asset's table name, else the asset's
name) is checked against its schema (:func:`nexus_assets.core.contract.table_problems`: columns,
order, dtypes, nulls, value ranges, the key's uniqueness; told from the Arrow table about to be
written by :func:`~nexus_assets.core.contract.table_passes` when that finds nothing). A failure raises
:class:`TableContractError` naming the table, the partition, the column and the rule, and writes
no file of the run.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext
from upath import UPath

from nexus_assets.atomic import local_path, write_bytes_atomic, write_many_atomic
from nexus_assets.core.contract import STORED_TABLES, Problem, table_passes, table_problems
from nexus_assets.core.parallel import ordered_map
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import split_key
from nexus_assets.defs.written_tables import WRITTEN

__all__ = [
    "ParquetPartitionIOManager",
    "PartitionFrames",
    "PartitionTables",
    "Rule",
    "TableContractError",
    "TABLES_METADATA",
    "partition_path",
    "read_columns",
    "read_parquet",
    "write_parquet_atomic",
]

TABLES_METADATA = "tables"  # definition metadata key: the table names of a multi-table asset
Rule = Callable[[pd.DataFrame | None], Callable[[pd.DataFrame], bool]]
"""How much history a step needs: given the run's own rows, a test of each further partition read."""


def partition_path(root: str, asset_key_path: list[str], partition: str | None) -> UPath:
    base = _dataset_root(str(root), tuple(asset_key_path))
    if partition is None:
        return base / "data.parquet"
    asset, day = split_key(partition)
    return base.joinpath(f"asset={asset}/date={day.isoformat()}.parquet")  # one join: ~0.1 ms less a file


@functools.lru_cache(maxsize=256)
def _dataset_root(root: str, asset_key_path: tuple[str, ...]) -> UPath:
    return UPath(root).joinpath(*asset_key_path)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    return _table_bytes(_arrow_table(frame))


_SCHEMAS: dict[tuple, pa.Schema] = {}  # Arrow schema (pandas metadata included) by column names and dtypes


def _column_arrays(frame: pd.DataFrame) -> list:
    """Each column's values as the frame holds them (a numpy array or a pandas extension array), by
    position. ``DataFrame.items`` builds a Series per column (~20 µs each, two fifths of converting a
    stored table of a dozen columns); pandas' ``_get_column_array`` hands over the array itself.
    Without it (another pandas), the public way."""
    get = getattr(frame, "_get_column_array", None)
    if get is None:
        return [column.to_numpy() if isinstance(column.dtype, np.dtype) else column.array for _, column in frame.items()]
    return [get(i) for i in range(frame.shape[1])]


def _arrow_table(frame: pd.DataFrame, arrays: list | None = None) -> pa.Table:
    """``pa.Table.from_pandas(frame, preserve_index=False)``. For a frame of plain columns (numbers,
    booleans, naive timestamps, strings) that schema depends on the names and dtypes alone, so it
    is worked out once per shape and the columns converted as from_pandas converts them (metrics'
    1825 tables of a year: 1.4 s CPU against 2.0 s). ``arrays``: the frame's
    :func:`_column_arrays`, when the caller has them already."""
    arrays = _column_arrays(frame) if arrays is None else arrays
    shape = _shape(frame, tuple(values.dtype for values in arrays))
    schema = _SCHEMAS.get(shape)
    if schema is not None:
        try:
            return pa.Table.from_arrays([pa.array(np.asarray(values) if isinstance(values.dtype, np.dtype) else values,
                                                  from_pandas=True) for values in arrays], schema=schema)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass  # a value Arrow types otherwise: from_pandas decides, and names the problem
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if schema is None and _plain(frame):
        _SCHEMAS[shape] = table.schema
    return table


def _shape(frame: pd.DataFrame, dtypes: tuple | None = None) -> tuple:
    """What a plain frame's Arrow schema depends on: column names and dtypes, emptiness, and the
    column index's dtype and name (the pandas metadata's ``column_indexes``)."""
    columns = frame.columns
    return (tuple(columns.tolist()), tuple(frame.dtypes.tolist()) if dtypes is None else dtypes, len(frame) == 0,
            columns.dtype, columns.name)


def _plain(frame: pd.DataFrame) -> bool:
    """Columns whose Arrow type and pandas metadata follow from their dtype alone."""
    names = list(frame.columns)
    return all(isinstance(name, str) for name in names) and len(set(names)) == len(names) and all(
        (isinstance(dtype, np.dtype) and dtype.kind in "biufM")  # numpy datetimes are naive
        or (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow")
        for dtype in frame.dtypes
    )


_ZSTD_ROWS = 1_000  # from this many rows a table is compressed with zstd, below with snappy


def _table_bytes(table: pa.Table) -> bytes:
    # Fixed writer options and no index: the same frame always gives the same bytes.
    # No dictionary encoding: Arrow tries a dictionary for every column and falls back when it
    # grows too large; on the stored tables (a hundred rows of mostly distinct numbers, a few
    # labels) it only cost time. Measured on 600 stored partitions of the demo: 0.92 -> 0.66 ms to
    # write a file, 0.72 -> 0.47 ms to read it, 8.8 -> 8.2 KB.
    # The codec follows the table's size (so a table always gets the same one): on the small
    # tables of most steps (a few to a few hundred rows) zstd's per-column set-up outweighs its
    # ratio, and snappy (Parquet's default) is cheaper for the same bytes, give or take 8%:
    # on 3,000 of the demo's files 0.75 -> 0.55 ms to write, 0.71 -> 0.57 ms to read, 8.19 ->
    # 8.59 KiB. On the model-row tables (qml_models, horizon_slices: thousands of rows a day, most
    # of the store's bytes) zstd's files are a quarter smaller (33.8 against 46.8 KiB for 3,000
    # rows) for ~0.4 ms more a file, so they keep it.
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd" if table.num_rows >= _ZSTD_ROWS else "snappy",
                   write_statistics=True, use_dictionary=False)
    return sink.getvalue()


class TableContractError(ValueError):
    """A partition that breaks its table's schema; nothing of the run was written."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def _validated(asset: str, key: str, table: str, frame: pd.DataFrame) -> None:
    schema = STORED_TABLES.get(table)
    if schema is None:
        return
    problems = table_problems(schema, frame)
    if problems:
        shown = "; ".join(
            f"column {p.field!r} breaks rule {p.rule!r} in {p.count} row(s)"
            + (f", e.g. {p.examples[0]}" if p.examples else "")
            for p in problems
        )
        raise TableContractError(
            f"{asset} partition {key}: table {table!r} breaks its contract: {shown}; nothing was written", problems
        )


def _serialised(asset: str, key: str, table: str, multi: bool, frame: pd.DataFrame) -> tuple[pa.Table, bytes]:
    """The partition's Arrow table, checked against its table's contract, and its Parquet bytes."""
    label = f"{key} (table {table})" if multi else key
    arrays = _column_arrays(frame)
    try:
        arrow = _arrow_table(frame, arrays)
    except _UNSTORABLE as exc:
        _validated(asset, key, table, frame)  # a broken contract is named first
        raise _unstorable(asset, label, exc) from None
    schema = STORED_TABLES.get(table)
    # the contract told from the Arrow table where it can be (a fifth of the CPU); table_problems
    # looks again, and names what is wrong, only when that finds something that may break it
    if schema is not None and not table_passes(schema, frame, arrow, dtypes=[values.dtype for values in arrays]):
        _validated(asset, key, table, frame)
    try:
        return arrow, _table_bytes(arrow)
    except _UNSTORABLE as exc:
        raise _unstorable(asset, label, exc) from None


def _publish(files: Sequence[tuple[UPath, pa.Table, bytes]]) -> int:
    """Write every ``(path, table, bytes)`` (all published together, :func:`write_many_atomic`)
    and keep the tables of local files for this process's reads of them (:data:`WRITTEN`)."""
    written = write_many_atomic([(path, blob) for path, _, blob in files])
    WRITTEN.remember((name, table, blob) for path, table, blob in files if (name := local_path(path)) is not None)
    return written


_UNSTORABLE = (pa.ArrowException, ValueError, TypeError, OverflowError)


def _unstorable(asset: str, label: str, exc: Exception) -> ValueError:
    reason = (str(exc).strip().splitlines() or [""])[0]
    return ValueError(
        f"{asset} partition {label}: cannot be stored as Parquet ({type(exc).__name__}: {reason}); "
        "nothing was written (every file of the run is serialised before the first one is replaced)"
    )


def write_parquet_atomic(path: UPath, frame: pd.DataFrame) -> int:
    """Write ``frame`` to ``path`` so that readers see the old file or the new one, never a part."""
    return write_bytes_atomic(path, _parquet_bytes(frame))


_THREADED_ROWS = 50_000  # below this many rows, Arrow's thread pool costs more CPU than it saves


def read_parquet(path: UPath, columns: Sequence[str] | None = None) -> pd.DataFrame:
    table, threads = _read_table(path, columns)
    return table.to_pandas(use_threads=threads)


def read_columns(path: UPath, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The partition's columns as numpy arrays, each what ``read_parquet(path)[name].to_numpy()``
    gives for the stored tables' types (numbers, booleans, dates; text as objects, a missing text
    as NaN like pandas' ``str`` dtype), without building the DataFrame: for a small table, the
    DataFrame and its columns' ``to_numpy`` cost more than reading the file (the dashboard reads
    nine per page and only ever wants arrays)."""
    table, _ = _read_table(path, columns)
    out = {}
    for name, values in zip(table.column_names, table.columns):
        array = values.to_numpy()
        if (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) and values.null_count:
            array[pd.isna(array)] = np.nan
        out[name] = array
    return out


def _read_table(path: UPath, columns: Sequence[str] | None) -> tuple[pa.Table, bool]:
    """The file's table, and whether converting it is worth Arrow's threads."""
    name = local_path(path)
    kept = WRITTEN.get(name) if name is not None else None
    if kept is not None:  # this process wrote the file and it is unchanged: the table it decodes to
        if columns is not None:
            _check_columns(path, kept.column_names, columns)
            kept = kept.select(list(columns))
        return kept, kept.num_rows >= _THREADED_ROWS
    # One file through ParquetFile, not read_table (which sets up a dataset per call): a small
    # partition (a dashboard page reads nine) read in about half the CPU, the same frame.
    with path.open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        if columns is not None:  # read_table refused an unknown column; ParquetFile would skip it
            _check_columns(path, parquet.schema_arrow.names, columns)
        threads = parquet.metadata.num_rows >= _THREADED_ROWS
        return parquet.read(columns=list(columns) if columns is not None else None, use_threads=threads), threads


def _check_columns(path: UPath, names: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise pa.ArrowInvalid(f"{path}: no column {', '.join(missing)}")


def _stored_days(folder: UPath) -> list[dt.date]:
    """The days of the partition files in one ``asset=<a>`` folder (hidden temporary files skipped)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    days = []
    for name in names:
        if name.startswith("date=") and name.endswith(".parquet"):
            try:
                days.append(dt.date.fromisoformat(name[len("date="):-len(".parquet")]))
            except ValueError:
                continue
    return days


class ParquetPartitionIOManager(ConfigurableIOManager):
    """Parquet per partition under ``base_dir`` (a local path or an fsspec URL such as ``s3://bucket/nexus``)."""

    base_dir: str

    def _path(self, asset_key_path: list[str], partition: str | None) -> UPath:
        return partition_path(self.base_dir, asset_key_path, partition)

    def stored(self, asset_key_path: list[str], partition: str) -> pd.DataFrame | None:
        """The partition as it is stored now, to compare with before a rewrite; None when there is
        no readable file (nothing to compare with: the caller says so, the rewrite goes ahead)."""
        path = self._path(asset_key_path, partition)
        try:
            return read_parquet(path)
        except (FileNotFoundError, pa.ArrowInvalid):
            return None

    def stored_rows(self, asset_key_path: list[str], partition: str) -> int | None:
        """How many rows the partition holds now (read from the file's footer); None without a
        readable file."""
        path = self._path(asset_key_path, partition)
        try:
            with path.open("rb") as handle:
                return pq.ParquetFile(handle).metadata.num_rows
        except (FileNotFoundError, pa.ArrowInvalid, OSError):
            return None

    def handle_output(self, context: OutputContext, obj: Mapping[str, pd.DataFrame] | pd.DataFrame) -> None:
        key_path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            if not isinstance(obj, pd.DataFrame):
                raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame, got {type(obj).__name__}")
            write_parquet_atomic(self._path(key_path, None), obj)
            return
        keys = sorted(context.asset_partition_keys)
        tables = _tables(context.definition_metadata)
        if (isinstance(obj, pd.DataFrame) or (tables and _is_table_set(obj, tables))) and len(keys) == 1:
            obj = {keys[0]: obj}
        if not isinstance(obj, Mapping) or sorted(obj) != keys:
            got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(
                f"{context.asset_key.to_user_string()}: the asset must return one DataFrame per partition key "
                f"of the run; expected {keys[:3]}... ({len(keys)} keys), got {str(got)[:200]}"
            )
        frames: list[tuple[UPath, pd.DataFrame]] = []
        labels: list[tuple[str, str]] = []  # what each file is (partition, table), for a message
        if tables:
            for k in keys:
                if not _is_table_set(obj[k], tables):
                    got = sorted(obj[k]) if isinstance(obj[k], Mapping) else type(obj[k]).__name__
                    raise ValueError(
                        f"{context.asset_key.to_user_string()} partition {k}: expected the tables {list(tables)}, "
                        f"got {got}"
                    )
                frames += [(self._path([*key_path, t], k), obj[k][t]) for t in tables]
                labels += [(k, t) for t in tables]
        else:
            frames = [(self._path(key_path, k), obj[k]) for k in keys]
            labels = [(k, key_path[-1]) for k in keys]
        # Every file is checked against its table's schema and serialised (on all cores) before the
        # first one is replaced, then all are published together: a failure leaves the store as it
        # was, and one sync serves them all.
        started = time.monotonic()
        asset = context.asset_key.to_user_string()
        multi = bool(tables)
        serialised = ordered_map(lambda item: _serialised(asset, *item[0], multi, item[1]),
                                 list(zip(labels, (f for _, f in frames))))
        written = _publish([(path, arrow, blob) for (path, _), (arrow, blob) in zip(frames, serialised)])
        blobs = [blob for _, blob in serialised]
        log = getattr(context, "log", None)
        if log is not None:  # the one console line per step: what was done
            rows = sum(len(frame) for _, frame in frames)
            log.info(f"{context.asset_key.to_user_string()}: {len(keys)} partitions, {rows:,} rows, {len(frames)} files, "
                     f"{written / 1e6:.1f} MB written in {time.monotonic() - started:.1f}s")
        # Each partition's materialization describes that partition's files; only the dataset root
        # is the same for all (output metadata would give every partition the run's totals).
        per_key = len(tables) or 1
        attach_partition_metadata(context, {
            k: {"files_written": per_key, "bytes_written": sum(len(b) for b in blobs[i * per_key:(i + 1) * per_key])}
            for i, k in enumerate(keys)
        })
        context.add_output_metadata({"root": str(UPath(self.base_dir).joinpath(*key_path))})

    def load_input(self, context: InputContext) -> Mapping[str, pd.DataFrame] | pd.DataFrame:
        key_path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            return read_parquet(self._path(key_path, None))
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions", False))
        upstream = context.upstream_output
        tables = _tables(upstream.definition_metadata if upstream is not None else None)
        paths: dict[str, UPath | dict[str, UPath]] = {}
        for key in sorted(context.asset_partition_keys):
            if tables:
                # a partition counts as materialised once its last-written table exists
                path = self._path([*key_path, tables[-1]], key)
                if path.exists():
                    paths[key] = {t: self._path([*key_path, t], key) for t in tables}
                    continue
            else:
                path = self._path(key_path, key)
            if not path.exists():
                if allow_missing:
                    continue
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} partition {key} is not materialised ({path}); "
                    "materialise it first (same partition range, upstream asset selected)"
                )
            paths[key] = path
        return PartitionFrames(paths, listing=lambda asset: self._stored(key_path, tables, asset))

    def _stored(self, key_path: list[str], tables: tuple[str, ...], asset: str) -> dict[dt.date, UPath | dict[str, UPath]]:
        """Every stored partition of catalog asset ``asset``, as :class:`PartitionFrames` paths
        (a multi-table partition counts once its last-written table exists)."""
        folder = UPath(self.base_dir).joinpath(*key_path, *tables[-1:]) / f"asset={asset}"
        out: dict[dt.date, UPath | dict[str, UPath]] = {}
        for day in _stored_days(folder):
            key = f"{asset}|{day.isoformat()}"
            out[day] = {t: self._path([*key_path, t], key) for t in tables} if tables else self._path(key_path, key)
        return out


def _tables(metadata: Mapping | None) -> tuple[str, ...]:
    value = (metadata or {}).get(TABLES_METADATA)
    if value is None:
        return ()
    value = getattr(value, "value", value)  # a MetadataValue once Dagster has normalised it
    return tuple(str(t) for t in value)


def _is_table_set(obj: object, tables: tuple[str, ...]) -> bool:
    return isinstance(obj, Mapping) and sorted(obj) == sorted(tables) and all(
        isinstance(v, pd.DataFrame) for v in obj.values()
    )


class PartitionTables(Mapping[str, pd.DataFrame]):
    """The tables of one partition of a multi-table asset, each read when accessed (as a
    DataFrame, or with ``reader=read_columns`` as column arrays)."""

    def __init__(self, paths: Mapping[str, UPath], *, reader: Callable[[UPath], object] = read_parquet) -> None:
        self._paths = dict(paths)
        self._reader = reader

    def __getitem__(self, table: str) -> pd.DataFrame:
        return self._reader(self._paths[table])

    def __contains__(self, table: object) -> bool:  # Mapping's would read the table to find out
        return table in self._paths

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class PartitionFrames(Mapping[str, pd.DataFrame]):
    """The partitions of an input, read from Parquet when accessed (never all at once).

    A trailing window over many assets and days would not fit in memory if loaded eagerly; an
    asset reads one catalog asset's window, computes, and lets it go.
    """

    def __init__(self, paths: Mapping[str, UPath | Mapping[str, UPath]], *,
                 listing: Callable[[str], Mapping[dt.date, UPath | Mapping[str, UPath]]] | None = None) -> None:
        self._paths = dict(paths)
        self._listing = listing  # every stored partition of one catalog asset, mapped or not

    def __getitem__(self, key: str) -> pd.DataFrame | PartitionTables:
        path = self._paths[key]
        if isinstance(path, Mapping):
            return PartitionTables(path)
        return read_parquet(path)

    def __contains__(self, key: object) -> bool:  # Mapping's would read the partition to find out
        return key in self._paths

    def arrays(self, key: str) -> dict[str, np.ndarray] | PartitionTables:
        """The partition ``key`` as column arrays (:func:`read_columns`; a multi-table partition's
        tables each so)."""
        path = self._paths[key]
        if isinstance(path, Mapping):
            return PartitionTables(path, reader=read_columns)
        return read_columns(path)

    def concat(self, asset: str, table: str | None = None, *, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
        """The non-empty partitions of catalog asset ``asset`` (of ``table``, for a multi-table
        input; only ``columns`` if given) as one frame, in date order; None when there is none. A
        window may span many assets: only this one's files are read."""
        prefix = f"{asset}|"
        paths = [path for key, path in self._paths.items() if key.startswith(prefix)]
        tables = [t for t in ordered_map(lambda p: self._read_table(p, table, columns), paths) if t.num_rows]
        if not tables:
            return None
        # one conversion to pandas for the window (365 conversions and a concat: ~0.4 s a year's input)
        # when the partitions share a schema, as the pandas frames would then share their dtypes
        if all(t.schema.equals(tables[0].schema, check_metadata=True) for t in tables[1:]):
            return pa.concat_tables(tables).to_pandas(use_threads=sum(t.num_rows for t in tables) >= _THREADED_ROWS)
        return pd.concat([t.to_pandas(use_threads=t.num_rows >= _THREADED_ROWS) for t in tables], ignore_index=True)

    def history(self, asset: str, days: Sequence[dt.date], *, before: Rule | None = None, after: Rule | None = None,
                table: str | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
        """Catalog asset ``asset``'s partitions of the run (``days[0] .. days[-1]``), the earlier ones
        ``before`` asks for and the later ones ``after`` asks for; rows in date order, None when none.

        A rule is called once with the run's own rows (None when it has none) and returns a test
        that is called with each further non-empty partition as it is read (earlier ones newest
        first, later ones oldest first) and returns True once the step has enough. History is
        counted by the step's own rule (observations), not by calendar days: when upstream gaps
        leave too few observations in the mapped window, stored partitions beyond it are read
        too. Without a rule, a direction reads the mapped window only."""
        mine = self._days(asset)
        first, last = min(days), max(days)
        inside = [p for d, p in sorted(mine.items()) if first <= d <= last]
        run = [f for f in ordered_map(lambda p: self._read(p, table, columns), inside) if len(f)]
        run_rows = pd.concat(run, ignore_index=True) if run else None
        earlier = self._extend(asset, mine, sorted((d for d in mine if d < first), reverse=True), lambda d: d < first,
                               before(run_rows) if before else None, table, columns, newest_first=True)
        later = self._extend(asset, mine, sorted(d for d in mine if d > last), lambda d: d > last,
                             after(run_rows) if after else None, table, columns, newest_first=False)
        frames = [*earlier[::-1], *run, *later]
        return pd.concat(frames, ignore_index=True) if frames else None

    def _extend(self, asset: str, mine: Mapping[dt.date, UPath | Mapping[str, UPath]], inside: list[dt.date],
                outside: Callable[[dt.date], bool], enough: Callable[[pd.DataFrame], bool] | None,
                table: str | None, columns: Sequence[str] | None, *, newest_first: bool) -> list[pd.DataFrame]:
        """Read the mapped partitions ``inside`` (in that order), then, while ``enough`` is not
        satisfied, stored partitions beyond the mapped window on the same side."""
        out: list[pd.DataFrame] = []
        # the mapped window is read whole (in parallel), then taken only as far as ``enough`` asks
        for frame in ordered_map(lambda day: self._read(mine[day], table, columns), inside):
            if len(frame):
                out.append(frame)
                if enough is not None and enough(frame):
                    return out
        if enough is None or self._listing is None:
            return out
        stored = self._listing(asset)
        beyond = [d for d in stored if outside(d) and d not in mine and (not inside or (d < inside[-1] if newest_first
                                                                                        else d > inside[-1]))]
        for day in sorted(beyond, reverse=newest_first):
            frame = self._read(stored[day], table, columns)
            if len(frame):
                out.append(frame)
                if enough(frame):
                    break
        return out

    def everything(self, asset: str, columns: Sequence[str], *, table: str | None = None) -> pd.DataFrame | None:
        """``columns`` of every stored partition of catalog asset ``asset`` (in the mapped window or
        not), in date order; None when there are none."""
        stored = self.stored_days(asset)
        frames = ordered_map(lambda day: self._read(stored[day], table, columns), list(stored))
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else None

    def stored_days(self, asset: str) -> dict[dt.date, UPath | Mapping[str, UPath]]:
        """Every partition of catalog asset ``asset`` this input can read (the mapped window's and
        every other stored one), by date, in date order."""
        return dict(sorted({**(self._listing(asset) if self._listing is not None else {}), **self._days(asset)}.items()))

    @staticmethod
    def read_stored(path: UPath | Mapping[str, UPath], *, table: str | None = None,
                    columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One partition of :meth:`stored_days` (``table`` of a multi-table input)."""
        return PartitionFrames._read(path, table, columns)

    def iter_days(self, asset: str, *, through: dt.date, table: str | None = None,
                  columns: Sequence[str] | None = None, ahead: int = 8) -> Iterator[pd.DataFrame]:
        """The non-empty stored partitions of catalog asset ``asset`` up to ``through``, one frame
        each, in date order, read ``ahead`` at a time (in parallel): a whole history in the memory
        of a few days, for a step that folds it day by day."""
        stored = [path for day, path in self.stored_days(asset).items() if day <= through]
        for first in range(0, len(stored), ahead):
            for frame in ordered_map(lambda path: self._read(path, table, columns), stored[first:first + ahead]):
                if len(frame):
                    yield frame

    def _days(self, asset: str) -> dict[dt.date, UPath | Mapping[str, UPath]]:
        prefix = f"{asset}|"
        return {split_key(key)[1]: path for key, path in self._paths.items() if key.startswith(prefix)}

    @staticmethod
    def _read(path: UPath | Mapping[str, UPath], table: str | None, columns: Sequence[str] | None) -> pd.DataFrame:
        return read_parquet(path[table] if isinstance(path, Mapping) else path, columns)

    @staticmethod
    def _read_table(path: UPath | Mapping[str, UPath], table: str | None, columns: Sequence[str] | None) -> pa.Table:
        return _read_table(path[table] if isinstance(path, Mapping) else path, columns)[0]

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)
