"""horizon_search -> signals -> metrics through Dagster: windows are enough, a daily run reproduces
the range backfill byte for byte, tables are stored as their own Hive datasets."""

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.core.metrics import record
from nexus_assets.core.search import horizon_search
from nexus_assets.core.signals import daily_signals
from nexus_assets.defs.search import FOLD_LENGTH, N_FOLDS
from nexus_assets_tests.defs.conftest import Pipeline, sandbox_catalog_text

ASSET = "9004_VIX"
FIRST, LAST = dt.date(2018, 1, 1), dt.date(2018, 8, 31)
DAYS = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]


def table(pipe, asset_key, name, days=DAYS):
    frames = []
    for d in days:
        path = pipe.data_dir / asset_key / name / f"asset={ASSET}" / f"date={d}.parquet"
        frames.append(pd.read_parquet(path))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    text = sandbox_catalog_text(keys=(ASSET,))  # VIX: exchange calendar, cost_bps 5, threshold 0.1
    pipe = Pipeline(tmp_path_factory.mktemp("range"), text)
    result = pipe.run(f"{ASSET}|{FIRST}", f"{ASSET}|{LAST}")
    assert result.success
    return pipe, text


def test_search_signals_metrics_equal_the_core_on_the_whole_history(backfill):
    pipe, _ = backfill
    ensembles = pd.concat([pd.read_parquet(pipe.file("horizon_ensembles", f"{ASSET}|{d}")) for d in DAYS],
                          ignore_index=True)
    board = horizon_search(ensembles, dates=DAYS, periods=252, cost_bps=5.0, n_folds=N_FOLDS,
                           fold_length=FOLD_LENGTH)
    stored_board = table(pipe, "horizon_search", "leaderboard")
    pd.testing.assert_frame_equal(stored_board, board.reset_index(drop=True))
    assert len(stored_board) and stored_board["rank"].max() == 20  # winners exist by summer
    winners = board[board["rank"] == 1]
    signals = daily_signals(ensembles, threshold=0.1, winners=winners)
    for name in ("signals", "slopes"):
        pd.testing.assert_frame_equal(table(pipe, "signals", name), signals[name])
    sig = signals["signals"]
    assert set(sig["config_source"]) == {"catalog", "search", "fallback"}
    as_of = LAST
    want = record(sig, as_of=[as_of], calendar="exchange", cost_bps=5.0, horizons=[1, 3, 5, 8, 13])[as_of]
    for name in ("statistics", "trades", "daily"):
        got = pd.read_parquet(pipe.data_dir / "metrics" / name / f"asset={ASSET}" / f"date={as_of}.parquet")
        pd.testing.assert_frame_equal(got, want[name])
    stats = want["statistics"]
    assert {"point_in_time", "legacy"} == set(stats["basis"]) and {"raw", "optimised"} == set(stats["signal"])


def test_a_daily_run_reproduces_the_backfill_byte_for_byte(backfill):
    pipe, _ = backfill
    day = LAST
    outputs = [f"{asset_key}/{name}/asset={ASSET}/date={day}.parquet" for asset_key, names in
               (("horizon_search", ["leaderboard"]), ("signals", ["signals", "slopes"]),
                ("metrics", ["statistics", "trades", "daily"])) for name in names]
    before = {path: (pipe.data_dir / path).read_bytes() for path in outputs}
    result = pipe.run(f"{ASSET}|{day}", f"{ASSET}|{day}")  # what the daily schedule runs
    assert result.success
    for path in outputs:
        assert (pipe.data_dir / path).read_bytes() == before[path], path


def test_metadata_names_the_signal_and_the_record(backfill):
    pipe, _ = backfill
    records = pipe.instance.fetch_materializations(
        __import__("dagster").AssetKey("metrics"), limit=1).records
    meta = records[0].asset_materialization.metadata
    assert "raw_sharpe_ratio" in meta and "last_30_trades_raw" in meta
    sig = pipe.instance.fetch_materializations(__import__("dagster").AssetKey("signals"), limit=1).records
    assert sig[0].asset_materialization.metadata["signal"].value in ("BULLISH", "BEARISH", "NEUTRAL")
