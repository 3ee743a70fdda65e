"""The dashboard step's own helpers (the pages are tested in core/dashboard, the step in
test_signals_metrics.py)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nexus_assets.defs.dashboard import MODEL_WINDOW, _ensembles_by_day, _rows_by_day


def assert_columns(got: dict, want: pd.DataFrame) -> None:
    """``got`` (column arrays) holds the columns of ``want``, each what ``to_numpy`` gives."""
    assert list(got) == list(want.columns)
    for name in want.columns:
        expected = want[name].to_numpy()
        assert got[name].dtype == expected.dtype, name
        assert got[name].tolist() == expected.tolist(), name


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
        assert_columns(got_day, want_day)
        assert_columns(got_window, want_window)
        if not shuffle:
            for want, got in zip(naive(frame, day), (got_day, got_window)):
                assert_columns(got, want)
    assert len(of(dt.date(2018, 4, 30))[1]["date"]) == 3 * MODEL_WINDOW


def test_no_ensembles_no_rows():
    empty = pd.DataFrame({"date": pd.Series([], dtype="datetime64[ns]"), "horizon": pd.Series([], dtype="int64")})
    day_rows, window = _ensembles_by_day(empty)(dt.date(2018, 1, 2))
    assert_columns(day_rows, empty)
    assert_columns(window, empty)


def test_the_child_models_of_each_page_equal_its_own_partition():
    """The run's qml_model_metadata rows read at once (in date order, as history returns them),
    split by date: each page gets what reading its own partition gave, an empty frame for a
    date without models, and None when the run has no row at all."""
    rng = np.random.default_rng(8)
    days = [dt.date(2018, 1, 1) + dt.timedelta(days=n) for n in range(40)]
    partitions = {}
    for day in days:
        n = 0 if rng.random() < 0.2 else int(rng.integers(1, 12))  # some dates have no model yet
        partitions[day] = pd.DataFrame({
            "date": pd.Series([pd.Timestamp(day)] * n, dtype="datetime64[ns]"),
            "horizon": rng.choice([1, 5, 13], n).astype("int64"),
            "symbol": pd.Series([f"m{k}" for k in rng.integers(0, 30, n)], dtype=str),
            "algorithm": pd.Series([None if rng.random() < 0.3 else "ridge" for _ in range(n)], dtype=str),
            "code_version": pd.Series(["sandbox-1"] * n, dtype=str),
        })
    history = pd.concat([f for f in partitions.values() if len(f)], ignore_index=True)
    of = _rows_by_day(history)
    for day, own in partitions.items():
        assert_columns(of(day), own)
    assert all(len(values) == 0 for values in of(days[-1] + dt.timedelta(days=1)).values())
    assert _rows_by_day(None)(days[0]) is None
