"""Slow, obviously-correct reference of the metrics tables as of ONE date (docs/metrics.md).

Written from the definitions as plain loops over the rows dated up to the as-of date ``D`` (never
looking at a later row): a day-by-day account of the position, a trade book that opens and closes
trades as the position changes, the return statistics by calling empyrical directly, the trade
and legacy figures with Python sums. It is the oracle of ``nexus_assets.core.metrics.record``
(which simulates each signal once and slices it per date) and is never used outside the tests.
The definitions are the ones documented in ``nexus_assets.core.trading`` and
``nexus_assets.core.metrics``; the ``definition`` column is not reproduced.
"""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd

PERIODS = {"exchange": 252, "crypto": 365}
MIN = {"returns": 60, "exact": 1, "trades": 10, "signals": 20, "legacy": 3}


def reference_tables(signals, *, as_of, calendar, cost_bps, horizons):
    """``record(...)[as_of]`` without the ``definition`` column, one loop iteration per row."""
    day = pd.Timestamp(as_of)
    periods = PERIODS[calendar]
    c = cost_bps / 1e4
    steps = sorted({1, *horizons})
    statistics, trades, daily = [], [], []
    for signal in ("raw", "optimised"):
        rows = signals[(signals["variant"] == signal) & (pd.to_datetime(signals["date"]) <= day)]
        rows = rows.assign(date=pd.to_datetime(rows["date"])).sort_values("date")
        if rows.empty:
            continue
        # every row goes to the daily table; a row without a price carries the held position
        returns = []
        equity, peak, held, last_price, first_price = 1.0, 1.0, 0, None, None
        for row in rows.itertuples(index=False):
            p = float(row.price)
            if math.isnan(p):  # no trade, no return: everything stays as it was
                bh = last_price / first_price if first_price is not None else math.nan
                daily.append((row.date, signal, math.nan, False, float(row.net_prob), held, math.nan, math.nan, 0.0,
                              equity, equity / peak - 1.0, bh))
                continue
            first = last_price is None
            move = math.nan if first else p / last_price - 1.0
            gross = 0.0 if first else held * move
            cost = c * abs(int(row.position) - held)
            r = gross - cost
            equity *= 1.0 + r
            peak = max(peak, equity)
            returns.append(r)
            first_price = p if first else first_price
            daily.append((row.date, signal, p, True, float(row.net_prob), int(row.position), move, r, cost, equity,
                          equity / peak - 1.0, p / first_price))
            held, last_price = int(row.position), p
        rows = rows[rows["price"].notna()]  # the observations: the priced rows
        if rows.empty:
            continue
        dates = list(rows["date"])
        price = [float(p) for p in rows["price"]]
        position = [int(p) for p in rows["position"]]
        lags = [min(int(h) for h in str(text).split(",")) for text in rows["horizons"]]

        book = follow(dates, price, position, cost_per_side=c)
        trades += [(signal, "point_in_time", *trade) for trade in book]
        closed = [trade for trade in book if trade[6] == "closed"]
        net = [trade[11] for trade in closed]
        r = np.array(returns)
        block = [
            ("total_return", equity - 1.0, len(r), MIN["exact"]),
            ("annual_return", empyrical.annual_return(r, annualization=periods), len(r), MIN["returns"]),
            ("annual_volatility", empyrical.annual_volatility(r, annualization=periods), len(r), MIN["returns"]),
            ("sharpe_ratio", empyrical.sharpe_ratio(r, annualization=periods), len(r), MIN["returns"]),
            ("sortino_ratio", empyrical.sortino_ratio(r, annualization=periods), len(r), MIN["returns"]),
            ("max_drawdown", empyrical.max_drawdown(r), len(r), MIN["returns"]),
            ("calmar_ratio", empyrical.calmar_ratio(r, annualization=periods), len(r), MIN["returns"]),
            ("value_at_risk", empyrical.value_at_risk(r, cutoff=0.05), len(r), MIN["returns"]),
            ("conditional_value_at_risk", empyrical.conditional_value_at_risk(r, cutoff=0.05), len(r), MIN["returns"]),
            ("exposure", sum(p != 0 for p in position) / len(position), len(r), MIN["exact"]),
            ("buy_and_hold_return", price[-1] / price[0] - 1.0, len(r), MIN["exact"]),
        ]
        block += [(name, value, len(net), MIN["trades"]) for name, value in trade_figures(closed).items()]
        for k in steps:
            scored = [i for i in range(len(dates) - k) if position[i] != 0]  # t_(i+k) <= D
            hits = [i for i in scored if np.sign(position[i]) == np.sign(price[i + k] - price[i])]
            block.append((f"directional_accuracy_{k}", len(hits) / len(scored) if scored else math.nan, len(scored),
                          MIN["signals"]))
        statistics += [(day, signal, "point_in_time", *row) for row in block]

        usable = 0  # the leading rows whose legacy price is realised by D
        while usable < len(dates) and usable + lags[usable] <= len(dates) - 1:
            usable += 1
        legacy_price = [price[i + lags[i]] for i in range(usable)]
        legacy_book = follow(dates[:usable], legacy_price, position[:usable], cost_per_side=0.0)
        trades += [(signal, "legacy", *trade) for trade in legacy_book]
        x = [trade[11] for trade in legacy_book if trade[6] == "closed"]
        held = [trade[8] for trade in legacy_book if trade[6] == "closed"]
        figures = dict.fromkeys(["total_return", "win_rate", "average_win", "average_loss", "profit_factor",
                                 "sharpe_ratio", "max_drawdown", "best_trade", "worst_trade", "average_holding_days"],
                                math.nan)
        if len(x) >= MIN["legacy"]:
            mean = sum(x) / len(x)
            std = math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1))
            wealth, top, worst_drop = 1.0, 1.0, 0.0
            for v in x:
                wealth *= 1.0 + v
                top = max(top, wealth)
                worst_drop = min(worst_drop, wealth / top - 1.0)
            wins, losses = [v for v in x if v > 0], [v for v in x if v < 0]
            figures.update(
                total_return=sum(x),
                win_rate=len(wins) / len(x),
                average_win=sum(wins) / len(wins) if wins else math.nan,
                average_loss=sum(losses) / len(losses) if losses else math.nan,
                profit_factor=sum(wins) / -sum(losses) if losses else math.nan,
                sharpe_ratio=mean / std * math.sqrt(252 / (sum(held) / len(held))) if max(x) != min(x) else math.nan,
                max_drawdown=worst_drop,
                best_trade=max(x),
                worst_trade=min(x),
                average_holding_days=sum(held) / len(held),
            )
        scored = [i for i in range(usable - 1) if position[i] != 0]
        hits = [i for i in scored if np.sign(position[i]) == np.sign(legacy_price[i + 1] - legacy_price[i])]
        block = [("trades", len(x), len(x), MIN["legacy"])]
        block += [(name, value, len(x), MIN["legacy"]) for name, value in figures.items()]
        block.append(("directional_accuracy_1", len(hits) / len(scored) if scored else math.nan, len(scored),
                      MIN["signals"]))
        statistics += [(day, signal, "legacy", *row) for row in block]

    stats = pd.DataFrame(statistics, columns=["date", "signal", "basis", "statistic", "value", "n", "min_n"])
    stats["value"] = [v if math.isfinite(v) else math.nan for v in stats["value"].astype(float)]
    stats["sufficient"] = stats["n"] >= stats["min_n"]
    return {
        "statistics": stats,
        "trades": pd.DataFrame(trades, columns=[
            "signal", "basis", "trade", "direction", "entry_date", "entry_price", "exit_date", "exit_price", "status",
            "holding_observations", "holding_days", "gross_return", "cost", "net_return"]),
        "daily": pd.DataFrame(daily, columns=[
            "date", "signal", "price", "price_known", "net_prob", "position", "asset_return", "strategy_return", "cost",
            "equity", "drawdown", "buy_and_hold"]),
    }


def follow(dates, price, position, *, cost_per_side):
    """Follow the signal: one trade per run of equal non-zero positions; the last one may be open."""
    book, entry = [], None
    for i, pos in enumerate(position):
        if entry is not None and pos != position[entry]:
            book.append(trade(len(book) + 1, dates, price, position, entry, i, "closed", 2 * cost_per_side))
            entry = None
        if entry is None and pos != 0:
            entry = i
    if entry is not None:
        last = len(position) - 1
        book.append(trade(len(book) + 1, dates, price, position, entry, last, "open", cost_per_side))
    return book


def trade(number, dates, price, position, a, b, status, cost):
    side = position[a]
    gross = side * (price[b] / price[a] - 1.0)
    return (number, "long" if side > 0 else "short", dates[a], price[a], dates[b], price[b], status, b - a,
            (dates[b] - dates[a]).days, gross, cost, gross - cost)


def trade_figures(closed):
    net = [t[11] for t in closed]
    wins, losses = [v for v in net if v > 0], [v for v in net if v < 0]
    return {
        "trades": len(net),
        "win_rate": len(wins) / len(net) if net else math.nan,
        "average_win": sum(wins) / len(wins) if wins else math.nan,
        "average_loss": sum(losses) / len(losses) if losses else math.nan,
        "profit_factor": sum(wins) / -sum(losses) if losses else math.nan,
        "expectancy": sum(net) / len(net) if net else math.nan,
        "best_trade": max(net) if net else math.nan,
        "worst_trade": min(net) if net else math.nan,
        "average_holding_days": sum(t[8] for t in closed) / len(closed) if closed else math.nan,
        "average_holding_observations": sum(t[7] for t in closed) / len(closed) if closed else math.nan,
    }
