"""The point-in-time trading simulation (docs/metrics.md) on hand-computed vectors."""

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.trading import DAILY_COLUMNS, TRADE_COLUMNS, simulate


def observations(price, position, *, start="2025-01-01", freq="D", net_prob=None):
    frame = pd.DataFrame({"date": pd.date_range(start, periods=len(price), freq=freq), "price": price,
                          "position": position})
    if net_prob is not None:
        frame["net_prob"] = net_prob
    return frame


def seeded_observations(n=60, seed=0):
    rng = np.random.default_rng(seed)
    price = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    position = rng.choice([-1, 0, 1], n, p=[0.3, 0.3, 0.4])
    position = np.where(rng.random(n) < 0.6, np.nan, position)  # signals persist for a while
    position = pd.Series(position).ffill().fillna(0).astype(int).to_numpy()
    return observations(price, position, freq="B", net_prob=rng.uniform(-1, 1, n))


def test_hand_computed_day_by_day():
    """Long, flip to short, flat, then long on the last day; 10 bps a side."""
    obs = observations([100.0, 110.0, 99.0, 99.0, 120.0, 130.0], [1, 1, -1, 0, 0, 1], net_prob=[.5, .5, -.5, 0, 0, .2])
    sim = simulate(obs, cost_bps=10)
    daily = sim.daily
    c = 0.001
    expected_returns = [
        -c,  # enter long at 100
        0.10,  # 100 -> 110 long
        (99 / 110 - 1) - 2 * c,  # long 110 -> 99, then flip: two sides
        -(99 / 99 - 1) - c,  # short over a flat day, then exit
        0.0,  # flat
        -c,  # enter long at 130 on the last day
    ]
    np.testing.assert_allclose(daily["strategy_return"], expected_returns, rtol=1e-15, atol=1e-18)
    np.testing.assert_allclose(daily["cost"], [c, 0, 2 * c, c, 0, c])
    np.testing.assert_allclose(daily["equity"], np.cumprod(1 + np.array(expected_returns)), rtol=1e-15)
    assert daily["drawdown"].iloc[0] == pytest.approx(-c)  # the starting 1 is the first peak
    assert daily["drawdown"].iloc[1] == 0.0  # a new peak
    assert daily["drawdown"].iloc[2] == pytest.approx((1 - c) * 1.1 * (1 + expected_returns[2]) / ((1 - c) * 1.1) - 1)
    np.testing.assert_allclose(daily["buy_and_hold"], [1.0, 1.1, 0.99, 0.99, 1.2, 1.3])
    assert np.isnan(daily["asset_return"].iloc[0])
    np.testing.assert_allclose(daily["asset_return"].iloc[1:], [0.1, 99 / 110 - 1, 0.0, 120 / 99 - 1, 130 / 120 - 1])
    np.testing.assert_array_equal(daily["net_prob"], [.5, .5, -.5, 0, 0, .2])

    trades = sim.trades
    assert trades["trade"].tolist() == [1, 2, 3]
    assert trades["direction"].tolist() == ["long", "short", "long"]
    assert trades["status"].tolist() == ["closed", "closed", "open"]
    assert trades["entry_price"].tolist() == [100.0, 99.0, 130.0]
    assert trades["exit_price"].tolist() == [99.0, 99.0, 130.0]
    assert trades["entry_date"].dt.day.tolist() == [1, 3, 6]
    assert trades["exit_date"].dt.day.tolist() == [3, 4, 6]
    assert trades["holding_observations"].tolist() == [2, 1, 0]
    assert trades["holding_days"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(trades["gross_return"], [-0.01, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(trades["cost"], [2 * c, 2 * c, c])
    np.testing.assert_allclose(trades["net_return"], [-0.01 - 2 * c, -2 * c, -c], atol=1e-15)
    assert not np.signbit(trades["gross_return"].iloc[1])  # a flat short is 0.0, not -0.0
    flat_short = simulate(observations([10.0, 10.0], [-1, -1]), cost_bps=0).daily["strategy_return"]
    assert flat_short.tolist() == [0.0, 0.0] and not np.signbit(flat_short).any()


def test_flat_periods_and_all_neutral():
    flat = simulate(observations([10.0, 12.0, 9.0, 11.0], [0, 0, 0, 0]), cost_bps=25)
    assert (flat.daily["strategy_return"] == 0).all() and (flat.daily["equity"] == 1).all()
    assert (flat.daily["drawdown"] == 0).all() and (flat.daily["cost"] == 0).all()
    assert flat.trades.empty and flat.marks.empty
    assert list(flat.trades.columns) == list(TRADE_COLUMNS)
    # flat between two trades: nothing earned or paid while out of the market
    sim = simulate(observations([10.0, 11.0, 12.0, 6.0, 7.0, 7.7], [1, 0, 0, 0, 1, 0]), cost_bps=0)
    np.testing.assert_allclose(sim.daily["strategy_return"], [0, 0.1, 0, 0, 0, 0.1])
    assert sim.trades["holding_observations"].tolist() == [1, 1]
    np.testing.assert_allclose(sim.trades["net_return"], [0.1, 0.1])


def test_flip_pays_two_sides_and_starts_a_new_trade_at_the_same_price():
    sim = simulate(observations([100.0, 105.0, 95.0, 90.0], [1, -1, -1, 0]), cost_bps=20)
    c = 0.002
    np.testing.assert_allclose(sim.daily["cost"], [c, 2 * c, 0, c])
    np.testing.assert_allclose(sim.daily["strategy_return"], [-c, 0.05 - 2 * c, -(95 / 105 - 1), -(90 / 95 - 1) - c])
    long, short = sim.trades.itertuples(index=False)
    flip = (pd.Timestamp("2025-01-02"), 105.0)
    assert (long.exit_date, long.exit_price) == (short.entry_date, short.entry_price) == flip
    assert long.net_return == pytest.approx(0.05 - 2 * c)
    assert short.net_return == pytest.approx(-(90 / 105 - 1) - 2 * c)
    assert short.holding_observations == 2 and short.status == "closed"


def test_signal_on_the_last_day_is_an_open_trade_with_its_entry_cost():
    sim = simulate(observations([100.0, 101.0, 102.0], [0, 0, -1]), cost_bps=15)
    (trade,) = sim.trades.itertuples(index=False)
    assert trade.status == "open" and trade.direction == "short"
    assert trade.entry_price == trade.exit_price == 102.0 and trade.holding_observations == trade.holding_days == 0
    assert trade.cost == trade.gross_return + 0.0015 == pytest.approx(0.0015)
    assert trade.net_return == pytest.approx(-0.0015)
    assert sim.daily["strategy_return"].iloc[-1] == pytest.approx(-0.0015)
    assert sim.daily["equity"].iloc[-1] == pytest.approx(1 - 0.0015)


def test_single_observation():
    held = simulate(observations([50.0], [1]), cost_bps=10)
    assert held.daily["strategy_return"].tolist() == [-0.001]
    assert held.daily["equity"].tolist() == [0.999] and held.daily["buy_and_hold"].tolist() == [1.0]
    assert held.trades["status"].tolist() == ["open"] and held.trades["net_return"].tolist() == [-0.001]
    out = simulate(observations([50.0], [0]), cost_bps=10)
    assert out.daily["strategy_return"].tolist() == [0.0] and out.trades.empty


def test_costs_add_up_and_zero_cost_long_trades_compound_the_daily_returns():
    obs = seeded_observations(seed=4)
    sim = simulate(obs, cost_bps=12.5)
    assert sim.daily["cost"].sum() == pytest.approx(sim.trades["cost"].sum(), rel=1e-12)
    assert len(sim.trades) >= 5 and set(sim.trades["direction"]) == {"long", "short"}
    free = simulate(obs, cost_bps=0)
    assert (free.daily["cost"] == 0).all() and (free.trades["net_return"] == free.trades["gross_return"]).all()
    daily = free.daily.set_index("date")["strategy_return"]
    for trade in free.trades[free.trades["direction"] == "long"].itertuples():
        held = daily[(daily.index > trade.entry_date) & (daily.index <= trade.exit_date)]
        assert np.prod(1 + held) - 1 == pytest.approx(trade.gross_return, rel=1e-9, abs=1e-12)
    # a cost lowers every return by exactly c |position change|
    pos = sim.daily["position"].to_numpy()
    change = np.abs(pos - np.concatenate([[0], pos[:-1]]))
    saved = free.daily["strategy_return"] - sim.daily["strategy_return"]
    np.testing.assert_allclose(saved, 0.00125 * change, atol=1e-15)
    np.testing.assert_allclose(free.trades["net_return"] - sim.trades["net_return"],
                               np.where(sim.trades["status"] == "open", 0.00125, 0.0025), atol=1e-15)


def test_drawdown_is_compounded_from_the_starting_capital():
    sim = simulate(observations([100.0, 90.0, 81.0, 100.0], [1, 1, 1, 1]), cost_bps=0)
    np.testing.assert_allclose(sim.daily["drawdown"], [0.0, -0.1, -0.19, 0.0], atol=1e-15)  # additive would say -0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_until_equals_simulating_the_prefix(seed):
    """Positions never depend on later rows: the simulation as of D is that of the rows up to D."""
    obs = seeded_observations(n=40, seed=seed)
    sim = simulate(obs, cost_bps=7)
    days = pd.date_range(obs["date"].min() - pd.Timedelta(days=1), obs["date"].max() + pd.Timedelta(days=2))
    for day in days:  # weekends included: as of a Saturday is as of the Friday before
        got = sim.until(day)
        want = simulate(obs[obs["date"] <= day], cost_bps=7)
        pd.testing.assert_frame_equal(got.daily, want.daily)
        pd.testing.assert_frame_equal(got.trades, want.trades)
        pd.testing.assert_frame_equal(got.marks, want.marks)


def test_marks_are_the_open_trade_at_each_observation():
    sim = simulate(observations([10.0, 11.0, 12.1, 11.0, 12.0], [1, 1, -1, 0, 1]), cost_bps=0)
    marks = sim.marks
    assert marks["exit_date"].dt.day.tolist() == [1, 2, 3, 5]  # every observation with a position
    assert marks["trade"].tolist() == [1, 1, 2, 3]
    np.testing.assert_allclose(marks["gross_return"], [0.0, 0.1, 0.0, 0.0], atol=1e-15)
    assert (marks["status"] == "open").all()


def test_input_order_does_not_matter():
    obs = seeded_observations(seed=9)
    shuffled = obs.sample(frac=1.0, random_state=3)
    for got, want in zip(simulate(shuffled, cost_bps=5).__dict__.values(), simulate(obs, cost_bps=5).__dict__.values()):
        pd.testing.assert_frame_equal(got, want)


def test_output_schema():
    sim = simulate(seeded_observations(seed=2), cost_bps=3)
    empty = simulate(observations([], []).astype({"price": float, "position": int}), cost_bps=3)
    for result in (sim, empty):
        assert list(result.daily.columns) == list(DAILY_COLUMNS)
        assert list(result.trades.columns) == list(TRADE_COLUMNS) == list(result.marks.columns)
    assert sim.daily.dtypes.equals(empty.daily.dtypes) and sim.trades.dtypes.equals(empty.trades.dtypes)
    dtypes = sim.trades.dtypes.astype(str).to_dict()
    assert dtypes["entry_date"] == dtypes["exit_date"] == "datetime64[ns]"
    assert {dtypes[c] for c in ("trade", "holding_observations", "holding_days")} == {"int64"}
    assert dtypes["direction"] == dtypes["status"] == "str"
    assert sim.daily.dtypes.astype(str).to_dict()["position"] == "int64"
    assert np.isnan(simulate(observations([1.0, 2.0], [0, 1]), cost_bps=0).daily["net_prob"]).all()  # optional


def test_rejects_bad_input():
    obs = observations([10.0, 11.0, 12.0], [1, 0, -1])
    with pytest.raises(ValueError, match="duplicate dates, first 2025-01-02"):
        simulate(pd.concat([obs, obs.iloc[[1]]]), cost_bps=0)
    with pytest.raises(ValueError, match="price on 2025-01-02 is inf"):
        simulate(obs.assign(price=[10.0, np.inf, 12.0]), cost_bps=0)
    with pytest.raises(ValueError, match="price on 2025-01-03 is 0.0"):
        simulate(obs.assign(price=[10.0, 11.0, 0.0]), cost_bps=0)
    with pytest.raises(ValueError, match="price on 2025-01-01 is -1.0"):
        simulate(obs.assign(price=[-1.0, 11.0, 12.0]), cost_bps=0)
    with pytest.raises(ValueError, match="position on 2025-01-02 is 0.5"):
        simulate(obs.assign(position=[1, 0.5, 0]), cost_bps=0)
    with pytest.raises(ValueError, match="position on 2025-01-03 is nan"):
        simulate(obs.assign(position=[1, 0, np.nan]), cost_bps=0)
    with pytest.raises(ValueError, match="position"):
        simulate(obs.drop(columns="position"), cost_bps=0)
    with pytest.raises(ValueError, match="cost_bps"):
        simulate(obs, cost_bps=-1)
    with pytest.raises(ValueError, match="cost_bps"):
        simulate(obs, cost_bps=float("nan"))


def test_a_day_without_a_price_carries_the_position():
    """Day 3 has no price (upstream's "not yet known"): its signal (short) is not executed, the
    long is carried, the day has no return and no cost, and day 4's return is measured from day
    2's price; the flip happens on day 4, at day 4's price."""
    obs = observations([100.0, 110.0, np.nan, 121.0, 121.0], [1, 1, -1, -1, 0])
    sim = simulate(obs, cost_bps=10)
    daily = sim.daily
    c = 0.001
    assert daily["price_known"].tolist() == [True, True, False, True, True]
    assert daily["position"].tolist() == [1, 1, 1, -1, 0]  # held: the unpriced day carries the long
    r = daily["strategy_return"].to_numpy()
    np.testing.assert_allclose(r[[0, 1, 3, 4]], [-c, 0.10, 121 / 110 - 1 - 2 * c, 0.0 - c], rtol=1e-15)
    assert np.isnan(r[2]) and np.isnan(daily["asset_return"].iloc[2]) and daily["cost"].iloc[2] == 0.0
    assert daily["equity"].iloc[2] == daily["equity"].iloc[1] and daily["drawdown"].iloc[2] == daily["drawdown"].iloc[1]
    assert daily["buy_and_hold"].iloc[2] == daily["buy_and_hold"].iloc[1] == pytest.approx(1.1)
    assert daily["asset_return"].iloc[3] == pytest.approx(121 / 110 - 1)
    trades = sim.trades
    assert trades["direction"].tolist() == ["long", "short"]
    assert trades["entry_date"].dt.day.tolist() == [1, 4] and trades["exit_date"].dt.day.tolist() == [4, 5]
    assert trades["exit_price"].tolist() == [121.0, 121.0]
    assert trades["holding_observations"].tolist() == [2, 1]  # priced days only
    # as of the unpriced day: the open long is marked at the last known price
    until = sim.until("2025-01-03")
    assert len(until.daily) == 3
    assert until.trades["status"].tolist() == ["open"] and until.trades["exit_price"].tolist() == [110.0]


def test_no_price_at_the_start():
    sim = simulate(observations([np.nan, np.nan, 50.0, 55.0], [1, 1, 1, 1]), cost_bps=0)
    assert sim.daily["position"].tolist() == [0, 0, 1, 1]
    assert np.isnan(sim.daily["buy_and_hold"].iloc[0]) and sim.daily["equity"].iloc[0] == 1.0
    assert sim.trades["entry_price"].tolist() == [50.0]
