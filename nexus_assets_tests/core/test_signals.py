"""Pairwise-slope signals: hand-computed vectors, missing forecasts, variants, point in time."""

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.signals import (
    SIGNAL_COLUMNS,
    SLOPE_COLUMNS,
    daily_signals,
    format_horizons,
    parse_horizons,
    slope_signal,
    strength_tier,
)


def test_hand_computed_day():
    # forecasts 100, 102, 101, 105 at horizons 1, 3, 5, 8
    fields, slopes = slope_signal(pd.Series({1: 100.0, 3: 102.0, 5: 101.0, 8: 105.0}), threshold=0.1)
    # pairs: (1,3)+2 (1,5)+1 (1,8)+5 (3,5)-1 (3,8)+3 (5,8)+4 -> 5 bullish, 1 bearish of 6
    assert fields["pairs"] == 6 and fields["bullish"] == 5 and fields["bearish"] == 1
    assert fields["net_prob"] == pytest.approx(4 / 6)
    assert fields["bullish_prob"] == pytest.approx(5 / 6) and fields["bearish_prob"] == pytest.approx(1 / 6)
    assert fields["mean_drift"] == pytest.approx((2 + 1 + 5 - 1 + 3 + 4) / 6)
    assert fields["agreement_ratio"] == pytest.approx(5 / 6)
    assert fields["strength"] == pytest.approx(4 / 6) and fields["tier"] == "moderate"
    assert fields["signal"] == "BULLISH" and fields["position"] == 1
    # weights h_j - h_i: 2, 4, 7, 2, 5, 3 ; signs + + + - + +
    assert fields["weighted_net_prob"] == pytest.approx((2 + 4 + 7 - 2 + 5 + 3) / (2 + 4 + 7 + 2 + 5 + 3))
    assert [(s["horizon_short"], s["horizon_long"], s["slope"], s["weight"]) for s in slopes][:2] == [
        (1, 3, 2.0, 2), (1, 5, 1.0, 4)]
    assert fields["horizons"] == "1,3,5,8" and fields["n_horizons"] == 4


def test_only_pairs_where_both_forecasts_exist():
    # Nexus v2 would forward-fill then fill 0: a missing horizon 3 would give slope (0 - 100) < 0
    fields, slopes = slope_signal(pd.Series({1: 100.0, 3: np.nan, 5: 99.0}), threshold=0.0)
    assert fields["pairs"] == 1 and fields["bearish"] == 1 and fields["net_prob"] == -1.0
    assert fields["signal"] == "BEARISH" and fields["horizons"] == "1,5"
    none, slopes = slope_signal(pd.Series({1: 100.0, 3: np.nan}), threshold=0.0)
    assert none["pairs"] == 0 and none["net_prob"] == 0.0 and none["signal"] == "NEUTRAL" and slopes == []
    assert np.isnan(none["mean_drift"]) and none["tier"] == "none"


@pytest.mark.parametrize("net,threshold,label", [(0.1, 0.1, "NEUTRAL"), (0.1000001, 0.1, "BULLISH"),
                                                 (-0.1, 0.1, "NEUTRAL"), (-0.2, 0.1, "BEARISH"), (0.0, 0.0, "NEUTRAL")])
def test_threshold_is_strict(net, threshold, label):
    # two horizons and an exact net_prob are hard to build; a flat pair gives net 0, one pair +-1
    from nexus_assets.core.signals import LABELS, _label

    assert LABELS[_label(net, threshold)] == label


def test_tiers_and_horizon_text():
    assert [strength_tier(x) for x in (0.0, 0.2, 0.4, 0.69, 0.7, 1.0)] == [
        "none", "weak", "moderate", "moderate", "strong", "strong"]
    assert format_horizons([8, 1, 3]) == "1,3,8" and parse_horizons("1,3,8") == (1, 3, 8) and parse_horizons("") == ()


def ensembles(days=6, horizons=(1, 3, 5, 8), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        date = pd.Timestamp(dt.date(2024, 1, 1) + dt.timedelta(days=d))
        for h in horizons:
            base = 100 + rng.normal()
            rows.append({"date": date, "horizon": h, "price": 100.0 + d, "forecast": base + h * rng.normal(),
                         "raw_mean": base + rng.normal(), "raw_median": base, "low_variance": base - h})
    return pd.DataFrame(rows)


def reference_signal(values, threshold):
    """Straight from the definition (docs/signals.md), on a dict horizon -> forecast."""
    hs = sorted(h for h, v in values.items() if not np.isnan(v))
    slopes = [values[b] - values[a] for a, b in itertools.combinations(hs, 2)]
    bull, bear = sum(s > 0 for s in slopes), sum(s < 0 for s in slopes)
    net = (bull - bear) / len(slopes) if slopes else 0.0
    return net, "BULLISH" if net > threshold else "BEARISH" if net < -threshold else "NEUTRAL"


def test_daily_signals_variants_and_reference():
    frame = ensembles()
    day2, day4 = frame["date"].unique()[2], frame["date"].unique()[4]
    winners = pd.DataFrame([
        {"date": day2, "horizons": "1,5,8", "threshold": 0.3, "combination": "low_variance", "deflated_sharpe": 0.97},
        {"date": day4, "horizons": "1,3", "threshold": 0.0, "combination": "mean", "deflated_sharpe": 0.40},
    ])
    tables = daily_signals(frame, threshold=0.1, winners=winners)
    signals, slopes = tables["signals"], tables["slopes"]
    assert list(signals.columns) == list(SIGNAL_COLUMNS) and list(slopes.columns) == list(SLOPE_COLUMNS)
    assert len(signals) == 12 and list(signals["variant"][:2]) == ["raw", "optimised"]
    for row in signals.itertuples():
        day = frame[frame["date"] == row.date].set_index("horizon")
        if row.variant == "optimised" and row.date == day2:  # significant: followed
            values = day["low_variance"][[1, 5, 8]].to_dict()
            assert (row.config_source, row.threshold, row.combination) == ("search", 0.3, "low_variance")
            assert row.deflated_sharpe == 0.97
        elif row.variant == "optimised" and row.date == day4:  # below the bar: the raw configuration
            values = day["forecast"].to_dict()
            assert (row.config_source, row.combination, row.deflated_sharpe) == ("not_significant", "ensemble", 0.40)
        else:
            values = day["forecast"].to_dict()
            assert row.config_source == ("catalog" if row.variant == "raw" else "fallback")
            assert np.isnan(row.deflated_sharpe)
        net, label = reference_signal(values, row.threshold)
        assert row.net_prob == net and row.signal == label and row.price == day["price"].iloc[0]
    counts = slopes.groupby(["date", "variant"]).size()
    pairs = signals.set_index(["date", "variant"])["pairs"]
    assert counts.reindex(pairs.index, fill_value=0).tolist() == pairs.tolist()
    # the bar is the catalog's; 0 turns it off, and a leaderboard without the figure never passes a bar
    off = daily_signals(frame, threshold=0.1, winners=winners, min_deflated_sharpe=0.0)["signals"]
    assert set(off.loc[off["variant"] == "optimised", "config_source"]) == {"search", "fallback"}
    bare = daily_signals(frame, threshold=0.1, winners=winners.drop(columns="deflated_sharpe"))["signals"]
    assert set(bare.loc[bare["variant"] == "optimised", "config_source"]) == {"not_significant", "fallback"}
    with pytest.raises(ValueError, match="min_deflated_sharpe"):
        daily_signals(frame, threshold=0.1, min_deflated_sharpe=1.5)


def test_each_date_reads_only_its_own_rows():
    frame = ensembles(days=5)
    full = daily_signals(frame, threshold=0.1)
    later = frame.copy()
    later.loc[later["date"] > later["date"].unique()[2], ["forecast", "price"]] *= -3
    changed = daily_signals(later, threshold=0.1)
    cut = frame["date"].unique()[2]
    for name in ("signals", "slopes"):
        a, b = full[name], changed[name]
        pd.testing.assert_frame_equal(a[a["date"] <= cut].reset_index(drop=True), b[b["date"] <= cut].reset_index(drop=True))


def test_bad_input():
    with pytest.raises(ValueError, match="raw_mean"):
        daily_signals(ensembles().drop(columns="raw_mean"), threshold=0.1)
    with pytest.raises(ValueError, match="threshold"):
        daily_signals(ensembles(), threshold=1.5)
    bad = pd.DataFrame([{"date": pd.Timestamp("2024-01-01"), "horizons": "1,3", "threshold": 0.1, "combination": "x"}])
    with pytest.raises(ValueError, match="combination"):
        daily_signals(ensembles(), threshold=0.1, winners=bad)
    empty = daily_signals(ensembles().iloc[0:0], threshold=0.1)
    assert empty["signals"].empty and list(empty["signals"].columns) == list(SIGNAL_COLUMNS)
