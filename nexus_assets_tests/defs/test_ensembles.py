"""horizon_ensembles through Dagster: the window it reads is enough, modes follow the catalog."""

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.core.ensembles import LOOKBACK, ensembles_with_combinations
from nexus_assets.defs.ensembles import ensemble_window_days
from nexus_assets_tests.defs.conftest import Pipeline, sandbox_catalog_text

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser


def stored(pipe, asset_key, asset, days):
    frames = [pd.read_parquet(pipe.file(asset_key, f"{asset}|{d}")) for d in days]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    text = sandbox_catalog_text(keys=("9004_VIX",))
    point = Pipeline(tmp_path_factory.mktemp("pit"), text)
    legacy = Pipeline(tmp_path_factory.mktemp("v2"), text.replace('source = "sandbox"', 'source = "sandbox"\nselection_mode = "nexus_v2"'))
    results = {}
    for name, pipe in (("point_in_time", point), ("nexus_v2", legacy)):
        results[name] = (pipe, pipe.run("9004_VIX|2018-01-01", "9004_VIX|2018-05-20", through="horizon_ensembles"))
    return results


DAYS = [dt.date(2018, 1, 1) + dt.timedelta(days=i) for i in range(140)]


@pytest.mark.parametrize("mode", ["point_in_time", "nexus_v2"])
def test_partitions_equal_the_core_on_the_whole_history(runs, mode):
    pipe, result = runs[mode]
    assert result.success
    slices = stored(pipe, "horizon_slices", "9004_VIX", DAYS)
    expected = ensembles_with_combinations(slices, mode=mode, lookback=LOOKBACK, dates=None)
    got = stored(pipe, "horizon_ensembles", "9004_VIX", DAYS)
    assert len(got) > 100 and set(got["mode"]) == {mode}
    # every stored date equals the core run on the whole stored history: the window was enough
    # (nexus_v2 near the end of the range legitimately lacks the future, so compare up to there)
    last = pd.Timestamp(DAYS[-1]) - pd.Timedelta(days=30 if mode == "nexus_v2" else 0)
    pd.testing.assert_frame_equal(
        got[got["date"] <= last].reset_index(drop=True), expected[expected["date"] <= last].reset_index(drop=True)
    )
    assert ("actual" in got.columns) == (mode == "nexus_v2")
    assert got[["price", "raw_mean", "raw_median", "low_variance"]].notna().all().all()


def test_warm_up_days_are_empty_partitions_and_metadata(runs):
    pipe, result = runs["point_in_time"]
    assert pd.read_parquet(pipe.file("horizon_ensembles", "9004_VIX|2018-01-15")).empty
    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key.to_user_string() == "horizon_ensembles":
            meta[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    assert len(meta) == 140  # one run, every key
    day = meta["9004_VIX|2018-05-15"]
    assert day["mode"] == "point_in_time" and day["horizons"] == [1, 3, 5, 8, 13]
    assert day["models_per_horizon"] == {str(h): 68 for h in (1, 3, 5, 8, 13)}
    assert sum(day["winners_per_strategy"].values()) == 5


def test_window_covers_lookback_plus_longest_horizon(runs):
    from nexus_assets.catalog import load_catalog

    pipe, _ = runs["nexus_v2"]
    history, forward = ensemble_window_days(load_catalog(pipe.catalog_path))
    assert history >= (60 + 13 + 1) * 7 / 5 and forward >= 13 * 7 / 5
    pipe, _ = runs["point_in_time"]
    assert ensemble_window_days(load_catalog(pipe.catalog_path))[1] == 0  # no look into the future
