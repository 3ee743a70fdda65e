"""A date's stored result does not depend on how it was run, on data shaped like real QDT tables.

Upstream here has what real tables have: near-copy child models (exact ties), models that retire
and models that appear mid-history, outages (days without any row, inside every mapped calendar
window), and days published without a price. The same date is materialised two ways:
inside one range run from the first day, and alone, by a daily-style run after a backfill that
ends the day before. Every stored table of every step must come out byte for byte the same.
"""

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.defs.ensembles import ensemble_history_rows
from nexus_assets.qml import sources
from nexus_assets.qml.synthetic import SyntheticProject
from nexus_assets_tests.defs.conftest import Pipeline

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

START = dt.date(2025, 1, 1)
D = dt.date(2025, 6, 9)
# no rows at all, upstream was down: inside the ensemble's and the search's calendar windows of D,
# and a short one inside the dashboard's
OUTAGES = ((dt.date(2025, 4, 20), dt.date(2025, 5, 4)), (dt.date(2025, 5, 28), dt.date(2025, 6, 2)))
NO_PRICE = (dt.date(2025, 5, 20), dt.date(2025, 6, 7))  # target_var_price null ("not yet known")
RETIRES, APPEARS = dt.date(2025, 2, 15), D  # per horizon: one model long gone by D's window, one new on D
TABLES = {
    "qml_models": [None], "horizon_slices": [None], "qml_model_metadata": [None], "horizon_ensembles": [None],
    "features": [None], "ml_models": [None], "ml_predictions": [None], "ml_signals": [None],
    "horizon_search": ["leaderboard"],
    "signals": ["signals", "slopes"], "metrics": ["statistics", "trades", "daily", "ml_accuracy", "ml_calibration"],
}


def catalog_text(key: str, project_id: int, calendar: str, mode: str) -> str:
    name = key.split("_", 1)[1]
    return (f'[[assets]]\nkey = "{key}"\nproject_id = {project_id}\nname = "{name}"\ndisplay_name = "{name}"\n'
            f'category = "Crypto"\ncalendar = "{calendar}"\nstart_date = {START}\nend_date = {D}\n'
            f'source = "synthetic"\nhorizons = [1, 3, 5]\nmodels_per_horizon = 24\nseed = 7\n'
            f'selection_mode = "{mode}"\ncost_bps = 5.0\n'
            # few training pairs, so direction models train and serve well before D on this short history
            'ml_min_train_pairs = 40\n')


class _RealLike(SyntheticProject):
    """The default (QDT-like) generator, plus an outage, two unpriced days and certain churn."""

    def rows(self, start, end):
        rows = super().rows(start, end)
        day = rows["time"].dt.date
        for first, last in OUTAGES:
            rows = rows[(day < first) | (day > last)]
            day = rows["time"].dt.date
        rows.loc[rows["time"].dt.date.isin(NO_PRICE), "target_var_price"] = float("nan")
        gone = early = pd.Series(False, index=rows.index)
        for h, _group in rows.groupby("n_predict"):
            symbols = sorted(self._models[h].symbols)  # the whole roster: not what this pull happens to hold
            gone |= (rows["symbol"] == symbols[2]) & (rows["time"].dt.date >= RETIRES)
            early |= (rows["symbol"] == symbols[-3]) & (rows["time"].dt.date < APPEARS)
        return rows[~gone & ~early].reset_index(drop=True)


@pytest.fixture
def real_like(monkeypatch):
    def project(asset):
        return _RealLike(asset.project_id, horizons=asset.horizons, models_per_horizon=asset.models_per_horizon,
                         seed=asset.seed, start=asset.start_date, end=asset.end_date, calendar=asset.calendar)

    monkeypatch.setattr(sources, "embedded_project", project)


def pipeline(folder, text: str) -> Pipeline:
    folder.mkdir()
    return Pipeline(folder, text)


def stored(pipe: Pipeline, asset: str, day: dt.date | None = None) -> dict[str, bytes]:
    """Every stored file of ``asset`` (of one day, or all), by path relative to the data dir."""
    out = {}
    for asset_key, tables in TABLES.items():
        for table in tables:
            folder = pipe.data_dir / asset_key / (table or "") / f"asset={asset}"
            pattern = f"date={day}.parquet" if day else "date=*.parquet"
            out.update({str(p.relative_to(pipe.data_dir)): p.read_bytes() for p in sorted(folder.glob(pattern))})
    page = pipe.data_dir / "dashboard" / f"asset={asset}" / f"date={D}.html"
    if page.exists() and (day is None or day == D):
        out[str(page.relative_to(pipe.data_dir))] = page.read_bytes()
    if day is None:  # the ML registry: every trained model file and manifest
        registry = pipe.data_dir / "ml_registry" / asset
        out.update({str(p.relative_to(pipe.data_dir)): p.read_bytes() for p in sorted(registry.rglob("*")) if p.is_file()})
    return out


def test_a_date_alone_equals_the_same_date_in_a_range_run(tmp_path, real_like):
    asset = "9101_RealLike"
    text = catalog_text(asset, 9101, "crypto", "point_in_time")
    ranged = pipeline(tmp_path / "range", text)
    assert ranged.run(f"{asset}|{START}", f"{asset}|{D}").success
    daily = pipeline(tmp_path / "daily", text)
    assert daily.run(f"{asset}|{START}", f"{asset}|{D - dt.timedelta(days=1)}").success
    assert daily.run(f"{asset}|{D}", f"{asset}|{D}").success  # what the daily schedule runs

    got, want = stored(daily, asset), stored(ranged, asset)
    assert sorted(got) == sorted(want)
    different = [path for path in want if got[path] != want[path]]
    assert not different, f"{len(different)} files differ, e.g. {different[:5]}"

    # the case is the one the issue describes: the date reads past its mapped calendar window, its
    # model population moved with churn, the search and the record exist, unpriced days went through
    slices = pd.concat([pd.read_parquet(p) for p in sorted((ranged.data_dir / "horizon_slices" / f"asset={asset}").glob("*.parquet"))])
    dates_h3 = slices.loc[slices["horizon"] == 3, "date"].drop_duplicates()
    in_mapped = ((dates_h3 >= pd.Timestamp(D) - pd.Timedelta(days=ensemble_history_rows(3) + 5)) & (dates_h3 < pd.Timestamp(D))).sum()
    assert in_mapped < ensemble_history_rows(3), "the outage must leave the calendar window short of observations"
    ensembles = pd.read_parquet(ranged.data_dir / "horizon_ensembles" / f"asset={asset}" / f"date={D}.parquet")
    ever = slices[slices["date"] <= pd.Timestamp(D)].groupby("horizon")["symbol"].nunique()
    assert len(ensembles) == 3
    assert (ensembles["n_models"].to_numpy() < ever.loc[ensembles["horizon"]].to_numpy()).all()  # churn: M moved
    boards = [pd.read_parquet(p) for p in (ranged.data_dir / "horizon_search" / "leaderboard" / f"asset={asset}").glob("*")]
    assert sum(len(b) > 0 for b in boards) >= 10  # the search had winners, and its window crossed the outage
    daily_table = pd.read_parquet(ranged.data_dir / "metrics" / "daily" / f"asset={asset}" / f"date={D}.parquet")
    assert (~daily_table["price_known"]).sum() >= 2  # the unpriced days are in the record, which went on
    for signal in ("raw", "ml_h1", "ml_h5"):  # in the ML signals' record too, as in the slope signals'
        rows = daily_table[daily_table["signal"] == signal]
        assert set(rows.loc[~rows["price_known"], "date"].dt.date) >= set(NO_PRICE), signal
    # the model metadata of D saw the churn: per horizon, the model retired in February is known but
    # not live, the one first publishing on D is live from D; D is upstream's watermark, so described
    models = pd.read_parquet(ranged.data_dir / "qml_model_metadata" / f"asset={asset}" / f"date={D}.parquet")
    assert (models["metadata_source"] == "upstream").all() and models["code_version"].notna().all()
    new = models[models["first_seen"] == pd.Timestamp(D)]
    gone = models[models["last_seen"] < pd.Timestamp(RETIRES)]
    assert sorted(new["horizon"]) == [1, 3, 5] and new["live"].all()
    assert {1, 3, 5} <= set(gone["horizon"]) and not gone["live"].any()
    # the ML layer took part: models trained on this churning, gappy history serve D (D is a Monday,
    # a training day: its models were trained in the daily run); D's price is not yet known, so the
    # last prediction is the day before's, by the models of the Monday before
    assert sum(path.startswith("ml_registry/") and path.endswith("model.onnx") for path in want) >= 10
    served = pd.read_parquet(ranged.data_dir / "ml_models" / f"asset={asset}" / f"date={D}.parquet")
    assert list(served["model_version"]) == [f"trained-{D}-h1", f"trained-{D}-h5"]
    day_before = D - dt.timedelta(days=1)
    predictions = pd.read_parquet(ranged.data_dir / "ml_predictions" / f"asset={asset}" / f"date={day_before}.parquet")
    assert list(predictions["horizon"]) == [1, 5] and predictions["probability_up"].notna().all()
    assert list(predictions["model_version"]) == [f"trained-{D - dt.timedelta(days=7)}-h{h}" for h in (1, 5)]
    accuracy = pd.read_parquet(ranged.data_dir / "metrics" / "ml_accuracy" / f"asset={asset}" / f"date={D}.parquet")
    assert (accuracy.loc[accuracy["scope"] == "all", "scored"] >= 20).all()


def test_nexus_v2_date_alone_equals_the_range_run_on_the_same_stored_history(tmp_path, real_like):
    """nexus_v2 looks ahead by design (y_h, and M over the whole stored pivot), so a date is
    compared when both runs have stored the same history: the last date."""
    asset = "9102_RealLikeV2"
    end = dt.date(2025, 5, 27)  # before the second outage: a day without rows is "not yet published"
    text = catalog_text(asset, 9102, "exchange", "nexus_v2").replace(f"end_date = {D}", f"end_date = {end}")
    ranged = pipeline(tmp_path / "range", text)
    assert ranged.run(f"{asset}|{START}", f"{asset}|{end}", through="horizon_ensembles").success
    daily = pipeline(tmp_path / "daily", text)
    assert daily.run(f"{asset}|{START}", f"{asset}|{end - dt.timedelta(days=1)}", through="horizon_ensembles").success
    assert daily.run(f"{asset}|{end}", f"{asset}|{end}", through="horizon_ensembles").success
    path = f"horizon_ensembles/asset={asset}/date={end}.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(daily.data_dir / path), pd.read_parquet(ranged.data_dir / path))
    assert (daily.data_dir / path).read_bytes() == (ranged.data_dir / path).read_bytes()
    frame = pd.read_parquet(ranged.data_dir / path)
    roster = pd.concat([pd.read_parquet(p) for p in (ranged.data_dir / "horizon_slices" / f"asset={asset}").glob("*.parquet")])
    per_horizon = roster.groupby("horizon")["symbol"].nunique()
    assert (frame.set_index("horizon")["n_models"] == per_horizon.loc[frame["horizon"]].to_numpy()).all()
