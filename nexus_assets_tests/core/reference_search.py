"""Slow, obviously-correct reference of the walk-forward horizon search (docs/horizon-search.md).

Written from the definitions in ``nexus_assets.core.search`` as plain loops: for each date ``D``
the rows dated after ``D`` are dropped first, then every candidate configuration is simulated
observation by observation in Python (pairs, slopes, positions, returns), split into folds and
scored; the leaderboard is a sort of the eligible candidates. It is the oracle of the vectorised
search and is never used outside the tests and benchmarks.
"""

from __future__ import annotations

import itertools
import math
import statistics

import pandas as pd

# The definitions' constants, restated here on purpose (a test checks the module uses the same).
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
COMBINATIONS = {"ensemble": "forecast", "mean": "raw_mean", "median": "raw_median", "low_variance": "low_variance"}
COLUMNS = ["date", "rank", "horizons", "n_horizons", "threshold", "combination", "objective", "fold_sharpes",
           "n_folds", "trades", "mean_daily_return", "fold_start", "fold_end", "candidates", "method", "eligible",
           "span_sharpe", "expected_max_sharpe", "deflated_sharpe"]


def reference_search(ensembles, *, dates=None, periods, cost_bps, thresholds=THRESHOLDS, combinations=COMBINATIONS,
                     n_folds=5, fold_length=30, min_folds=2, min_trades=10, top=20, max_exhaustive_horizons=12,
                     beam_width=32):
    """Same contract as ``horizon_search``; one loop iteration per date, fully recomputed."""
    frame = ensembles.assign(date=pd.to_datetime(ensembles["date"]))
    if not isinstance(combinations, dict):  # names of COMBINATIONS
        combinations = {name: COMBINATIONS[name] for name in combinations}
    wanted = sorted(frame["date"].unique()) if dates is None else sorted(set(pd.to_datetime(list(dates))))
    records = []
    for D in wanted:
        records += leaderboard_on(frame[frame["date"] <= D], pd.Timestamp(D), periods=periods, cost=cost_bps / 1e4,
                                  thresholds=sorted(thresholds), combinations=combinations, n_folds=n_folds,
                                  L=fold_length, min_folds=min_folds, min_trades=min_trades, top=top,
                                  max_exhaustive=max_exhaustive_horizons, beam_width=beam_width)
    out = pd.DataFrame.from_records(records, columns=COLUMNS)
    return out.astype({"date": "datetime64[ns]", "fold_start": "datetime64[ns]", "fold_end": "datetime64[ns]"})


def leaderboard_on(rows, D, *, periods, cost, thresholds, combinations, n_folds, L, min_folds, min_trades, top,
                   max_exhaustive, beam_width):
    """The leaderboard records of date ``D`` from the rows dated on or before it."""
    days, prices = observations(rows)
    if D not in days:
        return []
    d = days.index(D)
    k = min(n_folds, d // L)
    if k < min_folds:
        return []
    since = days[max(d - k * L - 1, 0)]  # the search window: the observation before the first fold .. D
    horizons = sorted(int(h) for h in rows.loc[pd.to_datetime(rows["date"]) >= since, "horizon"].unique())
    value = forecast_values(rows, combinations.values())
    history = days[:d]  # the returns r_0 .. r_{d-1} need the positions at t_0 .. t_{d-1}

    def score(threshold, net):
        positions = [position(p, threshold) for p in net]
        returns = daily_returns(positions, [prices[t] for t in history], cost)
        first = d - k * L
        sharpes = [sharpe(returns[s : s + L], periods) for s in range(first, d, L)]
        return {"objective": sum(sharpes) / k, "sharpes": sharpes, "trades": entries(positions, first, d),
                "mean_daily_return": math.fsum(returns[first:d]) / (k * L), "span": returns[first:d]}

    evaluated = []  # (subset, threshold, combination name, result)

    def evaluate(subset):
        for name, column in combinations.items():
            net = net_probs(value, history, subset, column)
            for threshold in thresholds:
                evaluated.append((subset, threshold, name, score(threshold, net)))

    def eligible(result):
        return result["trades"] >= min_trades

    if len(horizons) <= max_exhaustive:
        method = "exhaustive"
        for size in range(2, len(horizons) + 1):
            for subset in itertools.combinations(horizons, size):
                evaluate(subset)
    else:
        method = "beam"
        level = list(itertools.combinations(horizons, 2))
        for size in range(2, len(horizons) + 1):
            start = len(evaluated)
            for subset in level:
                evaluate(subset)
            if size == len(horizons):
                break
            best = {subset: -math.inf for subset in level}
            for subset, _, _, result in evaluated[start:]:
                if eligible(result):
                    best[subset] = max(best[subset], result["objective"])
            beam = sorted(level, key=lambda s: (-best[s], s))[:beam_width]
            level = sorted({tuple(sorted(s + (h,))) for s in beam for h in horizons if h not in s})
    names = list(combinations)
    ranked = sorted(
        (e for e in evaluated if eligible(e[3])),
        key=lambda e: (-e[3]["objective"], len(e[0]), e[1], names.index(e[2]), e[0]),
    )
    # selection bias: the deflated Sharpe ratio of each ranked configuration against the expected
    # maximum Sharpe of the eligible trials (Bailey and Lopez de Prado, 2014), per observation
    trial_sharpes = [sharpe(e[3]["span"], 1) for e in ranked]
    n_trials = len(trial_sharpes)
    variance = statistics.variance(trial_sharpes) if n_trials >= 2 else 0.0
    normal = statistics.NormalDist()
    gamma = 0.5772156649015329
    benchmark = (math.sqrt(variance) * ((1 - gamma) * normal.inv_cdf(1 - 1 / n_trials)
                                        + gamma * normal.inv_cdf(1 - 1 / (n_trials * math.e))) if n_trials >= 2 else 0.0)

    def deflated(span):
        mean = sum(span) / len(span)
        m2 = sum((x - mean) ** 2 for x in span) / len(span)
        if m2 <= 0:
            return math.nan, 0.0
        sr = mean / math.sqrt(m2 * len(span) / (len(span) - 1))
        skew = sum((x - mean) ** 3 for x in span) / len(span) / m2 ** 1.5
        kurtosis = sum((x - mean) ** 4 for x in span) / len(span) / m2 ** 2
        spread = 1 - skew * sr + (kurtosis - 1) / 4 * sr * sr
        if spread <= 0:
            return math.nan, sr
        return normal.cdf((sr - benchmark) * math.sqrt(len(span) - 1) / math.sqrt(spread)), sr

    return [
        {"date": D, "rank": rank, "horizons": ",".join(str(h) for h in subset), "n_horizons": len(subset),
         "threshold": threshold, "combination": name, "objective": result["objective"],
         "fold_sharpes": ",".join(f"{s:.6f}" for s in result["sharpes"]), "n_folds": k, "trades": result["trades"],
         "mean_daily_return": result["mean_daily_return"], "fold_start": days[d - k * L], "fold_end": days[d - 1],
         "candidates": len(evaluated), "method": method, "eligible": n_trials,
         "span_sharpe": deflated(result["span"])[1] * math.sqrt(periods),
         "expected_max_sharpe": benchmark * math.sqrt(periods), "deflated_sharpe": deflated(result["span"])[0]}
        for rank, (subset, threshold, name, result) in enumerate(ranked[:top], start=1)
    ]


def observations(rows):
    """The observation dates (ascending) and their price: the first non-NaN price of the date, if finite."""
    prices = {}
    for date, day in rows.groupby("date", sort=True):
        known = day["price"].dropna()  # in row order
        if len(known) and math.isfinite(known.iloc[0]):
            prices[date] = float(known.iloc[0])
    return sorted(prices), prices


def forecast_values(rows, columns):
    """{(date, horizon, column): forecast} for every forecast that exists (not NaN)."""
    value = {}
    for row in rows.itertuples(index=False):
        for column in columns:
            x = getattr(row, column)
            if not pd.isna(x):
                value[(pd.Timestamp(row.date), int(row.horizon), column)] = float(x)
    return value


def net_probs(value, days, subset, column):
    """net_prob of the subset's pairs at each date (0 where no pair has both forecasts)."""
    out = []
    for t in days:
        bullish = bearish = pairs = 0
        for short, long in itertools.combinations(sorted(subset), 2):
            if (t, short, column) in value and (t, long, column) in value:
                slope = value[(t, long, column)] - value[(t, short, column)]
                pairs += 1
                bullish += slope > 0
                bearish += slope < 0
        out.append((bullish - bearish) / pairs if pairs else 0.0)
    return out


def position(net_prob, threshold):
    return 1 if net_prob > threshold else -1 if net_prob < -threshold else 0


def daily_returns(positions, prices, cost):
    """r_0 = -c |pos_0|; r_i = pos_{i-1} (p_i / p_{i-1} - 1) - c |pos_i - pos_{i-1}|."""
    returns = [-cost * abs(positions[0])]
    for i in range(1, len(positions)):
        move = prices[i] / prices[i - 1] - 1
        returns.append(positions[i - 1] * move - cost * abs(positions[i] - positions[i - 1]))
    return returns


def entries(positions, first, end):
    """Observations in ``first .. end - 1`` where the position changes to a non-zero one."""
    return sum(1 for i in range(first, end)
               if positions[i] != 0 and positions[i] != (positions[i - 1] if i > 0 else 0))


def sharpe(returns, periods):
    """mean / sample std * sqrt(periods); 0 when every return is equal."""
    if len(set(returns)) == 1:
        return 0.0
    n = len(returns)
    mean = math.fsum(returns) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in returns) / (n - 1))
    return mean / std * math.sqrt(periods)
