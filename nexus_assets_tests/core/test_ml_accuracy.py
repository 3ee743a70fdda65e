"""Accuracy of the ML probabilities per model version (docs/ml-signals.md): the cumulative fast path
against a loop over every prediction, hand-computed values, point in time, and range independence."""

import math

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from nexus_assets.core.contract import ML_ACCURACY, ML_CALIBRATION
from nexus_assets.core.ml_accuracy import BINS, MIN_SCORED, accuracy
from nexus_assets.core.ml_signals import ml_signals
from nexus_assets_tests.core.ml_data import ml_predictions


def reference(signals: pd.DataFrame, day) -> tuple[list[dict], list[dict]]:
    """Both tables as of ``day``, one prediction at a time."""
    accuracy_rows, calibration_rows = [], []
    for h in sorted(set(signals["horizon"])):
        rows = signals[(signals["horizon"] == h) & signals["price"].notna()].sort_values("date")
        rows = rows[rows["date"].dt.date <= day].reset_index(drop=True)  # nothing after the day
        scopes = {("all", ""): []}
        for i, row in rows.iterrows():
            if math.isnan(row.probability_up):
                continue
            scopes[("all", "")].append(i)
            scopes.setdefault(("version", row.model_version), []).append(i)
        for (kind, version), members in scopes.items():
            if not members:
                continue
            scored = [i for i in members if i + h <= len(rows) - 1]
            hits, squares, ps, ys, bins = 0, [], [], [], {}
            for i in scored:
                p = rows.loc[i, "probability_up"]
                y = 1.0 if rows.loc[i + h, "price"] > rows.loc[i, "price"] else 0.0
                hits += (p > 0.5 and y == 1.0) or (p < 0.5 and y == 0.0)
                squares.append((p - y) ** 2)
                ps.append(p)
                ys.append(y)
                bins.setdefault(min(int(p * BINS), BINS - 1), []).append((p, y))
            n = len(scored)
            accuracy_rows.append({
                "horizon": h, "scope": kind, "model_version": version,
                "first_date": rows.loc[members[0], "date"], "predictions": len(members), "scored": n, "hits": hits,
                "hit_rate": hits / n if n else np.nan, "brier": sum(squares) / n if n else np.nan,
                "mean_predicted": sum(ps) / n if n else np.nan, "observed_frequency": sum(ys) / n if n else np.nan,
                "sufficient": n >= MIN_SCORED,
            })
            for b in sorted(bins):
                pairs = bins[b]
                calibration_rows.append({
                    "horizon": h, "scope": kind, "model_version": version, "bin": b, "count": len(pairs),
                    "mean_predicted": sum(p for p, _ in pairs) / len(pairs),
                    "observed_frequency": sum(y for _, y in pairs) / len(pairs),
                })
    return accuracy_rows, calibration_rows


def assert_like(frame: pd.DataFrame, rows: list[dict]):
    assert len(frame) == len(rows)
    for got, want in zip(frame.to_dict("records"), rows):
        for name, value in want.items():
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-15, nan_ok=True), name
            else:
                assert got[name] == value, name


@pytest.mark.parametrize("seed, freq", [(0, "B"), (7, "D")])
def test_equals_the_per_prediction_reference(seed, freq):
    signals = ml_signals(ml_predictions(days=80, seed=seed, freq=freq), threshold=0.6)
    days = sorted(set(signals["date"].dt.date))
    chosen = [days[0], days[5], days[9], days[30], days[61], days[-1], days[-1] + pd.Timedelta(days=3)]
    result = accuracy(signals, as_of=chosen)
    assert list(result) == sorted(chosen)
    for day in chosen:
        ML_ACCURACY.validate(result[day]["ml_accuracy"])
        ML_CALIBRATION.validate(result[day]["ml_calibration"])
        want_accuracy, want_calibration = reference(signals, day)
        assert_like(result[day]["ml_accuracy"], want_accuracy)
        assert_like(result[day]["ml_calibration"], want_calibration)
    final = result[days[-1]]["ml_accuracy"]
    assert len(set(final["model_version"])) > 4  # versions change, and a rollback scores under its own name
    assert (final["scope"] == "all").sum() == 2


def test_hand_computed():
    dates = pd.date_range("2025-03-03", periods=6, freq="B")
    signals = pd.DataFrame({
        "date": dates, "horizon": 1, "model_version": ["", "a", "a", "b", "b", "b"],
        "probability_up": [np.nan, 0.9, 0.3, 0.5, 0.65, 0.2],
        "price": [10.0, 11.0, 12.0, 12.0, 11.0, 13.0],
    })
    # outcomes (h = 1): 11 > 10 (row 0, no p), 12 > 11 up, 12 = 12 not up, 11 < 12 not up, 13 > 11 up, row 5 unknown
    tables = accuracy(signals, as_of=[dates[-1].date()])[dates[-1].date()]
    a = tables["ml_accuracy"].set_index(["scope", "model_version"])
    assert a.loc[("version", "a"), ["scored", "hits"]].tolist() == [2, 2]  # 0.9 up: hit; 0.3 flat: hit
    assert a.loc[("version", "a"), "brier"] == pytest.approx((0.1 ** 2 + 0.3 ** 2) / 2)
    assert a.loc[("version", "b"), ["predictions", "scored", "hits"]].tolist() == [3, 2, 1]  # 0.5: a miss
    assert a.loc[("version", "b"), "brier"] == pytest.approx((0.25 + 0.35 ** 2) / 2)
    assert a.loc[("all", ""), ["predictions", "scored", "hits"]].tolist() == [5, 4, 3]
    assert a.loc[("all", ""), "observed_frequency"] == pytest.approx(0.5)
    c = tables["ml_calibration"]
    assert c[c["scope"] == "all"][["bin", "count"]].values.tolist() == [[3, 1], [5, 1], [6, 1], [9, 1]]
    first = accuracy(signals, as_of=[dates[0].date()])[dates[0].date()]
    assert first["ml_accuracy"].empty and first["ml_calibration"].empty  # no model yet: no rows


@pytest.mark.parametrize("cut", [15, 44, 70])
def test_rewriting_after_a_date_changes_nothing_on_or_before_it(cut):
    predictions = ml_predictions(days=80, seed=11)
    dates = sorted(set(predictions["date"]))
    later = predictions["date"] > dates[cut]
    rewritten = predictions.copy()
    rewritten.loc[later, "price"] = rewritten.loc[later, "price"][::-1].to_numpy()
    rewritten.loc[later, "probability_up"] = 1 - rewritten.loc[later, "probability_up"]
    rewritten.loc[later, "model_version"] = "later"
    rewritten["confidence"] = (rewritten["probability_up"] - 0.5).abs() * 2
    days = [d.date() for d in dates[: cut + 1]]
    before = accuracy(ml_signals(predictions, threshold=0.6), as_of=days)
    after = accuracy(ml_signals(rewritten, threshold=0.6), as_of=days)
    for day in days:
        for name in ("ml_accuracy", "ml_calibration"):
            pdt.assert_frame_equal(before[day][name], after[day][name], check_exact=True)


def test_any_grouping_of_dates_gives_the_same_tables():
    signals = ml_signals(ml_predictions(days=60, seed=12), threshold=0.6)
    days = sorted(set(signals["date"].dt.date))
    together = accuracy(signals, as_of=days)
    for chunk in (days[:7], days[20:21], days[40:]):
        alone = accuracy(signals, as_of=chunk)
        for day in chunk:
            for name in ("ml_accuracy", "ml_calibration"):
                pdt.assert_frame_equal(together[day][name], alone[day][name], check_exact=True)


def test_no_predictions_and_bad_input():
    empty = ml_signals(ml_predictions(days=30).iloc[:0], threshold=0.6)
    day = pd.Timestamp("2025-01-01").date()
    tables = accuracy(empty, as_of=[day])[day]
    assert tables["ml_accuracy"].empty and list(tables["ml_accuracy"].columns) == list(ML_ACCURACY.columns)
    assert accuracy(empty, as_of=[]) == {}
    with pytest.raises(ValueError, match="probability_up"):
        accuracy(pd.DataFrame({"date": [], "horizon": []}), as_of=[day])
