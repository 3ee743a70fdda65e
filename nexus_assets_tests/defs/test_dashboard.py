"""The dashboard step's own helpers (the pages are tested in core/dashboard, the step in
test_signals_metrics.py)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nexus_assets.defs.dashboard import MODEL_WINDOW, _ensembles_by_day


def naive(ensembles, day):
    """The day's rows, and the rows of the last MODEL_WINDOW observed dates up to the day."""
    stamp = pd.Timestamp(day)
    before = ensembles[ensembles["date"] <= stamp]
    dates = before["date"].drop_duplicates().sort_values().tail(MODEL_WINDOW)
    return (ensembles[ensembles["date"] == stamp].reset_index(drop=True),
            before[before["date"].isin(dates)].reset_index(drop=True))


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_rows_of_each_page_equal_the_naive_filter(shuffle):
    rng = np.random.default_rng(5)
    sessions = pd.bdate_range("2018-01-01", periods=80)
    sessions = sessions[rng.random(len(sessions)) > 0.1]  # holidays: gaps in the observed dates
    frame = pd.DataFrame({"date": np.repeat(sessions, 3), "horizon": np.tile([1, 5, 13], len(sessions)),
                          "best_child": [f"m{k}" for k in rng.integers(0, 9, 3 * len(sessions))]})
    if shuffle:  # stored order is by date; any other comes out by date, a date's rows in given order
        frame = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    of = _ensembles_by_day(frame)
    by_date = frame.sort_values("date", kind="stable", ignore_index=True)
    for day in (dt.date(2017, 12, 31) + dt.timedelta(days=i) for i in range(125)):  # before, during, after
        want_day, want_window = naive(by_date, day)
        got_day, got_window = of(day)
        pd.testing.assert_frame_equal(got_day, want_day)
        pd.testing.assert_frame_equal(got_window, want_window)
        if not shuffle:
            assert [f.equals(g) for f, g in zip(naive(frame, day), (got_day, got_window))] == [True, True]
    assert len(of(dt.date(2018, 4, 30))[1]) == 3 * MODEL_WINDOW


def test_no_ensembles_no_rows():
    empty = pd.DataFrame({"date": pd.Series([], dtype="datetime64[ns]"), "horizon": pd.Series([], dtype="int64")})
    day_rows, window = _ensembles_by_day(empty)(dt.date(2018, 1, 2))
    assert day_rows.empty and window.empty and list(window.columns) == ["date", "horizon"]
