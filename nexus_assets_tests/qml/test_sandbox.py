"""Tests of the sandbox model farm: QML row contract, determinism, no look-ahead."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from nexus_assets.qml import sandbox
from nexus_assets.qml.sandbox import DEFAULT_HORIZONS, SERIES, ModelFarm, load_prices

COLUMNS = ["symbol", "time", "n_predict", "close_predict", "target_var_price", "yn_p", "yn_actual"]
YEAR = (dt.date(2018, 1, 1), dt.date(2018, 12, 31))


@pytest.fixture(scope="module")
def farm() -> ModelFarm:
    return ModelFarm(project_id=1, series="sp500")


@pytest.fixture(scope="module")
def year_rows(farm: ModelFarm) -> pd.DataFrame:
    return farm.rows(*YEAR)


def assert_contract(frame: pd.DataFrame) -> None:
    """Column order and dtypes of the QML contract, valid for empty frames too."""
    assert list(frame.columns) == COLUMNS
    assert frame["symbol"].dtype == object or pd.api.types.is_string_dtype(frame["symbol"])
    assert frame["time"].dtype == np.dtype("datetime64[ns]")
    assert frame["n_predict"].dtype == np.int64
    for column in COLUMNS[3:]:
        assert frame[column].dtype == np.float64, column


@pytest.mark.parametrize("series", SERIES)
def test_load_prices(series: str) -> None:
    close = load_prices(series)
    assert close.name == "close" and close.dtype == np.float64
    assert isinstance(close.index, pd.DatetimeIndex) and close.index.tz is None
    assert close.index.is_monotonic_increasing and close.index.is_unique
    assert (close.index == close.index.normalize()).all()
    assert np.isfinite(close.to_numpy()).all() and (close.to_numpy() > 0).all()
    assert close.index[0].year < 2018 and close.index[-1] >= pd.Timestamp("2018-12-31")


def test_load_prices_unknown_series_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="sp500.*nasdaq.*wti.*vix"):
        load_prices("gold")


def test_load_prices_returns_a_copy() -> None:
    close = load_prices("sp500")
    close.iloc[:] = -1.0
    assert (load_prices("sp500") > 0).all()


def test_contract(farm: ModelFarm, year_rows: pd.DataFrame) -> None:
    assert_contract(year_rows)
    assert isinstance(year_rows["symbol"].iloc[0], str)
    assert not year_rows.duplicated(["symbol", "time", "n_predict"]).any()
    assert year_rows["symbol"].str.fullmatch(r"\d+\.0_\d+").all()
    predict = year_rows["close_predict"].to_numpy()
    assert np.isfinite(predict).all() and (predict > 0).all()
    assert (year_rows["time"] == year_rows["time"].dt.normalize()).all()
    ordered = year_rows.sort_values(["time", "n_predict", "symbol"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(year_rows, ordered)
    # every trading day of 2018 is present, and only those
    close = load_prices("sp500").loc["2018"]
    assert year_rows["time"].drop_duplicates().tolist() == close.index.tolist()


def test_models_per_horizon_and_parent_ids(farm: ModelFarm, year_rows: pd.DataFrame) -> None:
    per_day = year_rows[year_rows["time"] == year_rows["time"].iloc[0]]
    counts = per_day.groupby("n_predict")["symbol"].nunique()
    assert sorted(counts.index) == sorted(DEFAULT_HORIZONS) and (counts >= 60).all()
    parents = per_day["symbol"].str.split("_").str[0]
    parents_by_h = parents.groupby(per_day["n_predict"]).agg(set)
    assert all(len(p) >= 3 for p in parents_by_h)
    every = [p for ps in parents_by_h for p in ps]
    assert len(every) == len(set(every)), "parent ids must be distinct across horizons"
    assert set(parents_by_h[1]) == {"7001.0", "7002.0", "7003.0"}
    assert set(parents_by_h[13]) == {"7041.0", "7042.0", "7043.0"}


def test_models_catalogue(farm: ModelFarm, year_rows: pd.DataFrame) -> None:
    models = farm.models()
    assert list(models.columns) == [
        "symbol", "parent", "algorithm", "family", "horizon", "training_window", "params", "code_version",
    ]
    assert models["symbol"].is_unique
    assert models["family"].nunique() >= 3
    assert (models.groupby("horizon").size() >= 60).all()
    assert (models["symbol"].str.split("_").str[0] == models["parent"]).all()
    assert (models["code_version"] == sandbox.CODE_VERSION).all()
    assert all(isinstance(json.loads(p), dict) for p in models["params"])
    emitted = year_rows[["symbol", "n_predict"]].drop_duplicates()
    assert set(zip(emitted["symbol"], emitted["n_predict"])) == set(zip(models["symbol"], models["horizon"]))


def test_watermark(farm: ModelFarm) -> None:
    assert farm.watermark() == pd.Timestamp("2018-12-31")


def test_target_price_and_directions(year_rows: pd.DataFrame) -> None:
    close = load_prices("sp500")
    expected = close.reindex(year_rows["time"]).to_numpy()
    np.testing.assert_array_equal(year_rows["target_var_price"].to_numpy(), expected)
    np.testing.assert_array_equal(
        year_rows["yn_p"].to_numpy(),
        (year_rows["close_predict"] > year_rows["target_var_price"]).astype(float).to_numpy(),
    )
    up = (close > close.shift(1)).astype(float)
    np.testing.assert_array_equal(year_rows["yn_actual"].to_numpy(), up.reindex(year_rows["time"]).to_numpy())


def test_deterministic(year_rows: pd.DataFrame) -> None:
    again = ModelFarm(project_id=1, series="sp500").rows(*YEAR)
    pd.testing.assert_frame_equal(year_rows, again, check_exact=True)


@pytest.mark.parametrize("day", ["2018-01-02", "2018-03-15", "2018-07-05", "2018-12-31"])
def test_range_independent(farm: ModelFarm, year_rows: pd.DataFrame, day: str) -> None:
    alone = farm.rows(pd.Timestamp(day).date(), pd.Timestamp(day).date())
    sliced = year_rows[year_rows["time"] == pd.Timestamp(day)].reset_index(drop=True)
    assert len(alone) > 0
    pd.testing.assert_frame_equal(alone, sliced, check_exact=True)


@pytest.mark.parametrize("how", ["replace", "truncate"])
def test_no_look_ahead(monkeypatch: pytest.MonkeyPatch, year_rows: pd.DataFrame, how: str) -> None:
    cutoff = pd.Timestamp("2018-06-15")
    real = load_prices("sp500")

    def altered(series: str) -> pd.Series:
        close = real.copy()
        after = close.index > cutoff
        if how == "truncate":
            return close[~after]
        # a seeded, wild alternative future: any leak would change the forecasts
        noise = np.random.default_rng(7).lognormal(0.0, 0.2, int(after.sum()))
        close[after] = close[after] * noise * 3.0
        return close

    monkeypatch.setattr(sandbox, "load_prices", altered)
    rows = ModelFarm(project_id=1, series="sp500").rows(dt.date(2018, 5, 1), dt.date(2018, 7, 31))
    before = rows[rows["time"] <= cutoff].reset_index(drop=True)
    expected = year_rows[(year_rows["time"] >= "2018-05-01") & (year_rows["time"] <= cutoff)]
    pd.testing.assert_frame_equal(before, expected.reset_index(drop=True), check_exact=True)
    if how == "replace":
        # the alteration is visible right after the cutoff, so the check above has teeth
        later = rows[rows["time"] > cutoff].reset_index(drop=True)
        original = year_rows[(year_rows["time"] > cutoff) & (year_rows["time"] <= "2018-07-31")]
        assert not np.allclose(later["close_predict"], original["close_predict"].to_numpy())


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (dt.date(2018, 6, 16), dt.date(2018, 6, 17)),  # weekend
        (dt.date(2018, 7, 4), dt.date(2018, 7, 4)),  # Independence Day
        (dt.date(2018, 6, 20), dt.date(2018, 6, 19)),  # start after end
        (dt.date(2025, 1, 1), dt.date(2025, 12, 31)),  # beyond the watermark
    ],
)
def test_no_trading_day_gives_empty_frame(farm: ModelFarm, start: dt.date, end: dt.date) -> None:
    rows = farm.rows(start, end)
    assert rows.empty
    assert_contract(rows)


def test_forecasts_are_sane(year_rows: pd.DataFrame) -> None:
    close = load_prices("sp500")
    # the last day of the series has no realised next close to score against
    one_step = year_rows[(year_rows["n_predict"] == 1) & (year_rows["time"] < close.index[-1])]
    position = close.index.get_indexer(one_step["time"])
    actual = close.to_numpy()[position + 1]
    mape = np.median(np.abs(one_step["close_predict"].to_numpy() / actual - 1.0))
    assert mape < 0.05
    # the farm is not just a naive random walk: the models actually move
    assert (one_step["close_predict"] != one_step["target_var_price"]).mean() > 0.9


def test_trainable_from_first_day(farm: ModelFarm) -> None:
    first = farm.rows(dt.date(1999, 1, 1), dt.date(1999, 1, 4))
    assert_contract(first)
    assert len(first) == len(farm.models())
    # nothing to train on yet: naive forecast, and no previous close for the direction
    assert (first["close_predict"] == first["target_var_price"]).all()
    assert (first["yn_actual"] == 0.0).all()
    early = farm.rows(dt.date(1999, 1, 1), dt.date(1999, 6, 30))
    assert np.isfinite(early["close_predict"]).all() and (early["close_predict"] > 0).all()


@pytest.mark.parametrize("series", SERIES)
def test_every_series(series: str) -> None:
    farm = ModelFarm(project_id=2, series=series)
    rows = farm.rows(dt.date(2018, 11, 1), dt.date(2018, 11, 30))
    assert_contract(rows)
    assert rows["time"].nunique() >= 19
    assert np.isfinite(rows["close_predict"]).all() and (rows["close_predict"] > 0).all()
    assert not rows.duplicated(["symbol", "time", "n_predict"]).any()


def test_custom_horizons_use_position_parent_ids() -> None:
    farm = ModelFarm(project_id=3, series="vix", horizons=(5, 2))
    rows = farm.rows(dt.date(2018, 3, 1), dt.date(2018, 3, 1))
    assert rows["n_predict"].tolist() == sorted(rows["n_predict"].tolist())
    parents = rows.groupby("n_predict")["symbol"].agg(lambda s: set(s.str[:4]))
    assert parents[5] == {"7001", "7002", "7003"} and parents[2] == {"7011", "7012", "7013"}


@pytest.mark.parametrize("horizons", [(), (0, 1), (1, 1)])
def test_invalid_horizons(horizons: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="horizons"):
        ModelFarm(project_id=1, series="sp500", horizons=horizons)


def _argsort_head(values: np.ndarray, count: int) -> np.ndarray:
    """The slow reference of ``nearest_first``: sort every whole row, keep the head."""
    return np.argsort(values, axis=1, kind="stable")[:, :count]


@pytest.mark.parametrize("seed", range(6))
def test_nearest_first_is_the_head_of_a_stable_argsort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, width = int(rng.integers(1, 40)), int(rng.integers(1, 300))
    # few distinct values (ties everywhere, also across the cut) and whole runs of inf (invalid candidates)
    values = rng.integers(0, int(rng.integers(2, 12)), size=(rows, width)).astype(np.float64)
    values[rng.random((rows, width)) < rng.random()] = np.inf
    for count in sorted({1, 2, 5, 40, width - 1, width, width + 3}):
        if count >= 1:
            np.testing.assert_array_equal(sandbox.nearest_first(values, count), _argsort_head(values, count))
    smooth = rng.normal(size=(rows, width))
    np.testing.assert_array_equal(sandbox.nearest_first(smooth, 7), _argsort_head(smooth, 7))


def test_analog_forecasts_with_the_partial_sort_equal_those_with_a_full_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """The farm's rows, bit for bit, with ``nearest_first`` and with the whole-row stable argsort."""
    start, end = dt.date(2018, 1, 1), dt.date(2018, 3, 31)
    fast = ModelFarm(9004, "vix").rows(start, end)
    monkeypatch.setattr(sandbox, "nearest_first", lambda values, count: np.argsort(values, axis=1, kind="stable"))
    slow = ModelFarm(9004, "vix").rows(start, end)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    assert fast["close_predict"].to_numpy().tobytes() == slow["close_predict"].to_numpy().tobytes()
