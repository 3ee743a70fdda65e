"""Metrics as of each date (docs/metrics.md): hand-computed vectors, empyrical, the legacy figures,
the old pipeline's flaws, point in time, and the one-pass fast path against the slow reference."""

import datetime as dt
import math

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_assets.core import metrics
from nexus_assets.core.metrics import (
    DAILY_COLUMNS,
    STATISTICS_COLUMNS,
    TRADES_COLUMNS,
    days_by_horizon_set,
    record,
    statistic_names,
)
from nexus_assets_tests.core import reference_metrics as reference

START = "2025-01-01"
NUMBERS = {"statistics": ["value"],
           "trades": ["entry_price", "exit_price", "gross_return", "cost", "net_return"],
           "daily": ["price", "net_prob", "asset_return", "strategy_return", "cost", "equity", "drawdown",
                     "buy_and_hold"]}

# Daily strategy returns of the hand-computed return statistics: always long, no cost, so r_0 = 0
HAND = [0.0, 0.02, -0.01, -0.02, 0.03]
HAND_MEAN = 0.004  # 0.02 / 5
HAND_SAMPLE_VAR = 430e-6  # (16 + 256 + 196 + 576 + 676)e-6 / (5 - 1)
HAND_DOWNSIDE = 0.01  # sqrt((0.01**2 + 0.02**2) / 5), over all 5 returns
HAND_DRAWDOWN = 0.99 * 0.98 - 1  # from the peak 1.02 down to 1.02 * 0.99 * 0.98: -0.0298
HAND_TOTAL = 1.02 * 0.99 * 0.98 * 1.03 - 1  # 0.01929212


def signals_table(price, position, *, horizons="1,3,5", variant="raw", start=START, freq="D", net_prob=None):
    """A minimal stored signals table (the columns record reads) for one variant."""
    n = len(price)
    return pd.DataFrame({
        "date": pd.date_range(start, periods=n, freq=freq),
        "variant": variant,
        "horizons": horizons if isinstance(horizons, str) else list(horizons),
        "net_prob": np.sign(position) * 0.5 if net_prob is None else net_prob,
        "position": position,
        "price": price,
    })


def seeded_signals(days=45, seed=0, freq="B"):
    """Both variants; the optimised one starts 4 rows later and changes its horizons (so h_min) over time."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=days, freq=freq)
    price = 80 * np.exp(np.cumsum(rng.normal(0, 0.025, days)))
    frames = []
    for variant, horizons in (("raw", ["1,2,4"] * days), ("optimised", rng.choice(["2,4", "1,4", "3,5"], days))):
        net = pd.Series(np.where(rng.random(days) < 0.6, np.nan, rng.choice(np.linspace(-1, 1, 7), days)))
        net = net.ffill().fillna(0.0).to_numpy()
        frame = pd.DataFrame({"date": dates, "variant": variant, "horizons": horizons, "net_prob": net,
                              "position": np.where(net > 0.2, 1, np.where(net < -0.2, -1, 0)), "price": price,
                              "threshold": 0.2})  # an extra column, as the stored table has many
        frames.append(frame.iloc[4:] if variant == "optimised" else frame)
    return pd.concat(frames, ignore_index=True)


def statistic(tables, name, *, signal="raw", basis="point_in_time"):
    rows = tables["statistics"]
    row = rows[(rows["signal"] == signal) & (rows["basis"] == basis) & (rows["statistic"] == name)]
    assert len(row) == 1, name
    return row.iloc[0]


def last(result):
    return result[max(result)]


def hand_tables(returns=HAND, calendar="exchange"):
    price = 100 * np.cumprod(1 + np.array(returns))  # r_0 = 0: the first price is the start
    return last(record(signals_table(price, [1] * len(price)), calendar=calendar, cost_bps=0, horizons=[1]))


# ---------------------------------------------------------------------------------------------
# hand-computed vectors


def test_return_statistics_hand_computed():
    tables = hand_tables()
    expected = {
        "total_return": HAND_TOTAL,
        "annual_return": (1 + HAND_TOTAL) ** (252 / 5) - 1,
        "annual_volatility": math.sqrt(HAND_SAMPLE_VAR) * math.sqrt(252),
        "sharpe_ratio": HAND_MEAN / math.sqrt(HAND_SAMPLE_VAR) * math.sqrt(252),
        "sortino_ratio": HAND_MEAN * 252 / (HAND_DOWNSIDE * math.sqrt(252)),
        "max_drawdown": HAND_DRAWDOWN,
        "calmar_ratio": ((1 + HAND_TOTAL) ** (252 / 5) - 1) / -HAND_DRAWDOWN,
        "value_at_risk": -0.02 + 0.2 * 0.01,  # sorted r, position (5 - 1) * 0.05 = 0.2, linear
        "conditional_value_at_risk": -0.02,  # mean of the int(4 * 0.05) + 1 = 1 lowest
        "exposure": 1.0,
        "buy_and_hold_return": HAND_TOTAL,
    }
    for name, value in expected.items():
        row = statistic(tables, name)
        assert row["value"] == pytest.approx(value, rel=1e-9), name
        assert row["n"] == 5
    assert statistic(tables, "sharpe_ratio")["value"] == pytest.approx(3.0621, abs=1e-4)
    assert statistic(tables, "sortino_ratio")["value"] == pytest.approx(6.3498, abs=1e-4)
    assert not statistic(tables, "sharpe_ratio")["sufficient"]  # 5 < 60 returns
    assert statistic(tables, "total_return")["sufficient"]  # exact for any sample
    crypto = hand_tables(calendar="crypto")
    expected_crypto = HAND_MEAN / math.sqrt(HAND_SAMPLE_VAR) * math.sqrt(365)
    assert statistic(crypto, "sharpe_ratio")["value"] == pytest.approx(expected_crypto)


def test_undefined_ratios_are_nan():
    rising = hand_tables(returns=[0.0, 0.01, 0.02, 0.01])  # no loss: no downside, no drawdown
    for name in ("sortino_ratio", "calmar_ratio"):
        assert np.isnan(statistic(rising, name)["value"]), name
    assert statistic(rising, "max_drawdown")["value"] == 0.0
    flat = last(record(signals_table([10.0] * 5, [0] * 5), calendar="crypto", cost_bps=5, horizons=[1]))
    for name in ("sharpe_ratio", "sortino_ratio", "calmar_ratio", "win_rate", "profit_factor", "expectancy",
                 "directional_accuracy_1"):
        assert np.isnan(statistic(flat, name)["value"]), name
    assert statistic(flat, "total_return")["value"] == 0.0 and statistic(flat, "exposure")["value"] == 0.0
    assert statistic(flat, "trades")["value"] == 0 and flat["trades"].empty


def test_trade_statistics_and_accuracy_hand_computed():
    price = [100.0, 110.0, 121.0, 110.0, 100.0, 100.0, 90.0, 99.0, 120.0]
    position = [1, 1, -1, -1, 0, 1, 1, -1, -1]
    signals = signals_table(price, position, horizons="2,5")
    tables = last(record(signals, calendar="crypto", cost_bps=10, horizons=[2, 5]))
    c = 0.001
    net = [0.21 - 2 * c, 21 / 121 - 2 * c, -0.01 - 2 * c]  # long 100->121, short 121->100, long 100->99
    expected = {
        "trades": 3,
        "win_rate": 2 / 3,
        "average_win": (net[0] + net[1]) / 2,
        "average_loss": net[2],
        "profit_factor": (net[0] + net[1]) / -net[2],
        "expectancy": sum(net) / 3,
        "best_trade": net[0],
        "worst_trade": net[2],
        "average_holding_days": 2.0,
        "average_holding_observations": 2.0,
        "exposure": 8 / 9,
        "buy_and_hold_return": 0.2,
        # k = 1: hits at rows 0, 1, 2, 3, 6 of the 7 signals with a next price (row 4 is neutral)
        "directional_accuracy_1": 5 / 7,
        # k = 2: rows 0, 2, 3, 6 hit; row 1 (110 -> 110) is a zero move, a miss; row 5 misses
        "directional_accuracy_2": 4 / 6,
        # k = 5: only rows 0..3 have a price 5 rows later; row 0 (100 -> 100) is a zero move
        "directional_accuracy_5": 1 / 4,
    }
    for name, value in expected.items():
        assert statistic(tables, name)["value"] == pytest.approx(value, rel=1e-12), name
    assert statistic(tables, "directional_accuracy_5")["n"] == 4 and statistic(tables, "win_rate")["n"] == 3
    daily = [-c, 0.1, (121 / 110 - 1) - 2 * c, -(110 / 121 - 1), -(100 / 110 - 1) - c, -c, -0.1, (99 / 90 - 1) - 2 * c,
             -(120 / 99 - 1)]
    assert statistic(tables, "total_return")["value"] == pytest.approx(np.prod(1 + np.array(daily)) - 1, rel=1e-12)
    pit = tables["trades"][tables["trades"]["basis"] == "point_in_time"]
    assert pit["status"].tolist() == ["closed", "closed", "closed", "open"]
    assert pit["net_return"].iloc[-1] == pytest.approx(-(120 / 99 - 1) - c)  # the open short, marked on D

    # legacy, h_min = 2: legacy prices are price[i + 2]; rows 0..6 are realised by the last date
    legacy = tables["trades"][tables["trades"]["basis"] == "legacy"]
    assert legacy["entry_price"].tolist() == [121.0, 100.0, 99.0]  # rows 0, 2, 5
    assert legacy["exit_price"].tolist() == [100.0, 90.0, 120.0]
    assert legacy["status"].tolist() == ["closed", "closed", "open"] and (legacy["cost"] == 0).all()
    assert legacy["entry_date"].dt.day.tolist() == [1, 3, 6]  # the signal dates
    np.testing.assert_allclose(legacy["net_return"], [100 / 121 - 1, 0.1, 120 / 99 - 1])
    assert statistic(tables, "trades", basis="legacy")["value"] == 2
    for name in ("total_return", "sharpe_ratio", "max_drawdown", "win_rate"):  # fewer than 3 trades: no metrics
        row = statistic(tables, name, basis="legacy")
        assert np.isnan(row["value"]) and not row["sufficient"] and row["min_n"] == 3
    # legacy accuracy, row i vs row i + 1 of the legacy price: rows 3 and 5 hit, row 2 (100 -> 100) misses
    assert statistic(tables, "directional_accuracy_1", basis="legacy")["value"] == pytest.approx(2 / 5)


def test_legacy_figures_hand_computed():
    """h_min = 1: four one-day legacy trades returning +10 %, -5 %, +20 %, -10 %."""
    price = [100.0, 100.0, 110.0, 100.0, 105.0, 100.0, 120.0, 100.0, 110.0]
    position = [1, 0, -1, 0, 1, 0, -1, 0, 0]
    signals = signals_table(price, position, horizons="1,4")
    tables = last(record(signals, calendar="crypto", cost_bps=30, horizons=[1, 4]))
    x = [0.10, -0.05, 0.20, -0.10]
    mean = 0.0375
    sample_std = math.sqrt((0.0625**2 + 0.0875**2 + 0.1625**2 + 0.1375**2) / 3)
    expected = {
        "trades": 4,
        "total_return": 0.15,  # Nexus v2: 15 (sum of trade %)
        "win_rate": 0.5,
        "average_win": 0.15,
        "average_loss": -0.075,
        "profit_factor": 2.0,
        "sharpe_ratio": mean / sample_std * math.sqrt(252 / 1),  # one calendar day per trade; 252 even for crypto
        "max_drawdown": 1.1 * 0.95 * 1.2 * 0.9 / (1.1 * 0.95 * 1.2) - 1,  # compounded: -0.10
        "best_trade": 0.20,
        "worst_trade": -0.10,
        "average_holding_days": 1.0,
        "directional_accuracy_1": 0.5,  # legacy rows 0 and 4 hit, 2 and 6 miss
    }
    for name, value in expected.items():
        row = statistic(tables, name, basis="legacy")
        assert row["value"] == pytest.approx(value, rel=1e-12), name
        assert row["sufficient"] == (name != "directional_accuracy_1")
    closed = tables["trades"].query("basis == 'legacy' and status == 'closed'")
    np.testing.assert_allclose(closed["net_return"], x, rtol=1e-12)
    assert statistic(tables, "sharpe_ratio", basis="legacy")["value"] == pytest.approx(4.3235, abs=1e-4)


def test_legacy_uses_only_legacy_prices_realised_by_the_date():
    price = [100.0, 110.0, 121.0, 110.0, 100.0, 100.0, 90.0, 99.0, 120.0]
    position = [1, 1, -1, -1, 0, 1, 1, -1, -1]
    result = record(signals_table(price, position, horizons="2,5"), calendar="crypto", cost_bps=10, horizons=[2])
    days = sorted(result)
    assert result[days[0]]["trades"].query("basis == 'legacy'").empty  # price[0 + 2] is not known on day 0
    assert result[days[1]]["trades"].query("basis == 'legacy'").empty
    (open_trade,) = result[days[3]]["trades"].query("basis == 'legacy'").itertuples()  # rows 0, 1 usable
    assert (open_trade.entry_price, open_trade.exit_price, open_trade.status) == (121.0, 110.0, "open")
    assert open_trade.exit_date == pd.Timestamp(days[1])  # marked at the last usable row's legacy price
    assert statistic(result[days[3]], "directional_accuracy_1", basis="legacy")["n"] == 1  # the pair (0, 1)


# ---------------------------------------------------------------------------------------------
# cross-checks of the return statistics


@pytest.mark.parametrize("calendar", ["exchange", "crypto"])
def test_return_statistics_equal_empyrical_and_numpy_formulas(calendar):
    signals = seeded_signals(days=90, seed=7, freq="B" if calendar == "exchange" else "D")
    tables = last(record(signals, calendar=calendar, cost_bps=8, horizons=[1, 2, 4]))
    periods = {"exchange": 252, "crypto": 365}[calendar]
    for signal in ("raw", "optimised"):
        daily = tables["daily"][tables["daily"]["signal"] == signal]
        r = daily["strategy_return"].to_numpy()
        assert len(r) == (90 if signal == "raw" else 86) and (r != 0).sum() > 20
        direct = {
            "annual_return": empyrical.annual_return(r, annualization=periods),
            "annual_volatility": empyrical.annual_volatility(r, annualization=periods),
            "sharpe_ratio": empyrical.sharpe_ratio(r, annualization=periods),
            "sortino_ratio": empyrical.sortino_ratio(r, annualization=periods),
            "max_drawdown": empyrical.max_drawdown(r),
            "calmar_ratio": empyrical.calmar_ratio(r, annualization=periods),
            "value_at_risk": empyrical.value_at_risk(r, cutoff=0.05),
            "conditional_value_at_risk": empyrical.conditional_value_at_risk(r, cutoff=0.05),
        }
        equity = np.cumprod(1 + r)
        annual = equity[-1] ** (periods / len(r)) - 1
        drawdown = (equity / np.maximum.accumulate(np.maximum(equity, 1.0)) - 1).min()
        numpy_formulas = {
            "total_return": equity[-1] - 1,
            "annual_return": annual,
            "annual_volatility": r.std(ddof=1) * np.sqrt(periods),
            "sharpe_ratio": r.mean() / r.std(ddof=1) * np.sqrt(periods),
            "sortino_ratio": r.mean() * periods / (np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(periods)),
            "max_drawdown": drawdown,
            "calmar_ratio": annual / -drawdown,
            "value_at_risk": np.percentile(r, 5),
            "conditional_value_at_risk": np.sort(r)[: int((len(r) - 1) * 0.05) + 1].mean(),
        }
        for name, value in direct.items():
            assert statistic(tables, name, signal=signal)["value"] == value, name  # the very same call
        for name, value in numpy_formulas.items():
            assert statistic(tables, name, signal=signal)["value"] == pytest.approx(value, rel=1e-9), name
        assert statistic(tables, "max_drawdown", signal=signal)["value"] == pytest.approx(daily["drawdown"].min())
        assert statistic(tables, "sharpe_ratio", signal=signal)["sufficient"]  # 86 or 90 >= 60


# ---------------------------------------------------------------------------------------------
# the old pipeline's flaws: each old behaviour, written as a tiny function, gives another number


def test_flaw_trades_at_future_prices():
    """Nexus v2 entered and exited at the price h_min observations after the signal date."""
    price = [100.0, 104.0, 108.0, 102.0, 95.0, 97.0]
    position = [1, 1, 0, 0, 0, 0]

    def nexus_v2_trade_return(price, h):  # the `actual` column: price h rows later
        actual = price[h:]
        return actual[2] / actual[0] - 1  # long from row 0 to row 2

    result = record(signals_table(price, position, horizons="2,3"), calendar="crypto", cost_bps=0, horizons=[2])
    as_of_exit = result[min(result) + pd.Timedelta(days=2)]
    (trade,) = as_of_exit["trades"].query("basis == 'point_in_time'").itertuples()
    assert (trade.entry_price, trade.exit_price, trade.status) == (100.0, 108.0, "closed")
    assert trade.net_return == pytest.approx(0.08)  # known on the exit date
    old = nexus_v2_trade_return(price, 2)
    assert old == pytest.approx(95 / 108 - 1) and old != pytest.approx(0.08)
    # the old number moves when a price after the exit moves; ours as of the exit date does not
    later = [100.0, 104.0, 108.0, 102.0, 80.0, 97.0]
    assert nexus_v2_trade_return(later, 2) != pytest.approx(old)
    again = record(signals_table(later, position, horizons="2,3"), calendar="crypto", cost_bps=0, horizons=[2])
    pd.testing.assert_frame_equal(again[min(again) + pd.Timedelta(days=2)]["trades"], as_of_exit["trades"])


def test_flaw_backward_looking_accuracy():
    price = [100.0, 90.0, 99.0, 110.0, 100.0]
    position = [1, 1, -1, 1, 0]

    def backward_accuracy(price, position):  # direction of the move INTO the signal's day
        scored = [i for i in range(1, len(price)) if position[i] != 0]
        return sum(np.sign(position[i]) == np.sign(price[i] - price[i - 1]) for i in scored) / len(scored)

    tables = last(record(signals_table(price, position), calendar="crypto", cost_bps=0, horizons=[1]))
    assert statistic(tables, "directional_accuracy_1")["value"] == 1 / 4  # only row 1 (90 -> 99) is right
    assert backward_accuracy(price, position) == 1 / 3


def test_flaw_population_std():
    def population_sharpe(r):
        return np.mean(r) / np.std(r) * np.sqrt(252)

    ours = statistic(hand_tables(), "sharpe_ratio")["value"]
    assert ours == pytest.approx(HAND_MEAN / math.sqrt(HAND_SAMPLE_VAR) * math.sqrt(252))
    assert population_sharpe(HAND) == pytest.approx(HAND_MEAN / math.sqrt(344e-6) * math.sqrt(252))
    assert population_sharpe(HAND) != pytest.approx(ours, rel=1e-3)


def test_flaw_trade_count_annualisation():
    """A trade-level Sharpe annualised by trades a year ignores the time out of the market."""
    back_to_back = ([100.0, 110.0, 115.5, 124.74, 122.2452], [1, -1, 1, -1, 0])
    with_gaps = ([100.0, 110.0, 110.0, 115.5, 115.5, 124.74, 124.74, 122.2452, 122.2452], [1, 0, -1, 0, 1, 0, -1, 0, 0])

    def trade_level_sharpe(trades):  # Nexus v2: mean / std of trade returns * sqrt(252 / average holding days)
        x = trades["net_return"].to_numpy()
        return x.mean() / x.std(ddof=1) * np.sqrt(252 / trades["holding_days"].mean())

    olds, ours = [], []
    for price, position in (back_to_back, with_gaps):
        tables = last(record(signals_table(price, position), calendar="exchange", cost_bps=0, horizons=[1]))
        trades = tables["trades"].query("basis == 'point_in_time'")
        np.testing.assert_allclose(trades["net_return"], [0.1, -0.05, 0.08, 0.02], rtol=1e-12)  # the same four trades
        olds.append(trade_level_sharpe(trades))
        ours.append(statistic(tables, "sharpe_ratio")["value"])
    assert olds[0] == pytest.approx(olds[1])  # blind to the four idle days
    gaps = np.array([0, 0.1, 0, -0.05, 0, 0.08, 0, 0.02, 0])
    assert ours[1] == pytest.approx(gaps.mean() / gaps.std(ddof=1) * np.sqrt(252))
    assert ours[0] == pytest.approx(np.mean([0, 0.1, -0.05, 0.08, 0.02]) / np.std([0, 0.1, -0.05, 0.08, 0.02], ddof=1)
                                    * np.sqrt(252))
    assert ours[1] < ours[0] and olds[1] != pytest.approx(ours[1], rel=1e-2)


def test_flaw_sortino_over_negative_returns_only():
    def negative_only_sortino(r):
        r = np.array(r)
        return r.mean() * 252 / (r[r < 0].std(ddof=1) * np.sqrt(252))

    ours = statistic(hand_tables(), "sortino_ratio")["value"]
    assert ours == pytest.approx(0.4 * math.sqrt(252))  # 0.004 * 252 / (0.01 * sqrt(252))
    assert negative_only_sortino(HAND) == pytest.approx(0.004 * 252 / (math.sqrt(0.5e-4) * math.sqrt(252)))
    assert negative_only_sortino(HAND) != pytest.approx(ours, rel=1e-3)


def test_flaw_additive_drawdown():
    def additive_drawdown(r):
        wealth = np.cumsum(r)
        return (wealth - np.maximum.accumulate(np.maximum(wealth, 0))).min()

    tables = hand_tables()
    assert statistic(tables, "max_drawdown")["value"] == pytest.approx(-0.0298)
    assert additive_drawdown(HAND) == pytest.approx(-0.03)


# ---------------------------------------------------------------------------------------------
# point in time, the one-pass fast path, the reference


@pytest.fixture(scope="module")
def history():
    return seeded_signals(days=40, seed=11)


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=37),
       change=st.sampled_from(["price", "net_prob", "position", "horizons", "drop", "add"]),
       seed=st.integers(min_value=0, max_value=10_000))
def test_point_in_time_never_looks_ahead(history, cut, change, seed):
    """Changing any input dated after D never changes the tables as of D."""
    dates = sorted(history["date"].unique())
    D, end = dates[cut], dates[-1]
    after = history["date"] > D
    rng = np.random.default_rng(seed)
    future = history.copy()
    if change == "price":
        future.loc[after, "price"] *= rng.uniform(0.5, 1.5, int(after.sum()))
    elif change == "net_prob":
        future.loc[after, "net_prob"] = rng.uniform(-1, 1, int(after.sum()))
    elif change == "position":
        future.loc[after, "position"] = rng.choice([-1, 0, 1], int(after.sum()))
    elif change == "horizons":
        future.loc[after, "horizons"] = rng.choice(["1", "5,8", "2,3"], int(after.sum()))
    elif change == "drop":
        future = future[~after | (rng.random(len(future)) < 0.5)]
    else:
        extra = future[after].assign(date=lambda f: f["date"] + pd.Timedelta(hours=12), price=lambda f: f["price"] * 2)
        future = pd.concat([future, extra], ignore_index=True)
    options = dict(as_of=[D, end], calendar="exchange", cost_bps=6, horizons=[1, 2, 4])
    before, later = record(history, **options), record(future, **options)
    for name in metrics.TABLES:
        pd.testing.assert_frame_equal(later[D.date()][name], before[D.date()][name])
    assert len(before[D.date()]["daily"]) == (cut + 1) + max(cut + 1 - 4, 0)


def test_nexus_v2_trades_would_look_ahead():
    """The contrast: a Nexus v2 trade return (at `actual`) changes when a later price changes."""
    signals = seeded_signals(days=30, seed=3)
    raw = signals[signals["variant"] == "raw"].reset_index(drop=True)
    position = raw["position"].to_numpy()
    entry = int(np.flatnonzero(position != 0)[0])
    exit_ = entry + int(np.flatnonzero(position[entry:] != position[entry])[0])

    def nexus_v2_first_trade(price, h=1):
        return position[entry] * (price[exit_ + h] / price[entry + h] - 1)

    moved = raw["price"].to_numpy().copy()
    moved[exit_ + 1] *= 1.1  # the day after the exit
    assert nexus_v2_first_trade(moved) != pytest.approx(nexus_v2_first_trade(raw["price"].to_numpy()))
    D = raw["date"].iloc[exit_]
    options = dict(as_of=[D, raw["date"].iloc[-1]], calendar="exchange", cost_bps=0, horizons=[1])
    ours = [record(frame, **options)[D.date()]["trades"].query("basis == 'point_in_time'")
            for frame in (raw, raw.assign(price=moved))]
    pd.testing.assert_frame_equal(ours[0], ours[1])
    assert ours[0]["status"].iloc[0] == "closed"


@pytest.mark.slow
@pytest.mark.parametrize("freq, calendar", [("B", "exchange"), ("D", "crypto")])
def test_many_dates_at_once_equal_one_date_at_a_time_and_the_reference(freq, calendar):
    signals = seeded_signals(days=26, seed=5 if freq == "B" else 6, freq=freq)
    options = dict(calendar=calendar, cost_bps=9, horizons=[1, 2, 4])
    every = record(signals, **options)
    dates = sorted(signals["date"].unique())
    weekend = [d.date() for d in pd.date_range(dates[0], dates[-1]) if d.weekday() == 6][:2]
    assert list(every) == [d.date() for d in dates]
    for day in [d.date() for d in dates] + weekend:
        tables = every[day] if day in every else record(signals, as_of=[day, dates[-1]], **options)[day]
        alone = record(signals, as_of=[day], **options)[day]
        want = reference.reference_tables(signals, as_of=day, **options)
        for name in metrics.TABLES:
            pd.testing.assert_frame_equal(tables[name], alone[name])
            assert_like_reference(tables[name], want[name], name)
    last_day = every[dates[-1].date()]
    assert (last_day["trades"]["status"] == "open").any() and (last_day["trades"]["basis"] == "legacy").any()
    assert last_day["statistics"]["n"].max() == 26
    legacy_sharpe = last_day["statistics"].query("basis == 'legacy' and statistic == 'sharpe_ratio'")["value"]
    assert legacy_sharpe.notna().all()  # both signals have >= 3 legacy trades: the figures were compared


def assert_like_reference(got, want, name):
    got = got.drop(columns="definition", errors="ignore")
    assert list(got.columns) == list(want.columns), name
    assert len(got) == len(want), name
    numbers = NUMBERS[name]
    labels = [c for c in got.columns if c not in numbers]
    pd.testing.assert_frame_equal(got[labels].reset_index(drop=True), want[labels].reset_index(drop=True),
                                  check_dtype=False, obj=name)
    for column in numbers:
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=1e-12, atol=1e-15,
                                   err_msg=f"{name}.{column}")


def test_a_signal_without_observations_yet_has_no_rows(history):
    result = record(history, calendar="exchange", cost_bps=0, horizons=[1])
    first = result[min(result)]
    assert set(first["statistics"]["signal"]) == set(first["daily"]["signal"]) == {"raw"}
    fifth = result[sorted(result)[4]]
    assert fifth["statistics"]["signal"].drop_duplicates().tolist() == ["raw", "optimised"]


# ---------------------------------------------------------------------------------------------
# tables: schema, order, determinism, minimum samples, definitions, bad input


def test_tables_schema_and_order(history):
    result = record(history, calendar="exchange", cost_bps=4, horizons=[4, 2])
    tables = last(result)
    assert list(tables) == ["statistics", "trades", "daily"]
    assert list(tables["statistics"].columns) == list(STATISTICS_COLUMNS)
    assert list(tables["trades"].columns) == list(TRADES_COLUMNS)
    assert list(tables["daily"].columns) == list(DAILY_COLUMNS)
    stats = tables["statistics"]
    expected = []
    for signal in ("raw", "optimised"):
        for basis in ("point_in_time", "legacy"):
            expected += [(signal, basis, name) for name in statistic_names(basis, horizons=[2, 4])]
    assert list(zip(stats["signal"], stats["basis"], stats["statistic"])) == expected
    assert statistic_names("point_in_time", horizons=[2, 4])[-3:] == (
        "directional_accuracy_1", "directional_accuracy_2", "directional_accuracy_4")
    dtypes = stats.dtypes.astype(str).to_dict()
    assert dtypes == {"date": "datetime64[ns]", "signal": "str", "basis": "str", "statistic": "str", "value": "float64",
                      "n": "int64", "min_n": "int64", "sufficient": "bool", "definition": "str"}
    assert (stats["date"] == pd.Timestamp(max(result))).all()
    trades = tables["trades"]
    assert trades.dtypes.astype(str)[["entry_date", "exit_date", "trade", "status"]].tolist() == [
        "datetime64[ns]", "datetime64[ns]", "int64", "str"]
    keys = trades[["signal", "basis"]].apply(tuple, axis=1).tolist()
    order = [("raw", "point_in_time"), ("raw", "legacy"), ("optimised", "point_in_time"), ("optimised", "legacy")]
    assert keys == sorted(keys, key=order.index)
    for _, group in trades.groupby(["signal", "basis"]):
        assert group["trade"].tolist() == list(range(1, len(group) + 1))
    daily = tables["daily"]
    assert daily["signal"].tolist() == sorted(daily["signal"], key=["raw", "optimised"].index)
    assert daily.groupby("signal")["date"].is_monotonic_increasing.all()
    assert daily.dtypes.astype(str)["position"] == "int64"
    # empty, typed: a date before the first observation
    early = record(history, as_of=[pd.Timestamp(START) - pd.Timedelta(days=3)], calendar="exchange", cost_bps=4,
                   horizons=[4, 2])
    (empty,) = early.values()
    for name in metrics.TABLES:
        assert empty[name].empty and empty[name].dtypes.equals(tables[name].dtypes), name
    assert record(history, as_of=[], calendar="exchange", cost_bps=4, horizons=[2]) == {}


def test_each_statistic_is_declared_once_and_the_table_follows_its_declaration(history, monkeypatch):
    """Name, minimum sample, definition, value and sample size of every row come from one declaration
    (metrics.statistics), so a statistic plugs in by being declared."""
    options = dict(calendar="crypto", cost_bps=4, horizons=[4, 2])
    stats = last(record(history, **options))["statistics"]
    for (_, basis), rows in stats.groupby(["signal", "basis"], sort=False):
        declared = metrics.statistics(basis, periods=365, cost_bps=4, horizons=[2, 4])
        assert list(zip(rows["statistic"], rows["min_n"], rows["definition"])) == [
            (s.name, s.min_n, s.definition) for s in declared]
    assert [s.name for s in metrics.statistics("legacy", horizons=[2])] == list(statistic_names("legacy", horizons=[2]))

    median = metrics.Statistic("median_return", 5, "median of r", lambda s: np.median(s.returns) if len(s.returns) else np.nan,
                               lambda s: len(s.returns))
    declared = metrics.statistics
    monkeypatch.setattr(metrics, "statistics", lambda basis, **kwargs: declared(basis, **kwargs) + (
        (median,) if basis == "point_in_time" else ()))
    result = record(history, **options)
    for tables in result.values():
        daily = tables["daily"]
        for signal in ("raw", "optimised"):
            returns = daily[(daily["signal"] == signal) & daily["price_known"]]["strategy_return"].to_numpy()
            if not len(returns):
                continue
            row = statistic(tables, "median_return", signal=signal)
            assert row["value"] == np.median(returns) and row["n"] == len(returns)
            assert row["min_n"] == 5 and row["sufficient"] == (len(returns) >= 5) and row["definition"] == "median of r"
    rows = last(result)["statistics"]
    assert rows[rows["basis"] == "point_in_time"].groupby("signal")["statistic"].last().eq("median_return").all()
    assert statistic_names("point_in_time", horizons=[2])[-1] == "median_return"


def test_deterministic_and_independent_of_row_order(history):
    options = dict(calendar="exchange", cost_bps=4, horizons=[2, 4])
    base = record(history, **options)
    again = record(history.sample(frac=1.0, random_state=2), **options)
    assert list(base) == list(again)
    for day in base:
        for name in metrics.TABLES:
            pd.testing.assert_frame_equal(again[day][name], base[day][name])


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
def test_minimum_samples():
    assert (metrics.MIN_RETURNS, metrics.MIN_TRADES, metrics.MIN_SIGNALS, metrics.MIN_LEGACY_TRADES) == (60, 10, 20, 3)
    rng = np.random.default_rng(1)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 61)))
    position = np.tile([1, 1, -1, 0], 16)[:61]
    result = record(signals_table(price, position, horizons="1"), calendar="crypto", cost_bps=0, horizons=[1])
    days = sorted(result)
    for day, returns in ((days[58], 59), (days[59], 60)):
        row = statistic(result[day], "sharpe_ratio")
        assert row["n"] == returns and row["sufficient"] == (returns >= 60) and not np.isnan(row["value"])
    trades = [statistic(result[day], "win_rate") for day in days]
    first_enough = next(i for i, row in enumerate(trades) if row["sufficient"])
    assert trades[first_enough]["n"] == 10 and trades[first_enough - 1]["n"] == 9
    accuracy = [statistic(result[day], "directional_accuracy_1")["n"] for day in days]
    assert accuracy == [int(np.count_nonzero(position[: i])) for i in range(61)]  # signals with a next price
    assert all(statistic(result[day], "directional_accuracy_1")["sufficient"] == (n >= 20)
               for day, n in zip(days, accuracy))


def test_definitions_name_the_formula_and_the_calendar(history):
    for calendar, periods in (("exchange", 252), ("crypto", 365)):
        stats = last(record(history, calendar=calendar, cost_bps=4, horizons=[2]))["statistics"]
        definitions = dict(zip(stats["statistic"], stats["definition"]))  # the last (optimised, legacy) wins ties
        pit = stats[stats["basis"] == "point_in_time"].set_index(["signal", "statistic"])["definition"]
        assert pit["raw", "sharpe_ratio"].startswith(
            f"empyrical.sharpe_ratio(daily strategy returns r (cost 4 bps per side), annualization={periods})")
        assert "empyrical.sortino_ratio" in pit["raw", "sortino_ratio"] and "over all N" in pit["raw", "sortino_ratio"]
        assert "cutoff=0.05" in pit["raw", "conditional_value_at_risk"]
        assert "zero move is a miss" in pit["raw", "directional_accuracy_2"]
        assert "sqrt(252 / average holding days)" in definitions["sharpe_ratio"]  # legacy: 252 for every calendar
        assert stats["definition"].str.len().min() > 10


def test_rejects_bad_input(history):
    options = dict(calendar="exchange", cost_bps=4, horizons=[2])
    with pytest.raises(ValueError, match="'lunar'"):
        record(history, calendar="lunar", cost_bps=4, horizons=[2])
    with pytest.raises(ValueError, match="cost_bps"):
        record(history, calendar="exchange", cost_bps=-2, horizons=[2])
    with pytest.raises(ValueError, match="horizons"):
        record(history, calendar="exchange", cost_bps=4, horizons=[0])
    with pytest.raises(ValueError, match="horizons"):
        record(history.drop(columns="horizons"), **options)
    with pytest.raises(ValueError, match="variant"):
        record(history.assign(variant="best"), **options)
    with pytest.raises(ValueError, match="'optimised': observations have duplicate dates, first 2025-01-07"):
        record(pd.concat([history, history[history["variant"] == "optimised"].head(1)]), **options)
    with pytest.raises(ValueError, match="'raw': price on 2025-01-02 is -1.0"):
        record(history.assign(price=history["price"].where(history["date"] != pd.Timestamp("2025-01-02"), -1.0)),
               **options)
    with pytest.raises(ValueError, match="horizons 'x' on 2025-01-03"):
        record(history.assign(horizons=history["horizons"].where(history["date"] != pd.Timestamp("2025-01-03"), "x")),
               **options)
    with pytest.raises(ValueError, match="basis"):
        statistic_names("future", horizons=[1])


@pytest.mark.slow
@pytest.mark.parametrize("freq, calendar", [("B", "exchange"), ("D", "crypto")])
def test_days_without_a_price_never_stop_the_record(freq, calendar):
    """Upstream may publish a day with a null target_var_price (not yet known): the record goes on
    through it and every later day, equal to the reference; the unpriced day is in the daily table
    (price_known False) and counts in no statistic."""
    signals = seeded_signals(days=40, seed=8, freq=freq)
    dates = sorted(signals["date"].unique())
    holes = [dates[0], dates[9], dates[10], dates[25], dates[-1]]
    signals.loc[signals["date"].isin(holes), "price"] = np.nan
    options = dict(calendar=calendar, cost_bps=9, horizons=[1, 2, 4])
    every = record(signals, **options)
    assert list(every) == [d.date() for d in dates]
    for day in [d.date() for d in dates]:
        want = reference.reference_tables(signals, as_of=day, **options)
        for name in metrics.TABLES:
            assert_like_reference(every[day][name], want[name], name)
    final = every[dates[-1].date()]
    daily = final["daily"][final["daily"]["signal"] == "raw"]
    assert len(daily) == 40 and (~daily["price_known"]).sum() == len(holes)
    assert final["statistics"]["n"].max() == 40 - len(holes)  # the priced observations
    # as of an unpriced day, the statistics are those of the last priced day before it
    before, hole = every[dates[8].date()]["statistics"], every[dates[9].date()]["statistics"]
    pd.testing.assert_frame_equal(hole.drop(columns="date"), before.drop(columns="date"))


def test_days_by_horizon_set_uses_the_catalogs_else_the_raw_horizons_seen_by_each_day():
    days = [dt.date(2025, 1, d) for d in (6, 1, 2, 3, 4, 5)]  # any order in, sorted groups out
    assert days_by_horizon_set(None, days, (5, 1)) == {(1, 5): days}
    assert days_by_horizon_set(None, days, ()) == {(): days}
    raw = signals_table([100.0, 101.0, 102.0, 103.0], [1, 1, 0, -1], horizons="1,3", start="2025-01-02")
    raw.loc[2, "horizons"] = "5"  # a horizon first seen on the 4th
    later = signals_table([100.0], [1], horizons="9", variant="optimised", start="2025-01-01")  # not the raw signal
    history = pd.concat([raw, later], ignore_index=True)
    assert days_by_horizon_set(history, days, ()) == {
        (): [dt.date(2025, 1, 1)],
        (1, 3): [dt.date(2025, 1, 2), dt.date(2025, 1, 3)],
        (1, 3, 5): [dt.date(2025, 1, 4), dt.date(2025, 1, 5), dt.date(2025, 1, 6)],
    }
    assert days_by_horizon_set(history, days, (2,)) == {(2,): days}
