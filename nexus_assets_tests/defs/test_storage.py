import os
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from upath import UPath

from nexus_assets.defs.storage import (
    PartitionFrames,
    PartitionTables,
    partition_path,
    read_columns,
    read_parquet,
    write_parquet_atomic,
)


def frame(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "date": pd.to_datetime(["2025-01-02"] * n),
        "horizon": np.arange(1, n + 1, dtype="int64"),
        "symbol": pd.array([f"1.0_{i}" for i in range(n)], dtype="str"),
        "forecast": rng.normal(100, 1, n),
        "price": np.full(n, 100.0),
    })


def test_layout_and_roundtrip(tmp_path):
    path = partition_path(str(tmp_path), ["horizon_slices"], "1860_Bitcoin|2025-01-02")
    assert path.as_posix().endswith("horizon_slices/asset=1860_Bitcoin/date=2025-01-02.parquet")
    write_parquet_atomic(path, frame())
    pd.testing.assert_frame_equal(read_parquet(path), frame())
    assert [p.name for p in path.parent.iterdir()] == ["date=2025-01-02.parquet"]  # no temp file left


def test_read_columns_and_an_unknown_column(tmp_path):
    path = partition_path(str(tmp_path), ["x"], "1_A|2025-01-02")
    write_parquet_atomic(path, frame())
    pd.testing.assert_frame_equal(read_parquet(path, ["horizon", "symbol"]), frame()[["horizon", "symbol"]])
    with pytest.raises(pa.ArrowInvalid, match="no column nope"):
        read_parquet(path, ["horizon", "nope"])


def _same(want: np.ndarray, got: np.ndarray) -> bool:
    if want.dtype != got.dtype or want.shape != got.shape:
        return False
    if want.dtype.kind == "O":  # the same objects: str, None, NaN (a missing text)
        return all(type(w) is type(g) and (w == g or (w != w and g != g)) for w, g in zip(want.tolist(), got.tolist()))
    if want.dtype.kind == "M":  # NaT where NaT
        return np.array_equal(want.view("int64"), got.view("int64"))
    return np.array_equal(want, got, equal_nan=want.dtype.kind == "f")


@pytest.mark.parametrize("rows", [0, 1, 40])
def test_read_columns_gives_each_column_as_the_frame_would(tmp_path, rows):
    """The slow, obvious reference: read the DataFrame, then ``to_numpy`` each column."""
    rng = np.random.default_rng(rows)
    stored = pd.DataFrame({
        "date": pd.to_datetime("2025-01-02") + pd.to_timedelta(rng.integers(0, 9, rows), unit="D"),
        "exit_date": pd.Series(pd.to_datetime("2025-02-01"), index=range(rows)).where(rng.random(rows) > 0.3),
        "horizon": rng.integers(1, 14, rows).astype("int64"),
        "value": np.where(rng.random(rows) > 0.2, rng.normal(size=rows), np.nan),
        "sufficient": rng.random(rows) > 0.5,
        "symbol": pd.array([f"m{i}" if i % 3 else None for i in range(rows)], dtype="str"),
        "label": pd.array(["<b>x</b>"] * rows, dtype="str"),
    })
    path = partition_path(str(tmp_path), ["x"], "1_A|2025-01-02")
    write_parquet_atomic(path, stored)
    frame, arrays = read_parquet(path), read_columns(path)
    assert list(arrays) == list(frame.columns)
    for name in frame.columns:
        assert _same(frame[name].to_numpy(), arrays[name]), name
    assert list(read_columns(path, ["value", "symbol"])) == ["value", "symbol"]
    frames = PartitionFrames({"1_A|2025-01-02": path, "1_A|2025-01-03": {"t": path}})
    assert all(_same(frame[n].to_numpy(), frames.arrays("1_A|2025-01-02")[n]) for n in frame.columns)
    assert all(_same(frame[n].to_numpy(), frames.arrays("1_A|2025-01-03")["t"][n]) for n in frame.columns)


def test_membership_does_not_read_the_partition(tmp_path):
    """``key in frames`` asks the paths, not the files (Mapping's default read each one, and the
    dashboard asked once per page): a missing file counts as present until it is read."""
    gone = UPath(tmp_path) / "never-written.parquet"
    frames = PartitionFrames({"1_A|2025-01-02": gone})
    tables = PartitionTables({"slopes": gone})
    assert "1_A|2025-01-02" in frames and "1_A|2025-01-03" not in frames
    assert "slopes" in tables and "signals" not in tables
    with pytest.raises(FileNotFoundError):
        frames["1_A|2025-01-02"]


def test_concat_equals_the_partitions_read_one_by_one(tmp_path):
    """The window read as one Arrow table equals the slow reference: each partition read to pandas,
    the empty ones dropped, concatenated; also when the partitions' schemas differ (an int and a
    float column of the same name) and with a subset of the columns."""
    days = [f"2025-01-0{d}" for d in range(1, 8)]
    frames = [frame(n=d % 3 * 2, seed=d) for d in range(1, 8)]  # some partitions are empty
    mixed = frames[:3] + [frames[3].assign(horizon=frames[3]["horizon"].astype("float64"))] + frames[4:]
    for name, parts in (("same", frames), ("mixed", mixed)):
        paths = {f"1_A|{day}": partition_path(str(tmp_path), [name], f"1_A|{day}") for day in days}
        for path, part in zip(paths.values(), parts):
            write_parquet_atomic(path, part)
        window = PartitionFrames({**paths, "2_B|2025-01-01": paths["1_A|2025-01-01"]})
        for columns in (None, ["horizon", "symbol"]):
            read = [read_parquet(path, columns) for path in paths.values()]
            expected = pd.concat([f for f in read if len(f)], ignore_index=True)
            pd.testing.assert_frame_equal(window.concat("1_A", columns=columns), expected)
    assert PartitionFrames({}).concat("1_A") is None


@pytest.mark.parametrize("seed", range(4))
def test_arrow_tables_equal_from_pandas(seed, monkeypatch):
    """The store's conversion (a schema per shape of frame, then the columns) against the slow
    reference ``pa.Table.from_pandas``: the same table, schema and pandas metadata included, and the
    same bytes, for frames of one shape with nulls or none, views, empty frames, and frames whose
    columns the shortcut leaves to from_pandas (objects, time zones)."""
    import pyarrow as pa

    from nexus_assets.defs import storage
    from nexus_assets.defs.storage import _arrow_table, _parquet_bytes, _table_bytes

    rng = np.random.default_rng(seed)

    def plain(n):
        values = rng.normal(size=n)
        values[rng.random(n) < 0.3] = np.nan
        days = pd.Series(pd.Timestamp("2018-01-01") + pd.to_timedelta(rng.integers(0, 9, n), "D"))
        days[rng.random(n) < 0.2] = pd.NaT
        words = pd.Series(rng.choice(["raw", "optimised", "é"], n), dtype="str")
        words[rng.random(n) < 0.2] = None
        return pd.DataFrame({"date": days, "stamp": days.astype("datetime64[ns]"), "signal": words, "value": values,
                             "n": rng.integers(-5, 5, n),
                             "ok": rng.random(n) < 0.5, "share": rng.random(n).astype("float32")})

    frames = [plain(int(rng.integers(1, 40))) for _ in range(5)]
    frames += [frames[0].iloc[1:], frames[1].iloc[:0], plain(0), frames[2].take([0, 0])]
    named = frames[3].copy()
    named.columns = pd.Index(list(named.columns), name="fields")  # the same names, another column index
    frames += [named]
    frames += [frames[0].assign(extra=[{"a": 1}] * len(frames[0])),
               frames[0].assign(date=frames[0]["date"].dt.tz_localize("UTC"))]
    for i, frame in enumerate(frames * 2):  # the second time, every plain shape's schema is known
        if i >= len(frames) and i - len(frames) < len(frames) - 2:
            assert storage._SCHEMAS.get(storage._shape(frame)) is not None
        want = pa.Table.from_pandas(frame, preserve_index=False)
        got = _arrow_table(frame)
        assert got.equals(want, check_metadata=True)
        with monkeypatch.context() as patched:  # a pandas without the private column accessor: the public way
            patched.delattr(pd.DataFrame, "_get_column_array")
            public = storage._column_arrays(frame)
        assert [a.dtype for a in public] == frame.dtypes.tolist()
        assert _arrow_table(frame, public).equals(want, check_metadata=True)
        assert _parquet_bytes(frame) == _table_bytes(want)


def test_rewrite_is_byte_identical(tmp_path):
    path = partition_path(str(tmp_path), ["x"], "1_A|2025-01-02")
    write_parquet_atomic(path, frame())
    first = path.read_bytes()
    write_parquet_atomic(path, frame())
    assert path.read_bytes() == first


def test_dataset_reads_as_one_table_in_duckdb(tmp_path):
    for asset in ("1_A", "2_B"):
        for day in ("2025-01-02", "2025-01-03"):
            data = frame().assign(date=pd.Timestamp(day))
            write_parquet_atomic(partition_path(str(tmp_path), ["horizon_slices"], f"{asset}|{day}"), data)
    glob = str(tmp_path / "horizon_slices" / "*" / "*.parquet")
    con = duckdb.connect()
    got = con.execute(
        f"select asset, count(*) n, count(distinct date) d from read_parquet('{glob}', hive_partitioning=true) "
        "group by asset order by asset"
    ).fetchall()
    assert got == [("1_A", 10, 2), ("2_B", 10, 2)]


def test_fsspec_root(tmp_path):
    path = partition_path("memory://nexus-test", ["qml_models"], "1_A|2025-01-02")
    write_parquet_atomic(path, frame())
    pd.testing.assert_frame_equal(read_parquet(UPath(str(path))), frame())


@pytest.mark.slow
def test_killed_writer_never_leaves_a_partial_file(tmp_path):
    """SIGKILL a process that rewrites a large partition in a loop; the file is always whole."""
    path = partition_path(str(tmp_path), ["x"], "1_A|2025-01-02")
    write_parquet_atomic(path, frame(10))
    script = textwrap.dedent(f"""
        import numpy as np, pandas as pd, sys
        from nexus_assets.defs.storage import partition_path, write_parquet_atomic
        path = partition_path({str(tmp_path)!r}, ["x"], "1_A|2025-01-02")
        big = pd.DataFrame({{"v": np.random.default_rng(0).normal(size=2_000_000)}})
        print("ready", flush=True)
        while True:
            write_parquet_atomic(path, big)
    """)
    rng = np.random.default_rng(1)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        import time

        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.kill()
        proc.wait()
        visible = [p for p in os.listdir(path.parent) if not p.startswith(".")]
        assert visible == ["date=2025-01-02.parquet"]
        assert len(read_parquet(path)) in (10, 2_000_000)  # the old file or the new one, whole


# -- publishing many files at once (the IO manager's range writes) --------------------------------

from nexus_assets import atomic  # noqa: E402
from nexus_assets.atomic import write_many_atomic  # noqa: E402


def _targets(tmp_path, n=6):
    return [UPath(tmp_path / f"t{i % 2}" / f"f{i}.bin") for i in range(n)]


def test_many_files_are_published_with_their_bytes_and_no_temporaries(tmp_path):
    paths = _targets(tmp_path)
    written = write_many_atomic([(p, f"new {i}".encode()) for i, p in enumerate(paths)])
    assert written == sum(len(f"new {i}") for i in range(len(paths)))
    assert [p.read_bytes() for p in paths] == [f"new {i}".encode() for i in range(len(paths))]
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_a_failure_before_publishing_leaves_every_target_as_it_was(tmp_path, monkeypatch):
    paths = _targets(tmp_path)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"old")

    def disk_full(_paths):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "_sync_files", disk_full)
    try:
        write_many_atomic([(p, b"new") for p in paths])
    except OSError:
        pass
    else:
        raise AssertionError("the failure must propagate")
    assert [p.read_bytes() for p in paths] == [b"old"] * len(paths)
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_without_syncfs_every_file_is_fsynced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, "_syncfs", lambda: None)
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    paths = _targets(tmp_path, 4)
    write_many_atomic([(p, b"x") for p in paths])
    assert len(synced) >= len(paths)  # each file, then each folder
    assert all(p.read_bytes() == b"x" for p in paths)


def test_a_partition_that_cannot_be_serialised_replaces_nothing(tmp_path):
    """A range run's output is serialised whole before the first file is replaced."""
    from nexus_assets.defs.storage import ParquetPartitionIOManager

    manager = ParquetPartitionIOManager(base_dir=str(tmp_path))
    keys = [f"9001_SP500|2018-01-0{d}" for d in range(1, 5)]
    good = {k: pd.DataFrame({"x": [float(i)]}) for i, k in enumerate(keys)}
    for k in keys:
        write_parquet_atomic(partition_path(str(tmp_path), ["a"], k), pd.DataFrame({"x": [-1.0]}))
    before = {p: p.read_bytes() for p in sorted(tmp_path.glob("**/*.parquet"))}
    bad = dict(good)
    bad[keys[3]] = pd.DataFrame({"x": [object()]})  # Arrow cannot convert this
    try:
        manager.handle_output(_RangeContext(keys), bad)
    except Exception:
        pass
    else:
        raise AssertionError("an unconvertible value must fail the write")
    assert {p: p.read_bytes() for p in sorted(tmp_path.glob("**/*.parquet"))} == before


class _RangeContext:
    """The parts of an OutputContext the IO manager reads, for a range of partition keys."""

    def __init__(self, keys):
        import dagster

        self.asset_key = dagster.AssetKey("a")
        self.has_asset_partitions = True
        self.asset_partition_keys = keys
        self.definition_metadata = {}

    def add_output_metadata(self, metadata):
        self.metadata = metadata


def test_many_files_sweep_temporaries_of_dead_writers_but_not_of_live_ones(tmp_path):
    target = UPath(tmp_path / "d" / "date=2018-01-01.parquet")
    target.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    gone = tmp_path / "d" / f".date=2018-01-01.parquet.{pid}-{atomic._HOST}-{'0' * 32}.tmp"
    alive = tmp_path / "d" / f".date=2018-01-02.parquet.{os.getppid()}-{atomic._HOST}-{'1' * 32}.tmp"
    gone.write_bytes(b"partial")
    alive.write_bytes(b"partial")
    write_many_atomic([(target, b"new")])
    assert not gone.exists() and alive.exists() and target.read_bytes() == b"new"


class _TablesContext(_RangeContext):
    def __init__(self, keys, asset="signals", tables=None):
        import dagster

        super().__init__(keys)
        self.asset_key = dagster.AssetKey(asset)
        self.definition_metadata = {"tables": list(tables)} if tables else {}


def test_a_partition_that_breaks_its_tables_schema_names_it_and_writes_nothing(tmp_path, monkeypatch):
    import pytest

    from nexus_assets.core import contract
    from nexus_assets.defs import storage
    from nexus_assets.defs.storage import ParquetPartitionIOManager, TableContractError

    attached = {}  # a stand-in context has no Dagster step to attach per-partition metadata to
    monkeypatch.setattr(storage, "attach_partition_metadata", lambda context, per_partition: attached.update(per_partition))

    manager = ParquetPartitionIOManager(base_dir=str(tmp_path))
    keys = ["9001_SP500|2018-01-02", "9001_SP500|2018-01-03"]
    good = {k: {"signals": contract.empty_frame(contract.SIGNALS), "slopes": contract.empty_frame(contract.SLOPES)}
            for k in keys}
    bad = {**good, keys[1]: {**good[keys[1]], "slopes": contract.empty_frame(contract.SLOPES).astype({"weight": "float64"})}}
    with pytest.raises(TableContractError) as caught:
        manager.handle_output(_TablesContext(keys, tables=["signals", "slopes"]), bad)
    message = str(caught.value)
    assert "partition 9001_SP500|2018-01-03" in message and "table 'slopes'" in message
    assert "column 'weight' breaks rule 'dtype int64'" in message and "nothing was written" in message
    assert not list(tmp_path.glob("**/*.parquet"))
    assert not attached
    manager.handle_output(_TablesContext(keys, tables=["signals", "slopes"]), good)
    assert len(list(tmp_path.glob("**/*.parquet"))) == 4
    assert sorted(attached) == keys and all(m["files_written"] == 2 for m in attached.values())


def test_a_single_table_asset_is_checked_under_its_own_name(tmp_path):
    import pytest

    from nexus_assets.defs.storage import ParquetPartitionIOManager, TableContractError

    manager = ParquetPartitionIOManager(base_dir=str(tmp_path))
    keys = ["9001_SP500|2018-01-02"]
    broken = frame().assign(horizon=0)  # a horizon counts observations ahead: at least 1
    with pytest.raises(TableContractError, match="table 'horizon_slices'.*column 'horizon' breaks rule"):
        manager.handle_output(_TablesContext(keys, asset="horizon_slices"), {keys[0]: broken})
    assert not list(tmp_path.glob("**/*.parquet"))


def test_codec_follows_the_table_size(tmp_path):
    """Small tables in snappy, model-row tables (from _ZSTD_ROWS rows) in zstd: each file decodes to
    the table written, and the same table always gets the same codec (and bytes)."""
    import pyarrow.parquet as pq

    from nexus_assets.defs import storage

    for rows, codec in ((0, "SNAPPY"), (5, "SNAPPY"), (storage._ZSTD_ROWS - 1, "SNAPPY"), (storage._ZSTD_ROWS, "ZSTD")):
        data = pd.DataFrame({"symbol": [f"m{i}" for i in range(rows)], "value": np.arange(rows, dtype="float64")})
        path = partition_path(str(tmp_path), [f"t{rows}"], "1_A|2025-01-02")
        write_parquet_atomic(path, data)
        meta = pq.ParquetFile(path.path).metadata
        assert {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups)
                for c in range(meta.num_columns)} <= {codec}, rows
        pd.testing.assert_frame_equal(read_parquet(path), data)
        assert storage._parquet_bytes(data) == path.read_bytes()
