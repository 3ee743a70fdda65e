"""Plain within-horizon combinations against a per-date pandas loop written from the definitions."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_assets.core.combinations import COMBINATION_COLUMNS, within_horizon_combinations
from nexus_assets.core.slicing import horizon_frames, slice_horizons
from nexus_assets.qml.synthetic import SyntheticProject

START = dt.date(2025, 1, 1)


def slices(seed=3, days=40, models=12, horizons=(1, 4)):
    end = START + dt.timedelta(days=days - 1)
    project = SyntheticProject(800 + seed, horizons=horizons, models_per_horizon=models, seed=seed, start=START,
                               end=end, calendar="crypto")
    out = slice_horizons(project.rows(START, end))
    rng = np.random.default_rng(seed)
    out.loc[rng.random(len(out)) < 0.05, "forecast"] = np.nan
    return out.drop(index=rng.choice(len(out), size=len(out) // 20, replace=False)).reset_index(drop=True)


def reference(frame, window, share=0.1):
    rows = []
    for h, hf in horizon_frames(frame).items():
        X = hf.forecasts
        for i, date in enumerate(X.index):
            today = X.iloc[i].dropna()
            past = X.iloc[max(0, i - window + 1): i + 1]
            var = past.var(ddof=1)  # pandas skips NaN, needs two values
            eligible = [s for s in today.index if past[s].count() >= 2]
            k = max(1, int(len(eligible) * share))
            ranked = sorted(eligible, key=lambda s: (var[s], s))
            low = today[ranked[:k]].mean() if eligible else np.nan
            rows.append({"date": date, "horizon": h, "price": hf.price.iloc[i],
                         "raw_mean": today.mean() if len(today) else np.nan,
                         "raw_median": today.median() if len(today) else np.nan, "low_variance": low})
    return pd.DataFrame(rows).sort_values(["date", "horizon"]).reset_index(drop=True)


def test_equals_the_reference_loop():
    frame = slices()
    got = within_horizon_combinations(frame, window=10, low_variance_share=0.25)
    want = reference(frame, 10, 0.25)
    assert list(got.columns) == list(COMBINATION_COLUMNS)
    assert (got["date"].to_numpy() == want["date"].to_numpy()).all()
    assert (got["horizon"].to_numpy() == want["horizon"].to_numpy()).all()
    for column in ("price", "raw_mean", "raw_median", "low_variance"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-12, err_msg=column)
    assert got["low_variance"].notna().sum() > len(got) * 0.9


def test_dates_subset_and_bit_identical_whatever_history_precedes_the_window():
    frame = slices(seed=4)
    full = within_horizon_combinations(frame)
    days = sorted(frame["date"].unique())[-5:]
    part = within_horizon_combinations(frame, dates=days)
    pd.testing.assert_frame_equal(part, full[full["date"].isin(days)].reset_index(drop=True))
    # drop history older than the 60-row window: nothing changes, to the bit
    trimmed = frame[frame["date"] >= sorted(frame["date"].unique())[-60 - 5]] if frame["date"].nunique() > 65 else frame
    pd.testing.assert_frame_equal(within_horizon_combinations(trimmed, dates=days), part)
    short = within_horizon_combinations(frame, window=5, dates=days)
    cut = frame[frame["date"] >= days[0] - pd.Timedelta(days=4)]
    pd.testing.assert_frame_equal(within_horizon_combinations(cut, window=5, dates=days), short)


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
@settings(max_examples=15, deadline=None)
@given(shift=st.floats(-50, 50, allow_nan=False), cut=st.integers(5, 35))
def test_point_in_time(shift, cut):
    frame = slices(seed=6)
    D = sorted(frame["date"].unique())[cut]
    before = within_horizon_combinations(frame, window=8)
    changed = frame.copy()
    later = changed["date"] > D
    changed.loc[later, "forecast"] += shift
    changed.loc[later, "price"] *= 1.5
    after = within_horizon_combinations(changed, window=8)
    pd.testing.assert_frame_equal(before[before["date"] <= D], after[after["date"] <= D])


def test_empty_and_bad_input():
    empty = within_horizon_combinations(slices().iloc[0:0])
    assert list(empty.columns) == list(COMBINATION_COLUMNS) and empty.empty
    import pytest

    with pytest.raises(ValueError, match="window"):
        within_horizon_combinations(slices(), window=1)
    with pytest.raises(ValueError, match="symbol"):
        within_horizon_combinations(slices().drop(columns="symbol"))


def test_models_outside_a_dates_rows_change_no_bit():
    """A model that first publishes after a date, or that retired long before its window, leaves
    the date's raw_mean, raw_median and low_variance unchanged to the last bit (the sums add the
    forecasts in ascending order, so a column inserted among the others regroups nothing)."""
    frame = slices(seed=9, days=90, models=80, horizons=(1,))
    dates = sorted(frame["date"].unique())
    D = dates[70]
    base = within_horizon_combinations(frame, dates=[D])
    rng = np.random.default_rng(9)
    later = frame[frame["date"] > D].copy()
    newcomers = [later.assign(symbol=f"{p}.0_{n}", forecast=later["forecast"] * rng.uniform(0.9, 1.1))
                 for p, n in ((1000, 1), (4382, 100500), (9999, 7))]  # they sort first, among and last
    early = frame[frame["date"] < dates[5]]
    retired = [early.assign(symbol=f"4382.0_{n}") for n in (100001, 100002, 100003)]
    grown = pd.concat([frame, *newcomers, *retired], ignore_index=True)
    again = within_horizon_combinations(grown, dates=[D])
    pd.testing.assert_frame_equal(again, base, check_exact=True)
