"""Seeded, realistic stand-ins for the tables a dashboard page reads (columns of the issue-4 design).

:func:`synthetic_history` makes one asset's whole history (``horizon_ensembles`` rows, the
signals of both variants, the winner of each day's horizon search) and :func:`page_inputs` cuts
the stored tables "as of D" out of it the way the pipeline stores them: ``signals``/``slopes``/
``leaderboard``/``ensembles`` rows of D, ``daily`` and ``trades`` up to D (an unfinished trade
marked at D's price, status ``open``), ``statistics`` of D. The numbers follow the design's
definitions (pairwise slopes, the follow-the-signal simulation) closely enough to look and behave
like the real thing; they are not the reference for those computations (``core/signals.py`` and
``core/metrics.py`` are).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexus_assets.core.dashboard import DataStatus, PageInputs

HORIZONS = (1, 3, 5, 8, 13)
STRATEGIES = ("Balanced", "Accuracy_Focus", "PnL_Focus", "Sharpe_Focus", "MSE_Only")
QUANTILES = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
COMBINATIONS = {"ensemble": "forecast", "mean": "raw_mean", "median": "raw_median", "low_variance": "low_variance"}
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_NAME = '"><script>alert("name")</script><b onmouseover=alert(2)>S&P</b>'


@dataclass
class History:
    """One asset's whole synthetic history; :func:`page_inputs` slices it as of a date."""

    asset: str
    display_name: str
    category: str
    calendar: str
    dates: pd.DatetimeIndex
    price: np.ndarray
    ensembles: pd.DataFrame
    signals: pd.DataFrame
    slopes: pd.DataFrame
    winners: dict[int, tuple[str, float, str]]  # observation -> (horizons, threshold, combination)
    cost: float


def _dates(start: dt.date, days: int, calendar: str) -> pd.DatetimeIndex:
    if calendar == "crypto":
        return pd.date_range(start, periods=days, freq="D")
    return pd.bdate_range(start, periods=days)


def synthetic_history(*, asset: str = "9001_SP500", display_name: str = "S&P 500 (sandbox)",
                      category: str = "Equity Index", calendar: str = "exchange", start: dt.date = dt.date(2018, 1, 1),
                      days: int = 250, horizons: tuple[int, ...] = HORIZONS, warmup: int = 60, search_warmup: int = 120,
                      models: int = 68, seed: int = 7, start_price: float = 2700.0, cost_bps: float = 1.0,
                      symbols: tuple[str, ...] | None = None) -> History:
    """One asset's synthetic history over ``days`` observations of its calendar from ``start``."""
    rng = np.random.default_rng(seed)
    dates = _dates(start, days, calendar)
    price = start_price * np.exp(np.cumsum(rng.normal(0.0003, 0.011, days)))
    drift = np.zeros(days)
    for i in range(1, days):
        drift[i] = 0.93 * drift[i - 1] + rng.normal(0, 0.004)
    if symbols is None:
        own = tuple(f"{asset.split('_')[0]}.0_{h}_{k:03d}" for h in horizons for k in range(models))
        by_horizon = {h: [s for s in own if f"_{h}_" in s] for h in horizons}
    else:  # every horizon picks from the given symbols, the first most often
        by_horizon = {h: list(symbols) for h in horizons}
    rows = []
    for i in range(days):
        for h in horizons:
            if i < warmup + h:
                continue
            centre = price[i] * (1 + drift[i] * np.sqrt(h) + rng.normal(0, 0.002 * np.sqrt(h)))
            spread = price[i] * 0.004 * np.sqrt(h) * (1 + rng.random())
            pool = by_horizon[h]
            weights = 1.0 / np.arange(1, len(pool) + 1) ** 1.3
            best = pool[rng.choice(len(pool), p=weights / weights.sum())]
            rows.append({
                "date": dates[i], "horizon": h, "forecast": centre,
                "strategy": STRATEGIES[rng.integers(len(STRATEGIES))],
                "aggregator": "mean" if rng.random() < 0.6 else "median",
                "quantile": QUANTILES[rng.integers(len(QUANTILES))],
                "n_selected": int(rng.integers(1, 28)), "n_models": models,
                "best_child_forecast": centre + rng.normal(0, spread / 3),
                "p05": centre - 1.645 * spread, "p25": centre - 0.674 * spread,
                "p75": centre + 0.674 * spread, "p95": centre + 1.645 * spread,
                "mode": "point_in_time", "best_child": best, "price": price[i],
                "raw_mean": centre + rng.normal(0, spread / 4), "raw_median": centre + rng.normal(0, spread / 4),
                "low_variance": centre + rng.normal(0, spread / 5),
            })
    ensembles = pd.DataFrame(rows, columns=[
        "date", "horizon", "forecast", "strategy", "aggregator", "quantile", "n_selected", "n_models",
        "best_child_forecast", "p05", "p25", "p75", "p95", "mode", "best_child", "price", "raw_mean",
        "raw_median", "low_variance",
    ])
    ensembles["date"] = ensembles["date"].astype("datetime64[ns]")
    ensembles["horizon"] = ensembles["horizon"].astype("int64")
    winners: dict[int, tuple[str, float, str]] = {}
    configs = [(",".join(map(str, c)), t, comb) for n in range(2, len(horizons) + 1)
               for c in itertools.combinations(horizons, n) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
               for comb in COMBINATIONS]
    current = None
    for i in range(search_warmup, days):
        if current is None or rng.random() < 0.05:
            current = configs[rng.integers(len(configs))]
        winners[i] = current
    signals, slopes = _signals(dates, ensembles, winners, threshold=0.1)
    return History(asset, display_name, category, calendar, dates, price, ensembles, signals, slopes, winners,
                   cost_bps / 1e4)


SIGNAL_COLUMNS = ["date", "variant", "combination", "horizons", "threshold", "n_horizons", "pairs", "bullish",
                  "bearish", "bullish_prob", "bearish_prob", "net_prob", "mean_drift", "strength", "tier",
                  "agreement_ratio", "signal", "position", "weighted_net_prob", "weighted_signal", "price",
                  "config_source", "deflated_sharpe"]
SLOPE_COLUMNS = ["date", "variant", "horizon_short", "horizon_long", "forecast_short", "forecast_long", "slope",
                 "weight", "direction"]


def _label(net: float, threshold: float) -> tuple[str, int]:
    if net > threshold:
        return "BULLISH", 1
    if net < -threshold:
        return "BEARISH", -1
    return "NEUTRAL", 0


def _tier(strength: float) -> str:
    if strength == 0:
        return "none"
    return "weak" if strength < 0.4 else ("moderate" if strength < 0.7 else "strong")


def _signals(dates: pd.DatetimeIndex, ensembles: pd.DataFrame, winners: dict, threshold: float):
    signal_rows, slope_rows = [], []
    grouped = {d: g for d, g in ensembles.groupby("date", sort=True)}
    for i, day in enumerate(dates):
        day_rows = grouped.get(day)
        if day_rows is None or len(day_rows) < 2:
            continue
        price = float(day_rows["price"].iloc[0])
        winner = winners.get(i)
        variants = [("raw", sorted(day_rows["horizon"].tolist()), threshold, "ensemble", "catalog")]
        if winner is None:
            variants.append(("optimised", variants[0][1], threshold, "ensemble", "fallback"))
        else:
            variants.append(("optimised", [int(h) for h in winner[0].split(",")], winner[1], winner[2], "search"))
        for variant, wanted, thr, combination, source in variants:
            column = COMBINATIONS[combination]
            have = day_rows[day_rows["horizon"].isin(wanted)].sort_values("horizon")
            forecast = dict(zip(have["horizon"].astype(int), have[column].astype(float)))
            hs = sorted(forecast)
            pairs = [(a, b) for a, b in itertools.combinations(hs, 2)]
            slopes = [forecast[b] - forecast[a] for a, b in pairs]
            bull = sum(s > 0 for s in slopes)
            bear = sum(s < 0 for s in slopes)
            n = len(pairs)
            net = (bull - bear) / n if n else 0.0
            weights = [b - a for a, b in pairs]
            wnet = (sum(w * np.sign(s) for w, s in zip(weights, slopes)) / sum(weights)) if n else 0.0
            label, position = _label(net, thr)
            signal_rows.append({
                "date": day, "variant": variant, "combination": combination, "horizons": ",".join(map(str, hs)),
                "threshold": float(thr), "n_horizons": len(hs), "pairs": n, "bullish": bull, "bearish": bear,
                "bullish_prob": bull / n if n else 0.0, "bearish_prob": bear / n if n else 0.0, "net_prob": net,
                "mean_drift": float(np.mean(slopes)) if n else 0.0, "strength": abs(net), "tier": _tier(abs(net)),
                "agreement_ratio": max(bull, bear) / n if n else 0.0, "signal": label, "position": position,
                "weighted_net_prob": float(wnet), "weighted_signal": _label(float(wnet), thr)[0], "price": price,
                "config_source": source, "deflated_sharpe": WINNER_DSR if source == "search" else np.nan,
            })
            for (a, b), s, w in zip(pairs, slopes, weights):
                slope_rows.append({"date": day, "variant": variant, "horizon_short": a, "horizon_long": b,
                                   "forecast_short": forecast[a], "forecast_long": forecast[b], "slope": s,
                                   "weight": float(w), "direction": int(np.sign(s))})
    signals = pd.DataFrame(signal_rows, columns=SIGNAL_COLUMNS)
    slopes = pd.DataFrame(slope_rows, columns=SLOPE_COLUMNS)
    for frame in (signals, slopes):
        frame["date"] = frame["date"].astype("datetime64[ns]")
    for column in ("n_horizons", "pairs", "bullish", "bearish", "position"):
        signals[column] = signals[column].astype("int64")
    for column in ("horizon_short", "horizon_long", "direction"):
        slopes[column] = slopes[column].astype("int64")
    return signals, slopes


DAILY_COLUMNS = ["date", "signal", "price", "price_known", "net_prob", "position", "asset_return", "strategy_return",
                 "cost", "equity", "drawdown", "buy_and_hold"]
TRADE_COLUMNS = ["signal", "basis", "trade", "direction", "entry_date", "entry_price", "exit_date", "exit_price",
                 "status", "holding_observations", "holding_days", "gross_return", "cost", "net_return"]
STAT_COLUMNS = ["date", "signal", "basis", "statistic", "value", "n", "min_n", "sufficient", "definition"]
BOARD_COLUMNS = ["date", "rank", "horizons", "n_horizons", "threshold", "combination", "objective", "fold_sharpes",
                 "n_folds", "trades", "mean_daily_return", "fold_start", "fold_end", "candidates", "method",
                 "eligible", "span_sharpe", "expected_max_sharpe", "deflated_sharpe"]
WINNER_DSR = 0.97  # a winner the optimised signal follows


def _positions(history: History, variant: str, upto: int) -> tuple[np.ndarray, np.ndarray]:
    sig = history.signals[history.signals["variant"] == variant]
    index = history.dates.get_indexer(sig["date"])
    position = np.zeros(upto + 1)
    net = np.zeros(upto + 1)
    keep = index <= upto
    position[index[keep]] = sig["position"].to_numpy()[keep]
    net[index[keep]] = sig["net_prob"].to_numpy()[keep]
    return position, net


def _daily(history: History, variant: str, upto: int) -> pd.DataFrame:
    p = history.price[: upto + 1]
    pos, net = _positions(history, variant, upto)
    c = history.cost
    asset_return = np.r_[np.nan, p[1:] / p[:-1] - 1]
    cost = c * np.abs(np.diff(np.r_[0.0, pos]))
    strategy = np.r_[0.0, pos[:-1] * asset_return[1:]] - cost
    equity = np.cumprod(1 + strategy)
    return pd.DataFrame({
        "date": history.dates[: upto + 1].astype("datetime64[ns]"), "signal": variant, "price": p, "net_prob": net,
        "position": pos.astype("int64"), "asset_return": asset_return, "strategy_return": strategy, "cost": cost,
        "equity": equity, "drawdown": equity / np.maximum.accumulate(equity) - 1, "buy_and_hold": p / p[0],
        "price_known": True,
    }, columns=DAILY_COLUMNS)


def _trades(history: History, variant: str, upto: int, basis: str) -> list[dict]:
    pos, _ = _positions(history, variant, upto)
    p, dates, c = history.price, history.dates, history.cost
    shift = 1 if basis == "legacy" else 0  # the old pipeline traded at a later price
    out, number, a = [], 0, None
    for i in range(upto + 2):
        current = pos[i] if i <= upto else None
        if a is not None and (current is None or current != pos[a]):
            side = 1 if pos[a] > 0 else -1
            closed = current is not None
            b = i if closed else upto
            ea, eb = min(a + shift, upto), min(b + shift, upto)
            if basis == "legacy" and not closed:
                a = None
            else:
                gross = side * (p[eb] / p[ea] - 1)
                cost = 2 * c if closed else c
                number += 1
                out.append({
                    "signal": variant, "basis": basis, "trade": number, "direction": "long" if side > 0 else "short",
                    "entry_date": dates[a], "entry_price": p[ea], "exit_date": dates[b], "exit_price": p[eb],
                    "status": "closed" if closed else "open", "holding_observations": b - a,
                    "holding_days": (dates[b] - dates[a]).days, "gross_return": gross, "cost": cost,
                    "net_return": gross - cost,
                })
                a = None
        if current is not None and current != 0 and a is None:
            a = i
    return out


def _statistics(daily: pd.DataFrame, trades: list[dict], variant: str, day: pd.Timestamp, periods: int) -> list[dict]:
    r = daily["strategy_return"].to_numpy()
    n = len(r)
    sd = r.std(ddof=1) if n > 1 else np.nan
    downside = np.sqrt(np.mean(np.minimum(r, 0) ** 2)) if n else np.nan
    equity = daily["equity"].to_numpy()
    years = n / periods
    annual = equity[-1] ** (1 / years) - 1 if n else np.nan
    max_dd = float(daily["drawdown"].min()) if n else np.nan
    closed = [t for t in trades if t["status"] == "closed" and t["basis"] == "point_in_time"]
    wins = [t["net_return"] for t in closed if t["net_return"] > 0]
    losses = [t["net_return"] for t in closed if t["net_return"] <= 0]
    k = len(closed)
    with np.errstate(all="ignore"):
        pit = [
            ("sharpe", np.mean(r) / sd * np.sqrt(periods) if sd else np.nan, n, 60, "empyrical.sharpe_ratio"),
            ("sortino", np.mean(r) / downside * np.sqrt(periods) if downside else np.nan, n, 60, "empyrical.sortino_ratio"),
            ("max_drawdown", max_dd, n, 60, "empyrical.max_drawdown"),
            ("annual_return", annual, n, 60, "empyrical.annual_return"),
            ("annual_volatility", sd * np.sqrt(periods), n, 60, "empyrical.annual_volatility"),
            ("calmar", annual / -max_dd if max_dd < 0 else np.nan, n, 60, "empyrical.calmar_ratio"),
            ("value_at_risk", float(np.percentile(r, 5)) if n else np.nan, n, 60, "empyrical.value_at_risk"),
            ("win_rate", len(wins) / k if k else np.nan, k, 10, "wins / closed trades"),
            ("profit_factor", sum(wins) / -sum(losses) if losses and sum(losses) < 0 else np.nan, k, 10,
             "gross profit / gross loss"),
            ("average_holding_days", np.mean([t["holding_days"] for t in closed]) if k else np.nan, k, 10,
             "mean holding_days of closed trades"),
            ("trades", float(k), k, 0, "closed trades"),
        ]
        pct = [t["net_return"] * 100 for t in closed]
        legacy = [
            ("total_return_pct", float(sum(pct)), k, 3, "sum of trade returns in percent"),
            ("win_rate", len(wins) / k if k else np.nan, k, 3, "wins / trades"),
            ("sharpe", np.mean(pct) / np.std(pct, ddof=1) * np.sqrt(252 / max(1, np.mean([t["holding_days"] for t in closed])))
             if k > 2 else np.nan, k, 3, "mean / std of trade % x sqrt(252 / average holding days)"),
        ]
    out = []
    for basis, stats in (("point_in_time", pit), ("legacy", legacy)):
        for name, value, size, minimum, definition in stats:
            out.append({"date": day, "signal": variant, "basis": basis, "statistic": name, "value": float(value),
                        "n": int(size), "min_n": int(minimum), "sufficient": bool(size >= minimum),
                        "definition": definition})
    return out


def _leaderboard(history: History, i: int, rng: np.random.Generator) -> pd.DataFrame:
    day = history.dates[i]
    if i not in history.winners:
        return pd.DataFrame({c: [] for c in BOARD_COLUMNS}).astype({"date": "datetime64[ns]", "fold_start": "datetime64[ns]",
                                                                     "fold_end": "datetime64[ns]"})
    first = history.winners[i]
    rows = []
    for rank in range(1, 21):
        horizons, threshold, combination = first if rank == 1 else (
            ",".join(map(str, sorted(rng.choice(HORIZONS, size=int(rng.integers(2, 5)), replace=False).tolist()))),
            float(rng.choice([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])), list(COMBINATIONS)[rng.integers(4)])
        sharpes = rng.normal(1.5 - rank * 0.05, 0.4, 5)
        rows.append({
            "date": day, "rank": rank, "horizons": horizons, "n_horizons": horizons.count(",") + 1,
            "threshold": threshold, "combination": combination, "objective": 2.2 - rank * 0.07,
            "fold_sharpes": ",".join(f"{s:.6f}" for s in sharpes), "n_folds": 5, "trades": int(rng.integers(10, 40)),
            "mean_daily_return": float(rng.normal(0.0006, 0.0002)), "fold_start": history.dates[i - 150],
            "fold_end": history.dates[i - 1], "candidates": 624, "method": "exhaustive", "eligible": 590,
            "span_sharpe": 2.1 - rank * 0.07, "expected_max_sharpe": 1.4,
            "deflated_sharpe": WINNER_DSR if rank == 1 else 0.9 - rank * 0.02,
        })
    return pd.DataFrame(rows, columns=BOARD_COLUMNS)


def page_inputs(history: History, day: dt.date, *, status: DataStatus | None = None, window: int = 30,
                display_name: str | None = None, seed: int = 0) -> PageInputs:
    """The stored tables of ``day`` (one of ``history.dates``), as the pipeline would hand them over."""
    stamp = pd.Timestamp(day)
    i = int(history.dates.get_loc(stamp))
    periods = 365 if history.calendar == "crypto" else 252
    daily = [_daily(history, v, i) for v in ("raw", "optimised")]
    trades = [t for v in ("raw", "optimised") for basis in ("point_in_time", "legacy") for t in _trades(history, v, i, basis)]
    stats = [s for v, d in zip(("raw", "optimised"), daily)
             for s in _statistics(d, [t for t in trades if t["signal"] == v], v, stamp, periods)]
    ens = history.ensembles
    first_window = history.dates[max(0, i - window + 1)]
    status = status or DataStatus(
        partition_key=f"{history.asset}|{day.isoformat()}", source="sandbox", contract_version="1.0",
        upstream_watermark=history.dates[-1].date(), freshness="fresh", freshness_detail="fresh through "
        + history.dates[-1].date().isoformat(), rows=5 * 68 + 5, models=68, day_status="published",
    )
    trades_frame = pd.DataFrame(trades, columns=TRADE_COLUMNS)
    for column in ("entry_date", "exit_date"):
        trades_frame[column] = trades_frame[column].astype("datetime64[ns]")
    return PageInputs(
        asset=history.asset, display_name=display_name or history.display_name, category=history.category,
        calendar=history.calendar, date=day,
        signals=history.signals[history.signals["date"] == stamp].reset_index(drop=True),
        slopes=history.slopes[history.slopes["date"] == stamp].reset_index(drop=True),
        statistics=pd.DataFrame(stats, columns=STAT_COLUMNS),
        trades=trades_frame,
        daily=pd.concat(daily, ignore_index=True),
        leaderboard=_leaderboard(history, i, np.random.default_rng([seed, i])),
        ensembles=ens[ens["date"] == stamp].reset_index(drop=True),
        ensemble_window=ens[(ens["date"] >= first_window) & (ens["date"] <= stamp)].reset_index(drop=True),
        status=status,
        previous_date=history.dates[i - 1].date() if i else None,
        next_date=history.dates[i + 1].date() if i + 1 < len(history.dates) else None,
    )
