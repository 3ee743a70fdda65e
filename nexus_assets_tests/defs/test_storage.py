import os
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pandas as pd
from upath import UPath

from nexus_assets.defs.storage import partition_path, read_parquet, write_parquet_atomic


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
