"""The ML steps in Dagster: a few sandbox days of features, ml_models and ml_predictions equal the
core's results, a tampered model fails the step before anything is written, and the files do
not depend on how dates are grouped into runs."""

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey

from nexus_assets.core.contract import ML_MODELS, ML_PREDICTIONS, table_problems
from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_training import TrainingConfig, train_direction_model
from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs.ml import _needs_training, _sandbox_volume, current_manifests
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.ml_registry import MODEL_FILE, load_model, registry_root
from nexus_assets.qml.sandbox import load_prices
from nexus_assets_tests.defs.conftest import Pipeline, sandbox_catalog_text

ASSET = "9001_SP500"
ML_ASSETS = ["features", "ml_models", "ml_predictions"]
FIRST, LAST = dt.date(2018, 1, 1), dt.date(2018, 1, 10)  # Mondays 1 and 8 train (weekly cadence here)


def _text() -> str:
    return re.sub(r"ml_retrain_days = \d+", "ml_retrain_days = 7", sandbox_catalog_text((ASSET,)))


def _run(pipe: Pipeline, first: dt.date, last: dt.date, assets=ML_ASSETS):
    return pipe.defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=pipe.instance, raise_on_error=False, asset_selection=[AssetKey(a) for a in assets],
        tags={RANGE_START_TAG: f"{ASSET}|{first}", RANGE_END_TAG: f"{ASSET}|{last}"})


def _files(pipe: Pipeline) -> dict[str, bytes]:
    out = {}
    for folder in [*(pipe.data_dir / a for a in ML_ASSETS), pipe.data_dir / "ml_registry"]:
        out.update({str(p.relative_to(pipe.data_dir)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    return out


@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    pipe = Pipeline(tmp_path_factory.mktemp("ml_range"), _text())
    result = _run(pipe, FIRST, LAST)
    assert result.success
    return pipe


def _read(pipe: Pipeline, asset: str, day: dt.date) -> pd.DataFrame:
    return pd.read_parquet(pipe.file(asset, f"{ASSET}|{day}"))


def test_the_steps_store_what_the_core_computes(ranged):
    close = load_prices("sp500")
    core = feature_frame(close, _sandbox_volume("sp500"))
    names = model_features(True)
    for day in (FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)):
        stored = _read(ranged, "features", day)
        expected = core[core["date"] == pd.Timestamp(day)].reset_index(drop=True)
        pd.testing.assert_frame_equal(stored, expected)
        models = _read(ranged, "ml_models", day)
        assert table_problems(ML_MODELS, models) == [] and models["horizon"].tolist() == [1, 5]
        monday = day - dt.timedelta(days=day.weekday())
        assert models["model_version"].tolist() == [f"trained-{monday}-h1", f"trained-{monday}-h5"]
        assert models["trained_on_date"].tolist() == [day == monday] * 2
        predictions = _read(ranged, "ml_predictions", day)
        assert table_problems(ML_PREDICTIONS, predictions) == []
        if expected.empty:  # a weekend or New Year's Day: no session, no rows
            assert predictions.empty
            continue
        assert predictions["price"].tolist() == [expected["price"].iloc[0]] * 2
        for row in predictions.itertuples():
            model = load_model(str(ranged.data_dir), ASSET, row.model_version, features=names)
            want = model.probability_up(expected[names].to_numpy())[0]
            assert row.probability_up == pytest.approx(want, abs=1e-12)
            assert row.confidence == pytest.approx(abs(want - 0.5) * 2)
            assert row.model_sha256 == model.manifest["sha256"]
    assert _read(ranged, "ml_predictions", dt.date(2018, 1, 2))["probability_up"].notna().all()


def test_a_tampered_model_fails_the_step_and_writes_nothing(ranged):
    day = dt.date(2018, 1, 9)
    target = ranged.file("ml_predictions", f"{ASSET}|{day}")
    before = target.read_bytes()
    path = registry_root(str(ranged.data_dir)) / ASSET / "trained-2018-01-08-h5" / MODEL_FILE
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    target.unlink()
    try:
        result = _run(ranged, day, day, ["ml_predictions"])
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = failure.event_specific_data.error.message
        assert str(path) in message and "does not match the manifest" in message
        assert not target.exists()  # nothing of the run was written
    finally:
        path.write_bytes(original)
        target.write_bytes(before)


def test_with_a_signing_key_unsigned_models_fail_the_step_until_signed(ranged, monkeypatch):
    """A registry trained without a key, then NEXUS_MODEL_SIGNING_KEY set: ml_predictions refuses the
    unsigned manifest and writes nothing; after `sign`, the same predictions, byte for byte."""
    from nexus_assets.ml_registry import SIGNING_KEY_ENV, sign

    day = dt.date(2018, 1, 9)
    target = ranged.file("ml_predictions", f"{ASSET}|{day}")
    before = target.read_bytes()
    registry = registry_root(str(ranged.data_dir)) / ASSET
    manifests = {p: p.read_bytes() for p in registry.rglob("manifest.json")}
    monkeypatch.setenv(SIGNING_KEY_ENV, "a-test-key-of-enough-bytes-0123456789")
    target.unlink()
    try:
        result = _run(ranged, day, day, ["ml_predictions"])
        assert not result.success and not target.exists()
        message = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
        assert "not signed" in message and "models sign" in message
        assert all(r.ok for r in sign(str(ranged.data_dir), ASSET))
        assert _run(ranged, day, day, ["ml_predictions"]).success
        assert target.read_bytes() == before
    finally:
        for path, text in manifests.items():
            path.write_bytes(text)
        target.write_bytes(before)


@pytest.mark.slow
def test_after_a_change_of_cadence_only_the_new_cadences_models_serve(ranged, tmp_path):
    """The weekly store's registry holds Monday 2018-01-08's models; with a 28-day cadence 2018-01-10 is
    served by 2018-01-01's, exactly as in a store that never had the weekly models (those stay in the
    registry, serving nothing)."""
    import shutil

    day = dt.date(2018, 1, 10)
    monthly = re.sub(r"ml_retrain_days = \d+", "ml_retrain_days = 28", _text())
    (tmp_path / "changed").mkdir()
    (tmp_path / "fresh").mkdir()
    changed = Pipeline(tmp_path / "changed", monthly)
    shutil.copytree(ranged.data_dir, changed.data_dir)
    assert (changed.data_dir / "ml_registry" / ASSET / "trained-2018-01-08-h1").is_dir()
    fresh = Pipeline(tmp_path / "fresh", monthly)
    for pipe in (changed, fresh):
        assert _run(pipe, day, day).success
    assert _read(changed, "ml_models", day)["model_version"].tolist() == ["trained-2018-01-01-h1", "trained-2018-01-01-h5"]
    for asset in ML_ASSETS:
        assert changed.file(asset, f"{ASSET}|{day}").read_bytes() == fresh.file(asset, f"{ASSET}|{day}").read_bytes()


@pytest.mark.slow
def test_files_do_not_depend_on_how_dates_are_grouped_into_runs(ranged, tmp_path):
    """Day by day in reverse order (so later models exist before earlier days run), the same bytes:
    tables, model files and manifests."""
    daily = Pipeline(tmp_path, _text())
    for day in sorted((FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)), reverse=True):
        assert _run(daily, day, day).success
    got, want = _files(daily), _files(ranged)
    assert sorted(got) == sorted(want)
    assert [p for p in want if got[p] != want[p]] == []
    assert np.any(["model.onnx" in p for p in want])


def test_a_registered_torch_style_export_serves_its_dates(tmp_path):
    """A double model whose batch is fixed at 1 (torch.onnx.export without dynamic axes): registered,
    it serves from its valid_from, one row at a time, and the stored probability is the network's."""
    from onnx import TensorProto

    from nexus_assets.ml_registry import register_model
    from nexus_assets_tests.test_ml_registry import expected_probability, network_onnx

    pipe = Pipeline(tmp_path, _text())
    names = model_features(True)
    path = network_onnx(tmp_path / "team.onnx", len(names), batch=1, elem=TensorProto.DOUBLE)
    manifest = register_model(str(pipe.data_dir), asset=ASSET, horizon=1, model_file=str(path), features=names,
                              valid_from=dt.date(2018, 1, 2), version="team-v1")
    last = dt.date(2018, 1, 5)
    assert _run(pipe, FIRST, last).success
    days = [FIRST + dt.timedelta(days=i) for i in range((last - FIRST).days + 1)]
    predictions = pd.concat([_read(pipe, "ml_predictions", day) for day in days], ignore_index=True)
    served = predictions[(predictions["horizon"] == 1) & (predictions["date"] >= pd.Timestamp(2018, 1, 2))]
    assert served["model_version"].tolist() == ["team-v1"] * 4
    assert set(served["model_sha256"]) == {manifest["sha256"]}
    features = pd.concat([_read(pipe, "features", day) for day in days]).set_index("date").loc[served["date"]]
    np.testing.assert_allclose(served["probability_up"], expected_probability(features[names].to_numpy()),
                               rtol=0, atol=1e-12)
    models = _read(pipe, "ml_models", dt.date(2018, 1, 3))
    assert models.loc[models["horizon"] == 1, "source"].tolist() == ["registered"]


def test_an_api_asset_reads_its_closes_from_qml_models_up_to_the_date(tmp_path):
    """One close per day from target_var_price (a day without a price has none), nothing after
    the date, no volume; stored partitions outside the run's window count too."""
    from upath import UPath

    from nexus_assets.catalog import load_catalog
    from nexus_assets.defs.ml import price_history
    from nexus_assets.defs.storage import PartitionFrames

    text = sandbox_catalog_text((ASSET,), source="api")
    (tmp_path / "c.toml").write_text(text)
    entry = load_catalog(str(tmp_path / "c.toml"))[ASSET]
    paths = {}
    prices = {dt.date(2018, 1, 2): 10.0, dt.date(2018, 1, 3): None, dt.date(2018, 1, 4): 11.0, dt.date(2018, 1, 5): 12.0}
    for day, price in prices.items():
        rows = pd.DataFrame({"symbol": ["a", "b"], "time": [pd.Timestamp(day)] * 2, "n_predict": [1, 5],
                             "close_predict": [1.0, 1.0], "target_var_price": [price, price]}).astype({"target_var_price": "float64"})
        path = UPath(tmp_path / f"{day}.parquet")
        rows.to_parquet(path)
        paths[day] = path
    frames = PartitionFrames({f"{ASSET}|{dt.date(2018, 1, 5)}": paths[dt.date(2018, 1, 5)]},
                             listing=lambda asset: {d: p for d, p in paths.items()})
    close, volume = price_history(entry, frames, dt.date(2018, 1, 4))
    assert volume is None
    assert close.to_dict() == {pd.Timestamp("2018-01-02"): 10.0, pd.Timestamp("2018-01-04"): 11.0}


def reference_closes(frames, last_day: dt.date) -> pd.Series:
    """The obvious way: every stored row at once, one groupby (what price_history did before it
    read a day at a time)."""
    rows = frames.everything(ASSET, ["time", "target_var_price"])
    rows = None if rows is None else rows[rows["target_var_price"].notna() & (rows["time"] <= pd.Timestamp(last_day))]
    if rows is None or rows.empty:  # no priced row up to the date: one empty series, however that came about
        return pd.Series([], dtype="float64", index=pd.DatetimeIndex([], dtype="datetime64[ns]"))
    close = rows.groupby("time", sort=True)["target_var_price"].first().astype("float64")
    close.index = pd.DatetimeIndex(close.index).as_unit("ns")
    return close[close > 0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_closes_read_a_day_at_a_time_equal_one_groupby_over_every_row(tmp_path, seed):
    """Real tables' traits: days without rows, days whose first rows have no price, unpriced days,
    a non-positive price, rows of the same day on two timestamps; dates inside, between and past them."""
    from upath import UPath

    from nexus_assets.catalog import load_catalog
    from nexus_assets.defs.ml import price_history
    from nexus_assets.defs.storage import PartitionFrames

    (tmp_path / "c.toml").write_text(sandbox_catalog_text((ASSET,), source="api"))
    entry = load_catalog(str(tmp_path / "c.toml"))[ASSET]
    rng = np.random.default_rng(seed)
    paths = {}
    start = dt.date(2018, 1, 1)
    for n in range(40):
        day = start + dt.timedelta(days=n)
        count = 0 if rng.random() < 0.15 else int(rng.integers(1, 6))
        price = None if rng.random() < 0.15 else float(rng.choice([-1.0, 0.0, 50 + rng.normal()], p=[0.05, 0.05, 0.9]))
        prices = [None if rng.random() < 0.3 else price for _ in range(count)]
        times = [pd.Timestamp(day) + (pd.Timedelta(hours=6) if rng.random() < 0.1 else pd.Timedelta(0)) for _ in range(count)]
        rows = pd.DataFrame({"symbol": [f"m{i}" for i in range(count)], "time": pd.to_datetime(times, utc=False),
                             "n_predict": 1, "close_predict": 1.0, "target_var_price": prices}
                            ).astype({"target_var_price": "float64", "time": "datetime64[ns]"})
        paths[day] = UPath(tmp_path / f"{day}.parquet")
        rows.to_parquet(paths[day])
    frames = PartitionFrames({f"{ASSET}|{d}": p for d, p in paths.items() if d.day % 3 == 0},
                             listing=lambda asset: dict(paths))
    for n in (-1, 0, 5, 17, 39, 45):
        last_day = start + dt.timedelta(days=n)
        close, _ = price_history(entry, frames, last_day)
        pd.testing.assert_series_equal(close, reference_closes(frames, last_day))


def test_a_trained_model_is_trained_again_when_its_rows_were_incomplete():
    """ml_models keeps a stored model only while it learnt from the rows known by its training day now:
    a model trained while older partitions were missing is trained again (the result then equals a
    clean backfill's); a registered model is never retrained."""

    rng = np.random.default_rng(5)
    days = pd.bdate_range("2017-01-02", periods=900)
    closes = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days)))), index=days)
    names, anchor = model_features(False), dt.date(2019, 6, 3)
    full = feature_frame(closes)
    partial = feature_frame(closes.drop(days[100:130]))  # a month not yet stored when it was trained
    config = TrainingConfig()
    stale = train_direction_model(partial, names, asset="1_A", horizon=1, as_of=anchor, config=config).manifest
    fresh = train_direction_model(full, names, asset="1_A", horizon=1, as_of=anchor, config=config).manifest
    assert _needs_training(None, full, names, 1, anchor)
    assert _needs_training(stale, full, names, 1, anchor)
    assert not _needs_training(fresh, full, names, 1, anchor)
    assert not _needs_training({**stale, "source": "registered"}, full, names, 1, anchor)
    # the catalog's training settings changed (fewer pairs needed, a shorter window): trained again
    shorter = TrainingConfig(min_pairs=60, window=300)
    assert _needs_training(fresh, full, names, 1, anchor, shorter)
    again = train_direction_model(full, names, asset="1_A", horizon=1, as_of=anchor, config=shorter).manifest
    assert again["training_window"]["rows"] == 300
    assert not _needs_training(again, full, names, 1, anchor, shorter)


def test_only_models_of_the_current_cadence_and_settings_serve():
    """current_manifests: registered models always; trained ones only from a training day of today's
    cadence and with today's settings."""
    settings = TrainingConfig().as_dict()
    trained = [{"version": f"trained-{d}-h1", "source": "trained", "trained_on": d, "hyperparameters": settings}
               for d in ("2018-01-01", "2018-01-08", "2018-01-29")]
    other = {**trained[0], "version": "other", "hyperparameters": {**settings, "window": 300}}
    registered = {"version": "mine", "source": "registered", "trained_on": None, "hyperparameters": None}
    every = [*trained, other, registered]
    assert current_manifests(every, 7, TrainingConfig()) == [*trained, registered]
    assert current_manifests(every, 28, TrainingConfig()) == [trained[0], trained[2], registered]
    assert current_manifests(every, 7, TrainingConfig(window=300)) == [other, registered]


def _seeded_signal_rows(seed: int) -> pd.DataFrame:
    """ml_signals-shaped rows over a few days (some without rows, some without a model or probability)."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in pd.date_range("2018-01-01", periods=12):
        if rng.random() < 0.3:
            continue
        for horizon in (1, 5):
            p = np.nan if rng.random() < 0.2 else float(rng.random())
            version = "" if rng.random() < 0.2 else f"trained-{day.date()}-h{horizon}"
            rows.append({"date": day, "horizon": horizon, "probability_up": p, "model_version": version,
                         "signal": str(rng.choice(["BUY", "SELL", "HOLD"])), "reason": "below_threshold"})
    frame = pd.DataFrame(rows)
    return frame.astype({"model_version": "str", "signal": "str", "reason": "str"})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_wide_day_helpers_equal_the_per_day_references(seed):
    from nexus_assets.defs.ml_signals import day_metadata, metadata_by_day
    from nexus_assets.defs.partitions import split_by_day, split_sorted_by_day

    table = _seeded_signal_rows(seed)
    days = [d.date() for d in pd.date_range("2017-12-31", periods=14)]
    fast, slow = split_sorted_by_day(table, days), split_by_day(table, days)
    assert list(fast) == days
    for day in days:
        pd.testing.assert_frame_equal(fast[day], slow[day])
    facts = metadata_by_day(table, days)
    assert facts == {day: day_metadata(slow[day]) for day in days}


def test_run_frame_equals_concat(tmp_path):
    from nexus_assets.defs.ml import run_frame
    from nexus_assets.defs.storage import PartitionFrames

    table = _seeded_signal_rows(3)
    paths = {}
    for day in pd.date_range("2018-01-01", periods=12):
        pk = f"{ASSET}|{day.date()}"
        paths[pk] = tmp_path / f"{day.date()}.parquet"
        table[table["date"] == day].reset_index(drop=True).to_parquet(paths[pk])
    frames = PartitionFrames(paths)
    expected = frames.concat(ASSET)
    pd.testing.assert_frame_equal(run_frame(frames, ASSET), expected, check_dtype=False)  # text: object, not str
    pd.testing.assert_frame_equal(run_frame(frames, ASSET, ["date", "probability_up"]),
                                  expected[["date", "probability_up"]])
    assert run_frame(frames, "9002_NASDAQ") is None
