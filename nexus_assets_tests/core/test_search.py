"""The walk-forward horizon search against its slow per-date reference (docs/horizon-search.md)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_assets.core import contract, search
from nexus_assets.core.search import COMBINATIONS, LEADERBOARD_COLUMNS, horizon_search
from nexus_assets.core.signals import daily_signals
from nexus_assets_tests.core import reference_search as reference

START = pd.Timestamp("2025-01-01")
LABELS = ["date", "rank", "horizons", "n_horizons", "threshold", "combination", "n_folds", "trades", "fold_start",
          "fold_end", "candidates", "method", "eligible"]
SMALL = {"periods": 365, "cost_bps": 5.0, "fold_length": 10, "min_trades": 5}


def synthetic_ensembles(seed=1, horizons=(1, 2, 3, 5), days=90, nan=0.05, drop=0.05):
    """One asset's horizon_ensembles rows: a random-walk price and forecasts that follow a
    persistent drift (so that configurations trade and differ), four noisy combinations."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=days, freq="D")
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
    drift = np.zeros(days)
    for i in range(1, days):
        drift[i] = 0.7 * drift[i - 1] + rng.normal(0, 0.003)
    n = days * len(horizons)
    h = np.tile(np.array(horizons, dtype="int64"), days)
    p = np.repeat(price, len(horizons))
    base = p * (1 + np.repeat(drift, len(horizons)) * h + rng.normal(0, 0.004, n))
    frame = pd.DataFrame({
        "date": np.repeat(dates, len(horizons)), "horizon": h, "price": p, "forecast": base,
        "raw_mean": base * (1 + rng.normal(0, 0.003, n)), "raw_median": base * (1 + rng.normal(0, 0.003, n)),
        "low_variance": p * (1 + rng.normal(0, 0.01, n)), "strategy": "Balanced",
    })
    frame = frame[rng.random(n) >= drop].reset_index(drop=True)
    for column in COMBINATIONS.values():
        frame.loc[rng.random(len(frame)) < nan, column] = np.nan
    return frame


def assert_same(got, want):
    """Leaderboards identical: labels and ranks exactly, numbers within 1e-9 relative."""
    assert list(got.columns) == list(LEADERBOARD_COLUMNS)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got[LABELS].reset_index(drop=True), want[LABELS].reset_index(drop=True),
                                  check_dtype=False)
    for column in ("objective", "mean_daily_return"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-9, atol=1e-12, err_msg=column)
    for a, b in zip(got["fold_sharpes"], want["fold_sharpes"]):
        np.testing.assert_allclose(np.array(a.split(","), float), np.array(b.split(","), float), rtol=1e-6, atol=2e-6)
    # the trials' spread comes from one-pass window sums (the reference: two passes per trial)
    for column in ("span_sharpe", "expected_max_sharpe", "deflated_sharpe"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-6, atol=1e-9, err_msg=column)


@pytest.fixture(scope="module")
def rough():
    """Four horizons with gaps and NaN forecasts, a fifth that starts late, a date without a price."""
    frame = synthetic_ensembles(seed=7, days=80)
    late = synthetic_ensembles(seed=8, horizons=(8,), days=80, nan=0.1, drop=0.0)
    late = late[late["date"] >= START + pd.Timedelta(days=55)]
    late["price"] = late["date"].map(frame.groupby("date")["price"].first())
    frame = pd.concat([frame, late], ignore_index=True)
    frame.loc[frame["date"] == START + pd.Timedelta(days=40), "price"] = np.nan  # not an observation
    frame.loc[(frame["date"] == START + pd.Timedelta(days=41)) & (frame["horizon"] == 1), "price"] = np.nan
    return frame


@pytest.fixture(scope="module")
def rough_result(rough):
    return horizon_search(rough, **SMALL)


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_matches_reference_on_rough_data(rough, rough_result):
    dates = sorted(rough["date"].unique())[::2]
    want = reference.reference_search(rough, dates=dates, **SMALL)
    assert_same(rough_result[rough_result["date"].isin(dates)], want)
    assert set(rough_result["method"]) == {"exhaustive"}
    assert set(rough_result["candidates"]) == {11 * 24, 26 * 24}  # 4 known horizons, then 5
    assert rough_result["rank"].max() == 20
    assert (rough_result["trades"] >= 5).all()
    winners = rough_result[rough_result["rank"] == 1]
    assert winners["combination"].nunique() >= 2 and winners["horizons"].nunique() >= 3  # not a degenerate search


def test_leaderboard_order_and_schema(rough_result):
    out = rough_result
    assert out.dtypes.to_dict() == contract.dtypes(contract.LEADERBOARD)
    key = list(zip(out["date"], out["rank"]))
    assert key == sorted(key) and not out.duplicated(["date", "rank"]).any()
    for _, day in out.groupby("date"):
        assert day["rank"].tolist() == list(range(1, len(day) + 1))
        assert (np.diff(day["objective"].to_numpy()) <= 0).all()
        assert not day.duplicated(["horizons", "threshold", "combination"]).any()
    sharpes = [np.array(s.split(","), float) for s in out["fold_sharpes"]]
    assert [len(s) for s in sharpes] == out["n_folds"].tolist()
    np.testing.assert_allclose([s.mean() for s in sharpes], out["objective"], atol=1e-5)
    assert (out["n_horizons"] == out["horizons"].str.count(",") + 1).all()
    assert (out["fold_end"] < out["date"]).all()  # folds end before the date


def test_warm_up_and_dates_that_are_not_observations(rough, rough_result):
    observed = sorted(rough.dropna(subset=["price"])["date"].unique())
    assert rough_result["date"].min() == observed[20]  # min_folds (2) x fold_length (10) returns
    assert horizon_search(rough, dates=observed[:20], **SMALL).empty
    no_price = START + pd.Timedelta(days=40)
    assert horizon_search(rough, dates=[no_price, "2031-01-01"], **SMALL).empty
    assert no_price not in set(rough_result["date"])
    one_price = START + pd.Timedelta(days=41)  # horizon 1's row has no price; the others have
    assert one_price in set(rough_result["date"])


def test_dates_subset_equals_rows_of_full_run(rough, rough_result):
    picked = sorted(rough_result["date"].unique())[::7]
    part = horizon_search(rough, dates=[d.date() for d in picked], **SMALL)
    pd.testing.assert_frame_equal(part, rough_result[rough_result["date"].isin(picked)].reset_index(drop=True))


def test_matches_reference_in_beam_search():
    frame = synthetic_ensembles(seed=3, horizons=(1, 2, 3, 5, 8, 13), days=64)
    options = {**SMALL, "max_exhaustive_horizons": 3, "beam_width": 3}
    dates = sorted(frame["date"].unique())[20::6]
    got = horizon_search(frame, dates=dates, **options)
    assert_same(got, reference.reference_search(frame, dates=dates, **options))
    assert set(got["method"]) == {"beam"}
    exhaustive = (2**6 - 6 - 1) * 24
    assert (got["candidates"] < exhaustive).all()
    assert got["n_horizons"].max() >= 4  # the beam grows beyond pairs


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
def test_fourteen_horizons_use_the_beam_and_twelve_are_exhaustive():
    horizons = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30)
    frame = synthetic_ensembles(seed=5, horizons=horizons, days=30, nan=0.02, drop=0.02)
    options = {"periods": 365, "cost_bps": 5.0, "fold_length": 8, "min_trades": 3, "combinations": ("ensemble",),
               "thresholds": (0.0, 0.3), "beam_width": 4}
    dates = sorted(frame["date"].unique())[-2:]
    got = horizon_search(frame, dates=dates, **options)
    assert_same(got, reference.reference_search(frame, dates=dates, **options))
    assert set(got["method"]) == {"beam"}
    assert (got["candidates"] < (2**14 - 15) * 2).all()
    twelve = frame[frame["horizon"].isin(horizons[:12])]
    exhaustive = horizon_search(twelve, dates=dates, **options)
    assert set(exhaustive["method"]) == {"exhaustive"}
    assert set(exhaustive["candidates"]) == {(2**12 - 13) * 2}


@pytest.fixture(scope="module")
def history():
    return synthetic_ensembles(seed=21, days=60, nan=0.05, drop=0.05)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=16, max_value=57),
       change=st.sampled_from(["forecasts", "prices", "drop", "new_horizon", "no_prices", "later_dates"]),
       seed=st.integers(min_value=0, max_value=10_000))
def test_point_in_time_never_looks_ahead(history, cut, change, seed):
    """Changing any row dated after D never changes D's leaderboard."""
    D = START + pd.Timedelta(days=cut)
    after = history["date"] > D
    rng = np.random.default_rng(seed)
    future = history.copy()
    if change == "forecasts":
        for column in COMBINATIONS.values():
            future.loc[after, column] *= rng.uniform(0.9, 1.1, int(after.sum()))
    elif change == "prices":
        future.loc[after, "price"] *= rng.uniform(0.5, 1.5)
    elif change == "drop":
        future = future[~after | (rng.random(len(future)) < 0.5)]
    elif change == "new_horizon":  # a horizon known only after D
        extra = future[after & (future["horizon"] == 5)].assign(horizon=9)
        future = pd.concat([future, extra], ignore_index=True)
    elif change == "no_prices":
        future.loc[after & (rng.random(len(future)) < 0.5), "price"] = np.nan
    else:
        extra = future[future["date"] == future["date"].max()].assign(date=future["date"].max() + pd.Timedelta(days=3))
        future = pd.concat([future, extra], ignore_index=True)
    options = {**SMALL, "fold_length": 8}
    before = horizon_search(history, dates=[D], **options)
    later = horizon_search(future, dates=[D], **options)
    assert len(before) > 0
    pd.testing.assert_frame_equal(later, before)
    truncated = horizon_search(history[history["date"] <= D], dates=[D], **options)
    pd.testing.assert_frame_equal(truncated, before)


def regime_switch(days=200, switch=120, seed=4):
    """``forecast`` knows the next move before ``switch``, ``raw_mean`` after it; the rest is noise."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=days, freq="D")
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
    move = np.sign(np.r_[np.diff(price), 0.0])  # the direction of the next observation
    rows = []
    for i, t in enumerate(dates):
        for h in (1, 2, 3):
            informed = price[i] * (1 + 0.01 * h * move[i])
            noise = {c: price[i] * (1 + rng.normal(0, 0.01)) for c in COMBINATIONS.values()}
            rows.append({"date": t, "horizon": h, "price": price[i], **noise,
                         "forecast": informed if i < switch else noise["forecast"],
                         "raw_mean": informed if i >= switch else noise["raw_mean"]})
    return pd.DataFrame(rows)


def in_sample_choice(frame, *, periods, cost_bps, share=0.3, min_trades=10):
    """Nexus v2's choice: the best Sharpe on the last 30% of the WHOLE history (>= 10 trades)."""
    days, prices = reference.observations(frame)
    value = reference.forecast_values(frame, COMBINATIONS.values())
    start = int(len(days) * (1 - share))
    best = None
    horizons = sorted(frame["horizon"].unique())
    for size in range(2, len(horizons) + 1):
        for subset in itertools.combinations(horizons, size):
            for name, column in COMBINATIONS.items():
                net = reference.net_probs(value, days, subset, column)
                for threshold in reference.THRESHOLDS:
                    positions = [reference.position(p, threshold) for p in net]
                    returns = reference.daily_returns(positions, [prices[t] for t in days], cost_bps / 1e4)
                    sharpe = reference.sharpe(returns[start:], periods)
                    trades = reference.entries(positions, start, len(days))
                    if trades >= min_trades and (best is None or sharpe > best[0]):
                        best = (sharpe, subset, threshold, name)
    return best[1:]


def test_winner_is_walk_forward_not_the_old_in_sample_choice():
    """Nexus v2 picks in sample on the last 30% of the whole history, so on D (in the first regime)
    it would use the configuration that only works later; the walk-forward winner of D uses the
    folds before D and ignores everything after it."""
    frame = regime_switch()
    options = {"periods": 365, "cost_bps": 5.0, "fold_length": 20}
    D = START + pd.Timedelta(days=110)
    old = in_sample_choice(frame, periods=365, cost_bps=5.0)
    assert old == ((1, 2), 0.0, "mean")
    board = horizon_search(frame, dates=[D], **options)
    winner = board.iloc[0]
    assert (winner["horizons"], winner["threshold"], winner["combination"]) == ("1,2", 0.0, "ensemble")
    assert (winner["combination"], winner["threshold"]) != (old[2], old[1])
    assert winner["objective"] > 10 and winner["fold_end"] < D
    assert "mean" not in set(board["combination"].head(4))
    pd.testing.assert_frame_equal(horizon_search(frame[frame["date"] <= D], dates=[D], **options), board)
    late = horizon_search(frame, dates=[frame["date"].max()], **options).iloc[0]  # folds mostly in the new regime
    assert late["combination"] == "mean"


def test_identical_configurations_tie_exactly_and_break_by_the_rules():
    """``raw_mean`` = ``forecast`` from day 30 on: on dates whose folds start later, every
    configuration ties with its twin bit for bit although their histories differ (sums over the
    whole history, e.g. cumulative-sum differences, would break the tie by rounding), and the tie
    goes to the combination listed first; the reference agrees on every rank."""
    frame = synthetic_ensembles(seed=11, days=100)
    same = frame["date"] >= START + pd.Timedelta(days=30)
    frame.loc[same, "raw_mean"] = frame.loc[same, "forecast"]
    options = {**SMALL, "combinations": ("mean", "ensemble")}
    got = horizon_search(frame, **options)
    dates = sorted(got["date"].unique())[::4]
    assert_same(got[got["date"].isin(dates)], reference.reference_search(frame, dates=dates, **options))
    late = got[got["fold_start"] > START + pd.Timedelta(days=31)]
    twins = late.groupby(["date", "horizons", "threshold"]).filter(lambda g: len(g) == 2)
    assert len(twins) > 100
    grouped = twins.sort_values("rank").groupby(["date", "horizons", "threshold"])
    assert (grouped["objective"].nunique() == 1).all()  # exact ties
    assert (grouped["combination"].first() == "mean").all()
    pairs = got[got["n_horizons"] == 2].groupby(["date", "horizons", "combination"])
    assert (pairs["objective"].nunique() == 1).all()  # a pair's net_prob is -1, 0 or 1: every threshold ties
    assert (pairs["threshold"].apply(lambda t: t.is_monotonic_increasing)).all()


def test_nearly_constant_returns_keep_their_precision():
    """Always long on a price that grows ~1% a day (+-1e-7): the fold variance is ~1e-10 of the
    sum of squares, where one-pass variance loses ~6 digits; the search recomputes it in two passes."""
    rng = np.random.default_rng(2)
    days = 40
    price = 100 * np.cumprod(1.01 + 1e-7 * rng.standard_normal(days))
    dates = pd.date_range(START, periods=days, freq="D")
    frame = pd.DataFrame({"date": np.repeat(dates, 2), "horizon": np.tile([1, 2], days),
                          "price": np.repeat(price, 2)})
    for column in COMBINATIONS.values():
        frame[column] = frame["price"] * (1 + 0.01 * frame["horizon"])  # always bullish
    options = {"periods": 365, "cost_bps": 0.0, "fold_length": 10, "min_trades": 0, "combinations": ("ensemble",)}
    got = horizon_search(frame, **options)
    want = reference.reference_search(frame, **options)
    assert_same(got, want)
    assert got["objective"].min() > 1e5


def test_flat_folds_have_zero_sharpe():
    """Neutral throughout (no pair ever disagrees with a flat forecast): every return is 0."""
    frame = synthetic_ensembles(seed=2, horizons=(1, 2), days=40)
    for column in COMBINATIONS.values():
        frame[column] = frame["price"]  # zero slopes: neutral, never a trade
    assert horizon_search(frame, **SMALL).empty
    board = horizon_search(frame, **{**SMALL, "min_trades": 0})
    assert (board["objective"] == 0).all() and (board["trades"] == 0).all()
    assert set(board["fold_sharpes"]) <= {"0.000000,0.000000", "0.000000,0.000000,0.000000"}


def test_no_candidates_without_two_horizons_or_history():
    frame = synthetic_ensembles(seed=1, horizons=(3,), days=50)
    empty = horizon_search(frame, **SMALL)
    assert empty.empty and list(empty.columns) == list(LEADERBOARD_COLUMNS)
    assert empty.dtypes.to_dict() == contract.dtypes(contract.LEADERBOARD)
    assert horizon_search(frame.iloc[:0], **SMALL).empty
    assert horizon_search(synthetic_ensembles(seed=1, days=19), **SMALL).empty  # 19 < 2 folds of 10
    assert not horizon_search(synthetic_ensembles(seed=1, days=21, drop=0), **SMALL).empty


def test_options_and_other_columns():
    frame = synthetic_ensembles(seed=9, days=50).drop(columns=["low_variance"])
    options = {**SMALL, "thresholds": (0.3, 0.0), "combinations": {"ensemble": "forecast", "median": "raw_median"}}
    got = horizon_search(frame, **options)
    assert set(got["threshold"]) <= {0.0, 0.3} and set(got["combination"]) <= {"ensemble", "median"}
    assert set(got["candidates"]) == {11 * 2 * 2}
    dates = sorted(got["date"].unique())[::5]
    assert_same(got[got["date"].isin(dates)], reference.reference_search(frame, dates=dates, **options))
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(horizon_search(shuffled, **options), got)
    topped = horizon_search(frame, **{**options, "top": 3, "n_folds": 2, "min_folds": 1})
    assert topped["rank"].max() == 3 and set(topped["n_folds"]) <= {1, 2}


def test_constants_are_the_definitions():
    assert search.THRESHOLDS == reference.THRESHOLDS
    assert dict(search.COMBINATIONS) == reference.COMBINATIONS
    assert list(search.COMBINATIONS) == list(reference.COMBINATIONS)  # the tie-break order
    assert list(search.LEADERBOARD_COLUMNS) == reference.COLUMNS
    assert (search.N_FOLDS, search.FOLD_LENGTH, search.MIN_FOLDS, search.MIN_TRADES, search.TOP) == (5, 30, 2, 10, 20)
    assert search.MAX_EXHAUSTIVE_HORIZONS == 12


def test_rejects_bad_input():
    frame = synthetic_ensembles(seed=1, days=25)
    with pytest.raises(ValueError, match="column"):
        horizon_search(frame.drop(columns="raw_median"), **SMALL)
    with pytest.raises(ValueError, match="duplicate"):
        horizon_search(pd.concat([frame, frame.head(2)], ignore_index=True), **SMALL)
    with pytest.raises(ValueError, match="thresholds"):
        horizon_search(frame, thresholds=(0.1, 0.1), **SMALL)
    with pytest.raises(ValueError, match="combination"):
        horizon_search(frame, combinations=("best",), **SMALL)
    with pytest.raises(ValueError, match="cost_bps"):
        horizon_search(frame, **{**SMALL, "cost_bps": -1.0})
    with pytest.raises(ValueError, match="periods"):
        horizon_search(frame, **{**SMALL, "periods": 0})
    with pytest.raises(ValueError, match="fold_length"):
        horizon_search(frame, **{**SMALL, "fold_length": 1})
    with pytest.raises(ValueError, match="min_folds"):
        horizon_search(frame, min_folds=6, **SMALL)
    with pytest.raises(ValueError, match="> 0"):
        horizon_search(frame.assign(price=-frame["price"]), **SMALL)
    with pytest.raises(ValueError, match="infinite"):
        horizon_search(frame.assign(forecast=math.inf), **SMALL)


def test_a_dates_leaderboard_depends_only_on_its_search_window():
    """History before the search window (n_folds x fold_length + 1 observations up to D), and a
    horizon that stopped publishing before it, change nothing, not even the candidate count."""
    frame = synthetic_ensembles(seed=12, days=160)
    gone = frame[frame["date"] < START + pd.Timedelta(days=20)].drop_duplicates("date").assign(horizon=21)  # early only
    frame = pd.concat([frame, gone], ignore_index=True)
    n_folds, L = 3, 10
    days = sorted(frame["date"].unique())
    dates = days[-5:]
    args = {**SMALL, "n_folds": n_folds}
    whole = horizon_search(frame, dates=dates, **args)
    first = days[days.index(dates[0]) - n_folds * L - 1]
    cut = horizon_search(frame[frame["date"] >= first], dates=dates, **args)
    pd.testing.assert_frame_equal(cut, whole, check_exact=True)
    assert "21" not in ",".join(whole["horizons"])
    assert (whole["candidates"] == (2 ** 4 - 4 - 1) * len(search.THRESHOLDS) * len(COMBINATIONS)).all()
    assert_same(whole, reference.reference_search(frame, dates=dates, **args))


def zero_skill_ensembles(seed=3, horizons=(1, 2, 3, 5, 8, 13, 21, 34), days=260):
    """Forecasts that know nothing about the future: the day's price times independent noise."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=days, freq="D")
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, days)))
    n = days * len(horizons)
    p = np.repeat(price, len(horizons))
    noise = lambda: p * (1 + rng.normal(0, 0.01, n))  # noqa: E731
    return pd.DataFrame({"date": np.repeat(dates, len(horizons)), "horizon": np.tile(horizons, days), "price": p,
                         "forecast": noise(), "raw_mean": noise(), "raw_median": noise(), "low_variance": noise()})


def test_zero_skill_winners_are_not_significant_and_the_optimised_signal_falls_back():
    """The winner of thousands of zero-skill candidates shows a high mean fold Sharpe by selection
    alone; its deflated Sharpe ratio says it is luck on most dates, and the signal falls back."""
    frame = zero_skill_ensembles()
    dates = sorted(frame["date"].unique())[-60:]
    board = horizon_search(frame, dates=dates, periods=365, cost_bps=0.0)
    winners = board[board["rank"] == 1]
    assert len(winners) == 60 and (winners["candidates"] == (2 ** 8 - 8 - 1) * 24).all()
    assert winners["objective"].median() > 1.5  # what the raw objective would make you believe
    assert (winners["expected_max_sharpe"] > 0).all() and (winners["eligible"] > 1000).all()
    significant = winners["deflated_sharpe"] >= 0.95
    assert significant.mean() <= 0.1
    # the realised record of following the winner next day has no such Sharpe
    signals = daily_signals(frame[frame["date"].isin(dates)], threshold=0.1, winners=winners)["signals"]
    optimised = signals[signals["variant"] == "optimised"]
    assert (optimised["config_source"] == "not_significant").mean() >= 0.9
    assert set(optimised["config_source"]) <= {"search", "not_significant"}
