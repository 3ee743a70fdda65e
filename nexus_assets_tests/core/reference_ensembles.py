"""Slow, obviously-correct reference of the dynamic quantile ensemble (docs/ensembles.md).

Written line by line from the definition as a per-date loop in pandas, the way the Nexus v2 script works:
pivot, ``for i in range(L, len(X))``, ``window = X.iloc[i - L:i]``, ``DataFrame.rank(pct=True)``,
``sort_values``, ``.mean(axis=1)`` / ``.median(axis=1)``. It is the oracle of
``nexus_assets.core.ensembles`` and is never used outside the tests and benchmarks.

Nexus v2 mode orders models as the old script did, with pandas' default ``sort_values()``
(numpy's quicksort: not stable, ties in whatever order it leaves them, NaN scores last), over the
columns of the horizon's whole pivot (the ``roster``). Definitions Nexus v2 leaves open are the
ones documented in ``nexus_assets.core.ensembles``: a weighted score with any NaN rank is NaN; when
no combination has a score above -inf the first combination is used; point-in-time mode ranks
only the date's population (models with a forecast in the date's window), breaks ties by column
order (``sort_values(kind="stable")``) and scores with squared relative errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexus_assets.core.slicing import horizon_frames

# The spec's constants, restated here on purpose (a test checks the module uses the same).
LOOKBACK = 60
QUANTILES = (0.01, 0.02, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30)
AGGREGATORS = ("mean", "median")
STRATEGIES = {
    "Balanced": (0.25, 0.25, 0.25, 0.25),
    "Profit_Heavy": (0.0, 0.0, 0.7, 0.3),
    "Accuracy_Heavy": (0.7, 0.3, 0.0, 0.0),
    "Risk_Heavy": (0.1, 0.1, 0.1, 0.7),
    "MSE_Only": (1.0, 0.0, 0.0, 0.0),
}
PERCENTILES = (5, 25, 75, 95)


def reference_ensemble(slices, *, mode="point_in_time", lookback=LOOKBACK, dates=None, quantiles=QUANTILES,
                       roster=None, nexus_v2_sort=None):
    """Same contract as ``dynamic_quantile_ensemble``; one pandas loop iteration per date.

    ``nexus_v2_sort``: the ``sort_values`` kind of the nexus_v2 ordering; None (the old script's
    default sort) unless a test wants to show what another order would give."""
    frames = horizon_frames(slices)
    wanted = None if dates is None else set(pd.to_datetime(list(dates)))
    records = []
    for h, frame in frames.items():
        X, price, y = frame.forecasts, frame.price, frame.actual
        if mode == "nexus_v2":
            if roster is not None:  # the whole pivot's columns, sorted as pandas' pivot sorts them
                everyone = set(X.columns) | set(roster.loc[roster["horizon"] == h, "symbol"].astype(str))
                X = X.reindex(columns=sorted(everyone))
            records += nexus_v2_rows(h, X, y, lookback, quantiles, wanted, nexus_v2_sort)
        elif mode == "point_in_time":
            records += point_in_time_rows(h, X, price, y, lookback, quantiles, wanted)
        else:
            raise ValueError(mode)
    columns = ["date", "horizon", "forecast", "strategy", "aggregator", "quantile", "n_selected", "n_models",
               "best_child_forecast", "best_child", "p05", "p25", "p75", "p95", "mode"]
    if mode == "nexus_v2":
        columns.insert(3, "actual")
    frame = pd.DataFrame.from_records(records, columns=[c for c in columns if c != "mode"])
    frame["mode"] = mode
    frame = frame[columns]
    return frame.sort_values(["date", "horizon"]).reset_index(drop=True)


def split(window, lookback):
    n_fit = int(0.7 * lookback)
    n_val = lookback - n_fit
    if n_fit < 10 or n_val < 5:
        return window, window
    return window.iloc[:n_fit], window.iloc[n_fit:]


def ranks_and_scores(metrics, kind="stable"):
    """Per strategy, the models ordered by weighted percentile rank (lower is better, NaN last).

    ``kind=None``: pandas' default sort (quicksort), as Nexus v2's ``scores.sort_values()``."""
    ranks = pd.DataFrame({
        "mse": metrics["mse"].rank(pct=True),
        "acc": metrics["dir_acc"].rank(pct=True, ascending=False),
        "pnl": metrics["pnl"].rank(pct=True, ascending=False),
        "shp": metrics["sharpe"].rank(pct=True, ascending=False),
    })
    orderings = {}
    for name, (w_mse, w_acc, w_pnl, w_shp) in STRATEGIES.items():
        score = w_mse * ranks["mse"] + w_acc * ranks["acc"] + w_pnl * ranks["pnl"] + w_shp * ranks["shp"]
        ordered = score.sort_values() if kind is None else score.sort_values(kind=kind, na_position="last")
        orderings[name] = list(ordered.index)
    return orderings


def sharpe_of(strat):
    sd = strat.std(ddof=1)
    sharpe = strat.mean() / sd * np.sqrt(252)
    return sharpe.where(sd.notna() & (sd != 0), 0.0)


def quality(E, A, base=None):
    """Ensemble quality on the validate rows: spec step 4 (``base=None``) or point-in-time."""
    if base is None:
        err = (E - A) ** 2
        prev = A.shift(1)
        mkt = (A - prev) / prev
        sig = np.sign(E - prev)
        actual_dir = np.sign(mkt)
    else:
        err = ((E - A) / A) ** 2
        mkt = A / base - 1
        sig = np.sign(E - base)
        actual_dir = np.sign(A - base)
    mse = err.mean()
    hits = (sig == actual_dir).mean()
    rets = sig * mkt
    pnl = rets.sum()
    cum = (1 + rets).cumprod()
    peak = cum.cummax()
    dd = ((cum - peak) / peak).min()
    return 10 * pnl + 10 * hits + 5 * dd - mse


def choose(orderings, val, A_val, M, quantiles, base=None):
    """Iterate strategies, aggregators, quantiles in order; first strictly greater score wins."""
    best_score, best, first = -np.inf, None, None
    for name in STRATEGIES:
        ordered = orderings[name]
        for agg in AGGREGATORS:
            for q in quantiles:
                n = max(1, int(M * q))
                top = ordered[:n]
                E = val[top].mean(axis=1) if agg == "mean" else val[top].median(axis=1)
                score = quality(E, A_val, base)
                if first is None:
                    first = (name, agg, q, n, top)
                if score > best_score:
                    best_score, best = score, (name, agg, q, n, top)
    return best if best is not None else first


def output_row(date, h, X_row, choice, child, M, extra):
    name, agg, q, n, top = choice
    picked = X_row[top]
    forecast = picked.mean() if agg == "mean" else picked.median()
    values = picked.to_numpy(dtype="float64")
    if np.isnan(values).all():
        pct = [np.nan] * 4
    else:
        pct = list(np.nanpercentile(values, PERCENTILES))
    return {"date": date, "horizon": h, "forecast": forecast, "strategy": name, "aggregator": agg, "quantile": q,
            "n_selected": n, "n_models": M, "best_child_forecast": X_row[child], "best_child": child,
            "p05": pct[0], "p25": pct[1], "p75": pct[2], "p95": pct[3], **extra}


def single_model_row(date, h, value, symbol, extra):
    return {"date": date, "horizon": h, "forecast": value, "strategy": "single_model", "aggregator": "none",
            "quantile": 1.0, "n_selected": 1, "n_models": 1, "best_child_forecast": value, "best_child": symbol,
            "p05": value, "p25": value, "p75": value, "p95": value, **extra}


def nexus_v2_rows(h, X, y, L, quantiles, wanted, kind=None):
    M = X.shape[1]
    rows = []
    if M == 1:
        for i in range(len(X)):
            if wanted is None or X.index[i] in wanted:
                rows.append(single_model_row(X.index[i], h, X.iloc[i, 0], X.columns[0], {"actual": y.iloc[i]}))
        return rows
    for i in range(L, len(X)):
        if wanted is not None and X.index[i] not in wanted:
            continue
        window = X.iloc[i - L:i]
        A_window = y.iloc[i - L:i]
        fit, val = split(window, L)
        A_fit, A_val = split(A_window, L)
        # step 2: per-model metrics on the fit rows
        err = fit.sub(A_fit, axis=0)
        mse = (err ** 2).mean()
        prev = A_fit.shift(1)
        mkt = (A_fit - prev) / prev
        pred_dir = np.sign(fit.sub(prev, axis=0))
        dir_acc = pred_dir.eq(np.sign(mkt), axis=0).mean()
        strat = pred_dir.mul(mkt, axis=0)
        pnl = strat.sum()
        metrics = pd.DataFrame({"mse": mse, "dir_acc": dir_acc, "pnl": pnl, "sharpe": sharpe_of(strat)})
        # steps 3 and 4, ordered with pandas' default sort, as the old script
        orderings = ranks_and_scores(metrics, kind=kind)
        choice = choose(orderings, val, A_val, M, quantiles)
        # step 5: best_child from the ordering of the last strategy evaluated (MSE_Only)
        child = orderings[list(STRATEGIES)[-1]][0]
        rows.append(output_row(X.index[i], h, X.iloc[i], choice, child, M, {"actual": y.iloc[i]}))
    return rows


def point_in_time_rows(h, X, price, y, L, quantiles, wanted):
    rows = []
    for i in range(len(X)):
        date = X.index[i]
        if wanted is not None and date not in wanted:
            continue
        # usable training pairs: rows t with t + h <= i; the window is the last L of them
        last = i - h
        if last - L + 1 < 0:
            continue
        window = X.iloc[last - L + 1:last + 1]
        known = [c for c in X.columns if window[c].notna().any()]  # the date's population
        M = len(known)
        if M == 0:
            continue
        if M == 1:
            rows.append(single_model_row(date, h, X.iloc[i][known[0]], known[0], {}))
            continue
        window = window[known]
        fit, val = split(window, L)
        A_fit, A_val = split(y.iloc[last - L + 1:last + 1], L)
        base_fit, base_val = split(price.iloc[last - L + 1:last + 1], L)
        spe = (fit.sub(A_fit, axis=0).div(A_fit, axis=0)) ** 2
        pred_dir = np.sign(fit.sub(base_fit, axis=0))
        actual_dir = np.sign(A_fit - base_fit)
        ret = A_fit / base_fit - 1
        strat = pred_dir.mul(ret, axis=0)
        metrics = pd.DataFrame({
            "mse": spe.mean(),
            "dir_acc": pred_dir.eq(actual_dir, axis=0).mean(),
            "pnl": strat.sum(),
            "sharpe": sharpe_of(strat),
        })
        orderings = ranks_and_scores(metrics)
        choice = choose(orderings, val, A_val, M, quantiles, base=base_val)
        child = choice[4][0]  # the winner's first model (the Nexus v2 bug is not reproduced)
        rows.append(output_row(date, h, X.iloc[i][known], choice, child, M, {}))
    return rows
