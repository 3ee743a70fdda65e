"""Upstream's per-horizon forecasts as horizon_ensembles rows (ensemble_source = "upstream")."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.combinations import within_horizon_combinations
from nexus_assets.core.contract import HORIZON_ENSEMBLES, table_problems
from nexus_assets.core.upstream_ensembles import upstream_ensemble_rows, upstream_forecasts

DAYS = [dt.date(2025, 3, d) for d in range(1, 6)]


def slices(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i, day in enumerate(DAYS):
        price = 100 + i
        for h in (1, 3):
            for m in range(4 if h == 1 else 3):
                rows.append({"date": pd.Timestamp(day), "horizon": h, "symbol": f"m{m}",
                             "forecast": price * (1 + rng.normal(0, 0.01)), "price": float(price)})
    return pd.DataFrame(rows)


def served(**extra) -> pd.DataFrame:
    """What /get_qml_horizon_forecast sends: ISO dates, numbers as JSON gives them."""
    return pd.DataFrame([{"time": f"{day.isoformat()}", "n_predict": float(h), "forecast": 100.0 + i + h / 10, **extra}
                         for i, day in enumerate(DAYS) for h in (1, 3)])


def test_rows_carry_upstreams_forecast_and_null_where_upstream_says_nothing():
    s = slices()
    wanted = DAYS[1:4]
    rows = upstream_ensemble_rows(upstream_forecasts(served()), within_horizon_combinations(s, dates=wanted), s, wanted)
    assert table_problems(HORIZON_ENSEMBLES, rows) == []
    assert len(rows) == 6 and rows["date"].dt.date.unique().tolist() == wanted
    assert (rows["strategy"] == "upstream").all() and (rows["mode"] == "upstream").all()
    for column in ("aggregator", "quantile", "best_child_forecast", "best_child", "p05", "p25", "p75", "p95"):
        assert rows[column].isna().all(), column
    assert rows["forecast"].tolist() == [101.1, 101.3, 102.1, 102.3, 103.1, 103.3]
    assert (rows["n_selected"] == 0).all()
    assert rows["n_models"].tolist() == [4, 3] * 3  # upstream sent no count: the day's published models
    plain = within_horizon_combinations(s, dates=wanted)
    pd.testing.assert_frame_equal(rows[plain.columns.tolist()].reset_index(drop=True), plain.reset_index(drop=True),
                                  check_dtype=False)


def test_upstreams_own_model_count_wins_when_it_sends_one():
    s = slices()
    rows = upstream_ensemble_rows(upstream_forecasts(served(n_models=700)), within_horizon_combinations(s, dates=DAYS),
                                  s, DAYS)
    assert (rows["n_models"] == 700).all()


def test_rfc_1123_times_and_other_fields_are_accepted():
    raw = served().assign(time=lambda f: pd.to_datetime(f["time"]).dt.strftime("%a, %d %b %Y 00:00:00 GMT"),
                          median=1.0, note="x")
    assert upstream_forecasts(raw)["time"].dt.date.unique().tolist() == DAYS


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="forecast"), "lack field.*forecast"),
    (lambda f: f.assign(forecast="101.5"), None),  # a number as text is still a number for this endpoint
    (lambda f: f.assign(forecast=np.nan), "'forecast' must be a finite number"),
    (lambda f: f.assign(forecast=-1.0), "break the rules"),
    (lambda f: f.assign(n_predict=1.5), "'n_predict' must be a whole number"),
    (lambda f: pd.concat([f, f.head(1)]), "break the rules"),
    (lambda f: f.assign(time="yesterday"), "'time' must be a date-time"),
])
def test_unusable_forecasts_are_refused_naming_the_field(change, message):
    raw = change(served())
    if message is None:
        assert len(upstream_forecasts(raw)) == len(raw)
        return
    with pytest.raises(ValueError, match=message):
        upstream_forecasts(raw)
