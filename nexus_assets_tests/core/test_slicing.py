"""The golden engine against a slow, line-by-line reference of the Nexus v2 definition (docs/horizon-slices.md)."""

import datetime as dt

import numpy as np
import pandas as pd

from nexus_assets.core.contract import HORIZON_SLICES
from nexus_assets.core.slicing import horizon_frames, slice_horizons
from nexus_assets.qml.synthetic import SyntheticProject


def seeded_rows(seed=7):
    rows = SyntheticProject(42, horizons=(1, 3, 5), models_per_horizon=12, seed=seed,
                            start=dt.date(2025, 1, 1), end=dt.date(2025, 2, 15), calendar="exchange").rows(
        dt.date(2025, 1, 1), dt.date(2025, 2, 15))
    rng = np.random.default_rng(seed)
    # models missing on some days, and shuffled arrival order
    rows = rows.drop(index=rng.choice(len(rows), size=len(rows) // 10, replace=False))
    return rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def reference_frames(rows):
    """Per horizon, the way the Nexus v2 script does it: pivot, first price, shift back by h rows."""
    out = {}
    for h in sorted(rows["n_predict"].unique()):
        part = rows[rows["n_predict"] == h]
        times = sorted(part["time"].unique())
        symbols = sorted(part["symbol"].unique())
        X = pd.DataFrame(np.nan, index=pd.DatetimeIndex(times), columns=symbols)
        price = pd.Series(np.nan, index=X.index)
        for _, r in part.iterrows():
            X.loc[r["time"], r["symbol"]] = r["close_predict"]
        for t in times:
            day = part[part["time"] == t]
            price[t] = day["target_var_price"].dropna().iloc[0]
        y = pd.Series(np.nan, index=X.index)
        for i in range(len(times) - h):
            y.iloc[i] = price.iloc[i + h]
        out[int(h)] = (X, price, y)
    return out


def test_horizon_frames_match_reference():
    rows = seeded_rows()
    frames = horizon_frames(slice_horizons(rows))
    reference = reference_frames(rows)
    assert sorted(frames) == sorted(reference) == [1, 3, 5]
    for h, (X, price, y) in reference.items():
        got = frames[h]
        np.testing.assert_array_equal(got.forecasts.to_numpy(), X.to_numpy())
        assert list(got.forecasts.columns) == list(X.columns)
        np.testing.assert_array_equal(got.price.to_numpy(), price.to_numpy())
        np.testing.assert_array_equal(got.actual.to_numpy(), y.to_numpy())
        assert got.actual.iloc[-h:].isna().all()


def test_slices_are_long_sorted_and_valid():
    rows = seeded_rows()
    slices = HORIZON_SLICES.validate(slice_horizons(rows))
    assert list(slices.columns) == ["date", "horizon", "symbol", "forecast", "price"]
    assert len(slices) == len(rows)
    assert slices.equals(slices.sort_values(["date", "horizon", "symbol"]).reset_index(drop=True))
    # price is the day's target_var_price
    merged = slices.merge(rows, left_on=["date", "horizon", "symbol"], right_on=["time", "n_predict", "symbol"])
    assert (merged["price"] == merged["target_var_price"]).all()
    assert (merged["forecast"] == merged["close_predict"]).all()


def test_first_price_per_day_and_horizon_and_start_date():
    rows = pd.DataFrame({
        "symbol": ["a", "b", "a"],
        "time": pd.to_datetime(["2025-01-01", "2025-01-01", "2024-12-31"]),
        "n_predict": [1, 1, 1],
        "close_predict": [1.0, 2.0, 3.0],
        "target_var_price": [np.nan, 5.0, 4.0],
    })
    slices = slice_horizons(rows, start_date=dt.date(2025, 1, 1))
    assert list(slices["date"]) == [pd.Timestamp("2025-01-01")] * 2
    assert list(slices["price"]) == [5.0, 5.0]  # first non-null price of the day


def test_single_day_slices_equal_the_range_split():
    rows = seeded_rows()
    whole = slice_horizons(rows)
    day = pd.Timestamp("2025-01-15")
    alone = slice_horizons(rows[rows["time"] == day])
    pd.testing.assert_frame_equal(alone, whole[whole["date"] == day].reset_index(drop=True))
