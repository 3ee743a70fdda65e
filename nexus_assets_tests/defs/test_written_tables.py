"""A process's reads of the files it has just written, answered from the tables it wrote.

The answer must be what decoding the file gives (every stored table's shape, nulls and empty
frames included), and only while the file holds the bytes written: another write, a damaged or
deleted file make the entry stale. A run's outputs are byte-identical with and without it.
"""

import datetime as dt
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from nexus_assets.atomic import local_path
from nexus_assets.core.contract import STORED_TABLES, empty_frame
from nexus_assets.defs import storage
from nexus_assets.defs.storage import _publish, _read_table, _serialised, partition_path, read_columns, read_parquet
from nexus_assets.defs.written_tables import WRITTEN, WrittenTables
from nexus_assets_tests.core.test_tables import valid_frame
from nexus_assets_tests.defs.test_reproducibility import START, catalog_text, pipeline, real_like, stored  # noqa: F401 (real_like: a fixture)
from nexus_assets_tests.defs.test_storage import _same

SCHEMAS = sorted(STORED_TABLES.items())


@pytest.fixture(autouse=True)
def fresh_cache():
    WRITTEN.clear()
    yield
    WRITTEN.clear()


def _with_nulls(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """``frame`` with a missing value in every nullable column (the first row)."""
    out = frame.copy()
    for name in out.columns:
        if schema.columns[name].nullable and len(out):
            out.loc[0, name] = None
    return out


def _decoded(blob: bytes) -> pa.Table:
    return pq.ParquetFile(io.BytesIO(blob)).read()


@pytest.mark.parametrize("table, schema", SCHEMAS, ids=[t for t, _ in SCHEMAS])
def test_every_stored_table_decodes_to_the_table_written(tmp_path, table, schema):
    frames = [empty_frame(schema), valid_frame(schema, n=6, seed=3), _with_nulls(valid_frame(schema, n=6, seed=4), schema)]
    for i, frame in enumerate(frames):
        arrow, blob = _serialised(table, f"A|2025-01-0{i + 1}", table, False, frame)
        decoded = _decoded(blob)
        assert decoded.equals(arrow, check_metadata=True) and decoded.schema == arrow.schema
        path = partition_path(str(tmp_path), [table], f"A|2025-01-0{i + 1}")
        _publish([(path, arrow, blob)])
        assert _read_table(path, None)[0] is arrow  # answered from what was written
        kept_frame, kept_columns = read_parquet(path), read_columns(path)
        WRITTEN.clear()  # the same reads from the file
        pd.testing.assert_frame_equal(kept_frame, read_parquet(path))
        from_file = read_columns(path)
        assert list(kept_columns) == list(from_file)
        assert all(_same(from_file[name], kept_columns[name]) for name in from_file)


def _written(tmp_path, partition="A|2025-01-02", values=(1.0, 2.0, 3.0)):
    path = partition_path(str(tmp_path), ["x"], partition)
    arrow, blob = _serialised("x", partition, "x", False, pd.DataFrame({"v": list(values), "w": [1, 2, 3][: len(values)]}))
    _publish([(path, arrow, blob)])
    return path, arrow


def test_a_subset_of_columns_and_an_unknown_column_as_from_the_file(tmp_path):
    path, arrow = _written(tmp_path)
    assert read_parquet(path, ["w"]).equals(pd.DataFrame({"w": [1, 2, 3]}))
    with pytest.raises(pa.ArrowInvalid, match="no column nope"):
        read_parquet(path, ["w", "nope"])


def test_another_write_of_the_file_is_read_from_the_file(tmp_path):
    path, _ = _written(tmp_path)
    storage.write_parquet_atomic(path, pd.DataFrame({"v": [9.0, 9.0, 9.0], "w": [7, 8, 9]}))  # not through _publish
    assert read_parquet(path)["w"].tolist() == [7, 8, 9]
    assert len(WRITTEN) == 0  # the stale entry is let go


def test_the_same_size_changed_in_place_is_read_from_the_file(tmp_path):
    path, arrow = _written(tmp_path)
    raw = bytearray(open(path.path, "rb").read())
    raw[4] ^= 0xFF  # damage the first page, same size, at once (no time for a timestamp to move)
    open(path.path, "r+b").write(bytes(raw))
    try:
        got = _read_table(path, None)[0]
    except Exception:  # whatever the decoder says about the damage
        got = None
    assert got is not arrow and len(WRITTEN) == 0


def test_a_deleted_file_is_missing_as_before(tmp_path):
    path, _ = _written(tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        read_parquet(path)


def test_the_budget_keeps_the_most_recent_and_zero_keeps_nothing(tmp_path):
    tables = []
    for i in range(6):
        table = pa.table({"v": np.arange(1000, dtype="float64") + i})
        path = tmp_path / f"{i}.parquet"
        sink = io.BytesIO()
        pq.write_table(table, sink)
        path.write_bytes(sink.getvalue())
        tables.append((str(path), table, sink.getvalue()))
    one = tables[0][1].nbytes + len(tables[0][2])
    kept = WrittenTables(budget_bytes=8 * one + one // 2)  # room for 8 entries of this size, keeps at most 1/8 each
    kept.remember(tables[:4])
    assert [kept.get(p) is t for p, t, _ in tables[:4]] == [True] * 4
    small = WrittenTables(budget_bytes=16 * one)
    small.remember(tables)
    small.set_budget(3 * one + one // 2)  # shrinking lets the oldest go
    assert [small.get(p) is not None for p, _, _ in tables] == [False, False, False, True, True, True]
    off = WrittenTables(budget_bytes=0)
    off.remember(tables)
    assert len(off) == 0 and off.get(tables[0][0]) is None
    too_big = WrittenTables(budget_bytes=4 * one)  # one entry is more than an eighth of it
    too_big.remember(tables[:1])
    assert len(too_big) == 0


def test_object_store_paths_are_never_kept():
    assert local_path(UPath("memory://bucket/x/asset=A/date=2025-01-02.parquet")) is None


@pytest.mark.slow  # two Dagster runs of the main job
@pytest.mark.usefixtures("real_like")
def test_a_run_stores_the_same_bytes_with_and_without_it(tmp_path):
    asset = "9101_RealLike"
    last = START + dt.timedelta(days=75)
    text = catalog_text(asset, 9101, "crypto", "point_in_time")
    runs = {}
    for budget in (0, 256 * 2**20):
        WRITTEN.clear()
        WRITTEN.set_budget(budget)
        pipe = pipeline(tmp_path / f"budget-{budget}", text)
        assert pipe.run(f"{asset}|{START}", f"{asset}|{last}").success
        runs[budget] = stored(pipe, asset)
    WRITTEN.set_budget(256 * 2**20)
    without, with_it = runs[0], runs[256 * 2**20]
    assert sorted(without) == sorted(with_it) and len(without) > 500
    assert [p for p in without if without[p] != with_it[p]] == []
