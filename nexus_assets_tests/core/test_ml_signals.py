"""The ML signal (docs/ml-signals.md): the strategy against a per-row reference, its reasons, its
refusals, and its record in ``metrics``: simulated exactly like a slope signal, leaving the slope
signals' rows untouched, point in time."""

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from nexus_assets.core.contract import ML_SIGNALS
from nexus_assets.core.metrics import RECORD_INPUT_COLUMNS, record, record_signals
from nexus_assets.core.ml_signals import ml_signals, ml_variant, record_rows, unpriced_session_rows, variant_horizon
from nexus_assets_tests.core.ml_data import ml_predictions
from nexus_assets_tests.core.test_metrics import seeded_signals

THRESHOLD = 0.6


def reference_signal(p: float, confidence: float, version: str, threshold: float) -> tuple[str, int, str]:
    """The strategy of one row, written the obvious way."""
    if version == "":
        return "HOLD", 0, "no_model"
    if p != p:
        return "HOLD", 0, "no_probability"
    acts = confidence >= threshold - 1.1920929e-07  # one float32 epsilon: what models answer in
    if acts and p > 0.5:
        return "BUY", 1, "confident_up"
    if acts and p < 0.5:
        return "SELL", -1, "confident_down"
    if p == 0.5:
        return "HOLD", 0, "no_direction"
    return "HOLD", 0, "below_threshold"


@pytest.mark.parametrize("threshold", [0.0, 0.3, THRESHOLD, 1.0])
def test_strategy_equals_the_per_row_reference(threshold):
    predictions = ml_predictions(seed=1)
    got = ml_signals(predictions, threshold=threshold)
    ML_SIGNALS.validate(got)
    want = [reference_signal(r.probability_up, r.confidence, r.model_version, threshold)
            for r in predictions.itertuples(index=False)]
    assert list(zip(got["signal"], got["position"], got["reason"])) == want
    assert (got["variant"] == [ml_variant(h) for h in got["horizon"]]).all()
    assert (got["horizons"] == got["horizon"].astype(str)).all()
    np.testing.assert_array_equal(got["net_prob"], 2 * predictions["probability_up"] - 1)
    if threshold == THRESHOLD:  # the seeded data reaches every outcome
        assert set(got["reason"]) == {"no_model", "no_probability", "confident_up", "confident_down",
                                      "no_direction", "below_threshold"}
        edge = got[got["probability_up"] == 0.8]  # confidence 0.6000000000000001 >= 0.6
        assert len(edge) and (edge["signal"] == "BUY").all()


def test_variant_names_round_trip():
    assert variant_horizon(ml_variant(21)) == 21
    assert variant_horizon("raw") is None and variant_horizon("ml_hx") is None and variant_horizon("ml_h5b") is None


@pytest.mark.parametrize("change, message", [
    (lambda f: f.assign(probability_up=f["probability_up"] * 2), "outside"),
    (lambda f: f.assign(confidence=f["confidence"] * 0.5), r"\|probability_up - 0.5\| x 2"),
    (lambda f: f.assign(confidence=f["confidence"].fillna(0.0)), "NaN exactly"),
    (lambda f: pd.concat([f, f.iloc[[30]]]), "more than one row"),
    (lambda f: f.drop(columns="price"), r"\['price'\]"),
])
def test_refuses_predictions_it_would_misread(change, message):
    with pytest.raises(ValueError, match=message):
        ml_signals(change(ml_predictions(seed=2)), threshold=THRESHOLD)


def test_refuses_a_bad_threshold():
    for bad in (-0.1, 1.5, True, "0.6"):
        with pytest.raises(ValueError, match="ml_signal_threshold"):
            ml_signals(ml_predictions(days=30), threshold=bad)


def relabelled(tables: dict, old: str, new: str) -> dict:
    out = {}
    for name, frame in tables.items():
        part = frame[frame["signal"] == old].reset_index(drop=True)
        part["signal"] = part["signal"].replace({old: new})
        out[name] = part
    return out


def test_record_simulates_the_ml_signal_exactly_like_a_slope_signal():
    """An ML signal's rows passed as variant ``ml_h5`` give the same figures, trades and daily rows as
    the very same rows passed as the raw slope signal (the simulation, costs and statistics are shared)."""
    signals = ml_signals(ml_predictions(seed=3), threshold=0.3)
    h5 = signals[signals["horizon"] == 5]
    days = sorted(set(h5["date"].dt.date))[::7]
    as_ml = record(h5, as_of=days, calendar="exchange", cost_bps=5.0, horizons=[1, 5])
    as_raw = record(h5.assign(variant="raw"), as_of=days, calendar="exchange", cost_bps=5.0, horizons=[1, 5])
    for day in days:
        want = relabelled(as_raw[day], "raw", "ml_h5")
        for name in ("statistics", "trades", "daily"):
            pdt.assert_frame_equal(as_ml[day][name], want[name], check_exact=True)
    assert (as_ml[days[-1]]["statistics"]["n"] > 0).any()


def test_slope_rows_are_unchanged_when_ml_rows_join_the_record():
    slopes = seeded_signals(days=60, seed=4)
    ml = ml_signals(ml_predictions(days=60, seed=4), threshold=0.3)
    both = pd.concat([slopes, ml[list(slopes.columns.intersection(ml.columns))]], ignore_index=True)
    days = sorted(set(slopes["date"].dt.date))[::5]
    alone = record(slopes, as_of=days, calendar="exchange", cost_bps=3.0, horizons=[1, 2, 4])
    joined = record(both, as_of=days, calendar="exchange", cost_bps=3.0, horizons=[1, 2, 4])
    for day in days:
        for name in ("statistics", "trades", "daily"):
            frame = joined[day][name]
            slope_rows = frame[frame["signal"].isin(["raw", "optimised"])].reset_index(drop=True)
            pdt.assert_frame_equal(slope_rows, alone[day][name], check_exact=True)
            order = list(dict.fromkeys(frame["signal"]))
            assert order == [s for s in ("raw", "optimised", "ml_h1", "ml_h5") if s in order]
    assert record_signals(both["variant"]) == ["raw", "optimised", "ml_h1", "ml_h5"]


@pytest.mark.parametrize("cut", [12, 40, 71])
def test_rewriting_after_a_date_changes_nothing_on_or_before_it(cut):
    predictions = ml_predictions(seed=5)
    dates = sorted(set(predictions["date"]))
    day = dates[cut].date()
    later = predictions["date"] > dates[cut]
    rewritten = predictions.copy()
    rng = np.random.default_rng(cut)
    rewritten.loc[later, "price"] = rewritten.loc[later, "price"] * rng.uniform(0.5, 1.5, later.sum())
    rewritten.loc[later, "probability_up"] = 1 - rewritten.loc[later, "probability_up"]
    rewritten.loc[later, "model_version"] = "tampered"
    rewritten["confidence"] = (rewritten["probability_up"] - 0.5).abs() * 2
    before, after = ml_signals(predictions, threshold=0.3), ml_signals(rewritten, threshold=0.3)
    kept = before["date"] <= dates[cut]
    pdt.assert_frame_equal(before[kept], after[after["date"] <= dates[cut]])
    a = record(before, as_of=[day], calendar="exchange", cost_bps=5.0, horizons=[1, 5])[day]
    b = record(after, as_of=[day], calendar="exchange", cost_bps=5.0, horizons=[1, 5])[day]
    for name in a:
        pdt.assert_frame_equal(a[name], b[name], check_exact=True)


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_the_record_starts_on_each_horizons_first_prediction(seed):
    """Before any model serves the ML signal only holds by default: those days are not in its record
    (as the slope signals have no rows before the ensemble's warm-up), so its span and buy and hold
    start with its first prediction. Each horizon starts on its own; later gaps stay in."""
    predictions = ml_predictions(seed=seed)
    rng = np.random.default_rng(seed)
    late = predictions["horizon"] == 5
    first_h5 = int(rng.integers(9, 30))  # h5's first model serves later than h1's
    dates = sorted(set(predictions["date"]))
    early = late & (predictions["date"] < dates[first_h5])
    predictions.loc[early, ["model_version", "model_sha256"]] = ""
    predictions.loc[early, ["probability_up", "confidence"]] = np.nan
    signals = ml_signals(predictions, threshold=0.3).sample(frac=1.0, random_state=seed)  # any row order

    kept = record_rows(signals)
    reference = []  # the obvious way: per variant, walk the dates and start at the first probability
    for _, rows in signals.groupby("variant"):
        started = False
        for index, row in rows.sort_values("date").iterrows():
            started = started or row["probability_up"] == row["probability_up"]
            if started:
                reference.append(index)
    assert sorted(kept.index) == sorted(reference)
    assert kept.groupby("variant")["date"].min().to_dict() == {"ml_h1": dates[8], "ml_h5": dates[first_h5]}
    assert (kept["reason"] == "no_probability").any()  # a later gap without a probability stays in the record
    assert record_rows(signals[signals["reason"] == "no_model"]).empty

    day = dates[-1].date()
    tables = record(kept, as_of=[day], calendar="exchange", cost_bps=5.0, horizons=[1, 5])[day]
    stats = tables["statistics"].set_index(["signal", "basis", "statistic"])["value"]
    prices = predictions.drop_duplicates("date").set_index("date")["price"]
    for variant, first in (("ml_h1", dates[8]), ("ml_h5", dates[first_h5])):
        assert stats[(variant, "point_in_time", "buy_and_hold_return")] == pytest.approx(prices.iloc[-1] / prices[first] - 1)
    daily = tables["daily"]
    assert daily[daily["signal"] == "ml_h5"]["date"].min() == dates[first_h5]


@pytest.mark.parametrize("seed", [9, 10])
def test_unpriced_sessions_join_the_ml_record_as_the_slope_signals_show_them(seed):
    """Sessions whose price is not yet known have slope-signal rows (price null) but no ML row (the
    ML steps predict from a known close): the ML record gains them with the held position, so its
    daily table shows them as the slope signals' does, and no figure moves."""
    predictions = ml_predictions(seed=seed)
    dates = np.array(sorted(set(predictions["date"])), dtype="datetime64[ns]")
    rng = np.random.default_rng(seed)
    unpriced = np.sort(rng.choice(dates[3:], 6, replace=False))  # some before h's first prediction (day 8)
    signals = record_rows(ml_signals(predictions[~predictions["date"].isin(unpriced)], threshold=0.3))
    extra = unpriced_session_rows(signals, unpriced)
    assert list(extra.columns) == list(RECORD_INPUT_COLUMNS)
    want = []  # the obvious way: per variant, each unpriced date after its first row, the last position before it
    for variant, rows in signals.groupby("variant"):
        rows = rows.sort_values("date")
        for day in unpriced:
            if day > rows["date"].iloc[0]:
                before = rows[rows["date"] < day]
                want.append((day, variant, int(before["position"].iloc[-1])))
    got = sorted(zip(extra["date"].to_numpy("datetime64[ns]"), extra["variant"], extra["position"].astype(int)))
    assert got == sorted(want) and extra["price"].isna().all() and extra["net_prob"].isna().all()

    day = pd.Timestamp(dates[-1]).date()
    plain = record(signals, as_of=[day], calendar="exchange", cost_bps=5.0, horizons=[1, 5])[day]
    joined = record(pd.concat([signals[list(RECORD_INPUT_COLUMNS)], extra], ignore_index=True), as_of=[day],
                    calendar="exchange", cost_bps=5.0, horizons=[1, 5])[day]
    pdt.assert_frame_equal(joined["statistics"], plain["statistics"], check_exact=True)
    daily = joined["daily"]
    shown = sorted(zip(daily.loc[~daily["price_known"], "date"], daily.loc[~daily["price_known"], "signal"]))
    assert shown == sorted((pd.Timestamp(d), v) for d, v, _ in want)
    assert unpriced_session_rows(signals, unpriced[:0]).empty


def test_float32_probabilities_act_the_same_on_both_sides_of_the_threshold():
    """0.2 and 0.8 are one confidence, 0.6; in float32 (what models answer in) they round to 0.59999999
    and 0.60000002: both act at a 0.6 threshold, as they do in float64. Just under it, neither does."""
    p = np.array([np.float32(0.2), np.float32(0.8), 0.2, 0.8, 0.2 + 1e-6, 0.8 - 1e-6], dtype=np.float64)
    day = pd.Timestamp("2025-01-06")
    predictions = pd.DataFrame({"date": [day + pd.Timedelta(days=i) for i in range(len(p))], "horizon": 1,
                                "model_version": "v", "model_sha256": "s", "probability_up": p,
                                "confidence": np.abs(p - 0.5) * 2, "price": 10.0})
    signals = ml_signals(predictions, threshold=0.6)
    assert signals["signal"].tolist() == ["SELL", "BUY", "SELL", "BUY", "HOLD", "HOLD"]
