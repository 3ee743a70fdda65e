"""Crash safety: a materialisation SIGKILLed at random points never leaves a partial partition
visible, and a re-run completes with files equal to a clean run's, byte for byte.

The runs are child processes executing the production definitions against the real server on
loopback (``loopback.RunForker``); the storage layer is tested directly first: a kill inside a
file's write, and the clean-up of what killed writers leave.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from nexus_assets import atomic
from nexus_assets.catalog import CatalogAsset
from nexus_assets.defs.storage import partition_path, write_parquet_atomic
from nexus_assets_tests.loopback import (
    API_KEY,
    api_catalog_text,
    hidden_files,
    instance_home,
    run_forker,
    serve,
    visible_files,
)

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

CRASH = CatalogAsset(
    key="4311_Crash_Coin", project_id=4311, name="Crash_Coin", display_name="Crash coin", category="Crypto",
    calendar="crypto", start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 31), source="synthetic",
    horizons=(1, 2, 3, 5), models_per_horizon=300, seed=5,
)
FIRST, LAST = f"{CRASH.key}|2025-01-01", f"{CRASH.key}|2025-01-12"
KILLS = 6  # each kill is a run of the whole graph; 6 keep both kinds of kill point (3 each)


# -- the storage layer: what a killed writer leaves, and who removes it ---------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"v": np.arange(5, dtype="int64")})


def _temp(path, pid: int, host: str = atomic._HOST) -> str:
    name = f"{atomic._temp_prefix(os.fspath(path))}{pid}-{host}-{uuid.uuid4().hex}.tmp"
    temp = os.path.join(os.path.dirname(os.fspath(path)), name)
    with open(temp, "wb") as handle:
        handle.write(b"PAR1 partial")
    return temp


def test_next_write_removes_temps_of_dead_writers_only(tmp_path):
    path = partition_path(str(tmp_path), ["x"], "1_A|2025-01-02")
    write_parquet_atomic(path, _frame())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = _temp(path, int(dead.stdout))
        running = _temp(path, alive.pid)
        mine = _temp(path, os.getpid())
        elsewhere = _temp(path, int(dead.stdout), host="0badc0de")
        old = _temp(path, alive.pid, host="0badc0de")
        os.utime(old, (time.time() - 7200, time.time() - 7200))
        write_parquet_atomic(path, _frame())
        left = set(os.listdir(os.path.dirname(gone)))
    finally:
        alive.kill()
        alive.wait()
    assert os.path.basename(gone) not in left and os.path.basename(old) not in left
    assert {os.path.basename(t) for t in (running, mine, elsewhere)} <= left
    assert pq.read_table(os.fspath(path)).num_rows == 5


WRITER = """
import sys, numpy as np, pandas as pd
from upath import UPath
from nexus_assets.defs.storage import write_parquet_atomic
path = UPath(sys.argv[1])
frames = [pd.DataFrame({"v": np.random.default_rng(seed).normal(size=3_000_000)}) for seed in (1, 2)]
print("ready", flush=True)
while True:
    for frame in frames:
        write_parquet_atomic(path, frame)
"""


def test_kill_inside_a_write_leaves_a_whole_file(tmp_path):
    """Kill a writer the moment a file in the folder is seen partly written: the visible file is
    still whole (one of the two versions). A writer that wrote in place would show a part here."""
    path = partition_path(str(tmp_path), ["x"], "1_A|2025-01-02")
    versions = {}
    for seed in (1, 2):
        write_parquet_atomic(path, pd.DataFrame({"v": np.random.default_rng(seed).normal(size=3_000_000)}))
        versions[seed] = path.read_bytes()
    folder, smallest = os.path.dirname(os.fspath(path)), min(len(v) for v in versions.values())
    caught_mid_write = 0
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-c", WRITER, os.fspath(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                sizes = []
                for entry in os.scandir(folder):
                    try:
                        sizes.append(entry.stat().st_size)
                    except FileNotFoundError:
                        continue
                if any(0 < size < smallest for size in sizes):
                    break
            process.kill()
        finally:
            process.kill()
            process.wait()
        hidden = [e for e in os.scandir(folder) if e.name.startswith(".")]
        caught_mid_write += any(0 < e.stat().st_size < smallest for e in hidden)
        assert [e.name for e in os.scandir(folder) if not e.name.startswith(".")] == ["date=2025-01-02.parquet"]
        assert path.read_bytes() in versions.values()
        for entry in hidden:
            os.remove(entry.path)
    assert caught_mid_write >= 1, "no kill landed inside a write"


# -- a whole materialisation, killed at random points ----------------------------------------------


def _written_since(root, since: float) -> list:
    return [p for p in root.rglob("*.parquet") if p.stat().st_mtime >= since] if root.exists() else []


def test_sigkill_at_random_points_never_shows_a_partial_partition_and_rerun_equals_clean(tmp_path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(api_catalog_text(CRASH))
    rng = np.random.default_rng(20250131)
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean_home, crash_home = instance_home(tmp_path / "home-clean"), instance_home(tmp_path / "home-crash")
    with serve(CRASH) as server, open(tmp_path / "children.log", "w") as stderr, run_forker(server.url, stderr) as forker:
        clean = forker.start(clean_home, catalog, clean_dir, FIRST, LAST)
        began, first_write = clean.started(), None
        while clean.running:
            if first_write is None and _written_since(clean_dir, began):
                first_write = time.time() - began
            time.sleep(0.002)
        end, success = clean.finished()
        assert success
        run_seconds = end - began
        reference = visible_files(clean_dir)
        # 12 days x 18 files: qml_models, features, horizon_slices, qml_model_metadata, ml_models,
        # horizon_ensembles, ml_predictions, horizon_search, ml_signals (1 table each), signals (2 tables),
        # metrics (5 tables), dashboard (page + summary); no model file (twelve days are far below the
        # pairs a training needs); and the site's index, the asset's history and plotly.js
        assert len(reference) == 12 * 18 + 3

        mid_run = mid_file = 0
        for kill in range(KILLS):  # every killed run and the re-run share one instance and data dir
            temps_before = set(hidden_files(crash_dir)) if crash_dir.exists() else set()
            run = forker.start(crash_home, catalog, crash_dir, FIRST, LAST)
            began = run.started()
            if kill % 2:  # anywhere from just before the first write to the end of the run
                time.sleep(float(rng.uniform(max(0.0, first_write - 0.3), run_seconds)))
            else:  # within the burst of writes that follows this run's first one
                while not _written_since(crash_dir, began) and run.running:
                    time.sleep(0.001)
                time.sleep(float(rng.uniform(0.0, 0.05)))
            run.kill()
            written = len(_written_since(crash_dir, began))
            mid_run += 0 < written < len(reference)
            mid_file += bool(set(hidden_files(crash_dir)) - temps_before)  # killed inside a file's write
            seen = visible_files(crash_dir) if crash_dir.exists() else {}
            # whatever is visible is a whole partition, equal to the clean run's
            assert set(seen) <= set(reference), sorted(set(seen) - set(reference))[:3]
            assert all(seen[name] == reference[name] for name in seen)

        _, success = forker.start(crash_home, catalog, crash_dir, FIRST, LAST).finished()
        assert success
    assert visible_files(crash_dir) == reference
    assert hidden_files(crash_dir) == []  # temps of killed writers removed by the re-run's writes
    assert API_KEY not in (tmp_path / "children.log").read_text()
    assert mid_run >= 1, "no kill landed between a run's first and last write"
    print(f"{KILLS} kills: {mid_run} between a run's first and last partition write, {mid_file} inside a file's write "
          f"(run {run_seconds:.1f}s)")
