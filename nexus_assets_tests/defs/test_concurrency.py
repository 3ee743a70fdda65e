"""Concurrency: a backfill (one asset, a date range) and the daily run (the schedule's one run for
every asset on one day) over the same asset and date, at the same time, in two processes sharing
one Dagster instance and one data dir, end in a consistent state: both succeed, every file equals
a clean run's, no temporary file is left, and the instance's latest record of the shared partition
describes the file that is there.

Twice: with the project's ``dagster.yaml`` (the ``qml_api`` pool, limit 1, makes one run's pull
wait for the other's), and on an instance without pool limits, where both write the shared
partition's files at the same time and only the atomic rename keeps them whole.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from nexus_assets.catalog import load_catalog
from nexus_assets.core.restatement import rows_sha256
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG, daily_run_request
from nexus_assets.qml.faults import Fault
from nexus_assets_tests.loopback import (
    API_KEY,
    COIN,
    ApiPipeline,
    api_catalog_text,
    hidden_files,
    instance_home,
    run_forker,
    serve,
    visible_files,
)

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

REPO = Path(__file__).resolve().parents[2]
OTHER = dataclasses.replace(COIN, key="4302_Other_Coin", project_id=4302, name="Other_Coin", seed=8)
DAY = dt.date(2025, 1, 6)


@pytest.mark.parametrize("pool_limited", [True, False], ids=["qml_api-pool", "no-pool-limit"])
def test_backfill_and_daily_run_at_once_end_consistent(tmp_path, monkeypatch, pool_limited):
    catalog_path = tmp_path / "catalog.toml"
    catalog_path.write_text(api_catalog_text(COIN, OTHER))
    daily = daily_run_request(load_catalog(catalog_path), DAY)
    backfill = (f"{COIN.key}|2025-01-01", f"{COIN.key}|2025-01-12")
    # with the project's instance settings (dagster.yaml), or none
    home = instance_home(tmp_path / "home", REPO / "dagster.yaml" if pool_limited else None)
    data_dir = tmp_path / "data"

    # the first two pulls stall: whichever run pulls first holds the pool while the other reaches
    # its pull, however the machine schedules the two processes (no change to the data)
    stalls = [Fault("stall", seconds=5.0)] * 2
    with (serve(COIN, OTHER, faults=stalls) as server, open(tmp_path / "children.log", "w") as stderr,
          run_forker(server.url, stderr) as forker):
        runs = [  # started together, one instance, one data dir
            forker.start(home, catalog_path, data_dir, *backfill),
            forker.start(home, catalog_path, data_dir, daily.tags[RANGE_START_TAG], daily.tags[RANGE_END_TAG]),
        ]
        spans = [(run.started(), *run.finished()) for run in runs]

        # the clean reference: the same two runs one after the other, in this process
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        monkeypatch.setenv("QML_API_KEY", API_KEY)
        (tmp_path / "clean").mkdir()
        clean = ApiPipeline(tmp_path / "clean", api_catalog_text(COIN, OTHER))
        assert clean.run(*backfill).success
        assert clean.run(daily.tags[RANGE_START_TAG], daily.tags[RANGE_END_TAG]).success

    assert all(success for _, _, success in spans), spans
    assert max(start for start, _, _ in spans) < min(end for _, end, _ in spans), f"the runs did not overlap: {spans}"
    assert visible_files(data_dir) == visible_files(clean.data_dir)
    # 18 files per partition (12 assets; signals 2 tables, metrics 5, dashboard page + summary; no
    # model file: twelve days are far below the 150 pairs a training needs): 12 days of one asset, 1 day
    # of the other; and the site's index, 2 histories and plotly.js
    assert len(visible_files(data_dir)) == 18 * (12 + 1) + 4
    assert hidden_files(data_dir) == []
    log = (tmp_path / "children.log").read_text()
    assert API_KEY not in log

    # the instance agrees with the files: the latest record of the shared partition is this file's hash
    shared = f"{COIN.key}|{DAY.isoformat()}"
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("qml_models"), asset_partitions=[shared]), limit=5
        ).records
        runs = {instance.get_run_by_id(r.run_id).tags.get(RANGE_START_TAG) for r in records}
        # the pool's wait is an event of the run (the console shows INFO and up; the event log has it all)
        messages = [entry.message for run in instance.get_runs() for entry in instance.all_logs(run.run_id)]
    assert any("Step blocked by limit for pool qml_api" in m for m in messages) == pool_limited
    assert len(records) == 2 and runs == {backfill[0], daily.tags[RANGE_START_TAG]}
    stored = pd.read_parquet(data_dir / "qml_models" / f"asset={COIN.key}" / f"date={DAY.isoformat()}.parquet")
    assert records[0].asset_materialization.metadata["payload_sha256"].value == rows_sha256(stored)
    assert not records[0].asset_materialization.metadata["restated"].value
    overlap = min(end for _, end, _ in spans) - max(start for start, _, _ in spans)
    print(f"overlap {overlap:.2f}s of runs {[round(end - start, 2) for start, end, _ in spans]}")
