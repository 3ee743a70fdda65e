"""Point-in-time trading simulation: follow the signal (``docs/metrics.md``).

:func:`simulate` takes the observations of one signal of one asset (``date, price, position`` and
optionally ``net_prob``) and returns a :class:`Simulation`: the ``daily`` series (returns, costs,
equity, drawdown, buy-and-hold), every trade, and the ``marks`` (the open trade at each
observation). Nexus v2 traded at the price ``h_min`` observations *after* the signal date; here
a position decided at ``t_i``'s close is executed at ``price_i``, the close known on that date, so
nothing in a row depends on a later price.

Definitions (shared by the metrics and the horizon search)
-----------------------------------------------------------
- Observations ``t_0 < t_1 < ...`` are the rows, sorted by date; ``c = cost_bps / 1e4`` per side.
- Daily strategy return realised at ``t_i``: ``r_0 = -c |pos_0|`` and, for ``i >= 1``,
  ``r_i = pos_{i-1} (price_i / price_{i-1} - 1) - c |pos_i - pos_{i-1}|`` (a flip from long to
  short pays two sides). ``cost`` is the subtracted ``c |pos_i - pos_{i-1}|`` (``pos_{-1} = 0``).
- ``equity = cumprod(1 + r)``, starting from 1 before ``t_0``; ``drawdown = equity / peak - 1``
  with ``peak`` the running maximum of the equity *including the starting 1* (as
  ``empyrical.max_drawdown``, so a loss from the start is a drawdown); ``buy_and_hold =
  price_i / price_0``. ``asset_return = price_i / price_{i-1} - 1`` and NaN at ``t_0`` (no
  previous price).
- A trade is a maximal run of equal non-zero positions: entry at ``t_a`` (``price_a``), exit at
  the first later ``t_b`` with ``pos_b != pos_a`` (``price_b``), whatever ``pos_b`` is. Gross
  return ``s (price_b / price_a - 1)`` with ``s`` = +1 long, -1 short; cost ``2c``; net = gross -
  cost. A trade still open on the last observation is marked at that price, status ``open``,
  cost ``c`` (the entry side paid so far). Holding: ``b - a`` observations and
  ``(t_b - t_a).days`` calendar days (0 for a trade opened on the last observation).
  Trade returns are simple, not the compounded daily returns of the run; the sum of the daily
  ``cost`` column equals the sum of the trades' ``cost``.
- A day without a price (``price`` null: the contract's "not yet known") cannot trade: the
  position held before it is carried over, whatever that day's signal says; the day has no
  return (``asset_return`` and ``strategy_return`` NaN), no cost, and ``equity``, ``drawdown``
  and ``buy_and_hold`` carry their last values; ``price_known`` is False on its row. The
  *observations* above are the priced rows: the next priced day's return is measured from the
  last known price, trades enter and exit only on priced days, and holding observations count
  priced days. A day's signal is followed from the next priced day on.
- :meth:`Simulation.until` gives the simulation as of a date: the prefix of the daily rows (every
  column is causal, so it equals simulating only the observations up to that date), the trades
  closed by then (final once closed) and the trade open at the date marked at its price, taken
  from ``marks`` (the open trade as it stands at every observation in the market).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexus_assets.core.contract import DAILY_ROWS, TRADE_ROWS, columns

__all__ = [
    "POSITIONS",
    "DAILY_COLUMNS",
    "TRADE_COLUMNS",
    "Simulation",
    "simulate",
]

POSITIONS: tuple[int, ...] = (-1, 0, 1)
DAILY_COLUMNS: tuple[str, ...] = columns(DAILY_ROWS)
TRADE_COLUMNS: tuple[str, ...] = columns(TRADE_ROWS)

_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class Simulation:
    """One signal's simulation.

    ``daily``: one row per input row (:data:`DAILY_COLUMNS`), priced or not. ``trades``: every trade
    (:data:`TRADE_COLUMNS`), numbered from 1 in entry order, the last one ``open`` if the position
    is held on the last observation. ``marks``: for every observation with a non-zero position,
    the trade open there as it stands at that observation's close (status ``open``, exit = that
    observation): what ``trades`` would end with if the history stopped there.
    """

    daily: pd.DataFrame
    trades: pd.DataFrame
    marks: pd.DataFrame

    def until(self, date: dt.date | pd.Timestamp | str) -> Simulation:
        """The simulation as of ``date``: observations up to and including it; open trades marked there.

        Equals :func:`simulate` on the observations dated up to ``date`` (positions never depend
        on later rows): closed trades are final once closed, and the open one is a row of ``marks``.
        """
        dates = self.daily["date"].to_numpy("datetime64[ns]")
        cut = int(np.searchsorted(dates, _day(date), side="right"))
        if cut == len(dates):
            return self
        closed = self.trades[self.trades["status"] == "closed"]
        kept = marked = 0
        if cut:
            last = dates[cut - 1]
            kept = int(np.searchsorted(closed["exit_date"].to_numpy("datetime64[ns]"), last, side="right"))
            marked = int(np.searchsorted(self.marks["exit_date"].to_numpy("datetime64[ns]"), last, side="right"))
        is_open = cut > 0 and self.daily["position"].iat[cut - 1] != 0
        open_trade = self.marks.iloc[marked - 1:marked] if is_open else self.marks.iloc[:0]
        trades = pd.concat([closed.iloc[:kept], open_trade], ignore_index=True)
        return Simulation(self.daily.iloc[:cut], trades, self.marks.iloc[:marked])


def simulate(observations: pd.DataFrame, *, cost_bps: float) -> Simulation:
    """Follow the signal: trade at the signal date's price and mark to market every observation.

    Parameters
    ----------
    observations:
        One signal of one asset: columns ``date``, ``price`` (finite and > 0, or null on a day
        without a price) and ``position`` (-1, 0 or +1), optionally ``net_prob`` (copied to the
        daily table, NaN when absent); extra columns are ignored. Any row order; dates must be
        distinct.
    cost_bps:
        Transaction cost per side in basis points (the catalog's ``cost_bps``), >= 0.

    Returns
    -------
    Simulation
        See the module docstring for the definitions. Dates are ``datetime64[ns]``; ``position``,
        ``trade``, ``holding_*`` int64; ``direction`` and ``status`` str; the rest float64.
    """
    cost_bps = _cost_bps(cost_bps)
    c = cost_bps / 1e4
    all_dates, all_price, signal_position, all_net_prob = _observations(observations)
    known = ~np.isnan(all_price)
    priced = np.flatnonzero(known)
    # the observations: priced rows; an unpriced row carries the position held before it
    dates, price, position = all_dates[priced], all_price[priced], signal_position[priced]
    previous = np.zeros(len(position), dtype="int64")
    previous[1:] = position[:-1]
    asset_return = np.full(len(price), np.nan)
    asset_return[1:] = price[1:] / price[:-1] - 1.0
    held = np.zeros(len(price))
    held[1:] = previous[1:] * asset_return[1:] + 0.0  # + 0.0: a flat short day is 0.0, not -0.0
    cost = c * np.abs(position - previous)
    strategy_return = held - cost
    equity = np.cumprod(1.0 + strategy_return)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    # back to every row: priced rows get their values, the others carry (or are NaN: no return)
    last = np.cumsum(known) - 1  # the latest priced observation at or before each row (-1: none yet)
    seen = last >= 0

    def carried(values: np.ndarray, before: float) -> np.ndarray:
        out = np.full(len(all_dates), before, dtype="float64")
        out[seen] = values[last[seen]]
        return out

    def on_priced(values: np.ndarray, other: float) -> np.ndarray:
        out = np.full(len(all_dates), other, dtype=np.asarray(values).dtype if len(values) else "float64")
        out[priced] = values
        return out

    held_position = np.zeros(len(all_dates), dtype="int64")
    held_position[seen] = position[last[seen]]
    daily = pd.DataFrame(
        {
            "date": pd.Series(all_dates, dtype="datetime64[ns]"),
            "price": all_price,
            "price_known": known,
            "net_prob": all_net_prob,
            "position": held_position,
            "asset_return": on_priced(asset_return, np.nan),
            "strategy_return": on_priced(strategy_return, np.nan),
            "cost": on_priced(cost, 0.0),
            "equity": carried(equity, 1.0),
            "drawdown": carried(equity / peak - 1.0, 0.0),
            "buy_and_hold": carried(price / price[0] if len(price) else price, np.nan),
        },
        columns=list(DAILY_COLUMNS),
    )
    # runs of equal non-zero positions: entry where the position changes to non-zero, exit at the next change
    changes = np.flatnonzero(position != previous)
    entries = changes[position[changes] != 0]
    ends = np.append(changes, len(position))[np.searchsorted(changes, entries, side="right")]
    closed = ends < len(position)
    numbers = np.arange(1, len(entries) + 1)
    in_market = np.flatnonzero(position != 0)
    run = np.searchsorted(entries, in_market, side="right") - 1  # the run holding each such observation
    marks = _trade_frame(dates, price, position, numbers[run], entries[run], in_market, np.full(len(run), True), c)
    last_open = marks.iloc[len(marks) - 1:] if len(position) and position[-1] != 0 else marks.iloc[:0]
    finished = _trade_frame(dates, price, position, numbers[closed], entries[closed], ends[closed],
                            np.zeros(int(closed.sum()), dtype=bool), c)
    trades = pd.concat([finished, last_open], ignore_index=True)
    return Simulation(daily, trades, marks)


def _trade_frame(dates: np.ndarray, price: np.ndarray, position: np.ndarray, number: np.ndarray, entry: np.ndarray,
                 exit: np.ndarray, is_open: np.ndarray, c: float) -> pd.DataFrame:
    """Trades entered at observation ``entry`` and closed (or, where ``is_open``, marked) at ``exit``."""
    side = position[entry]
    gross = side * (price[exit] / price[entry] - 1.0) + 0.0  # + 0.0: a flat short is 0.0, not -0.0
    cost = np.where(is_open, c, 2.0 * c)
    return pd.DataFrame(
        {
            "trade": number.astype("int64"),
            "direction": pd.Series(np.where(side > 0, "long", "short"), dtype="str"),
            "entry_date": pd.Series(dates[entry], dtype="datetime64[ns]"),
            "entry_price": price[entry],
            "exit_date": pd.Series(dates[exit], dtype="datetime64[ns]"),
            "exit_price": price[exit],
            "status": pd.Series(np.where(is_open, "open", "closed"), dtype="str"),
            "holding_observations": (exit - entry).astype("int64"),
            "holding_days": ((dates[exit] - dates[entry]) // _DAY).astype("int64"),
            "gross_return": gross,
            "cost": cost,
            "net_return": gross - cost,
        },
        columns=list(TRADE_COLUMNS),
    )


def _observations(observations: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted, checked ``date, price, position, net_prob`` arrays."""
    missing = [c for c in ("date", "price", "position") if c not in observations.columns]
    if missing:
        raise ValueError(f"observations lack column(s) {missing}; pass columns date, price, position (and net_prob)")
    dates = pd.to_datetime(observations["date"])
    if getattr(dates.dt, "tz", None) is not None:
        raise ValueError("observation dates must be naive (no time zone)")
    dates = dates.to_numpy("datetime64[ns]")
    if np.isnat(dates).any():
        raise ValueError("observations have a row without a date")
    order = np.argsort(dates, kind="stable")
    dates = dates[order]
    repeated = dates[1:][dates[1:] == dates[:-1]]
    if len(repeated):
        raise ValueError(f"observations have duplicate dates, first {_show(repeated[0])}; one row per date")
    price = observations["price"].to_numpy("float64", na_value=np.nan)[order]
    bad = ~((np.isfinite(price) & (price > 0)) | np.isnan(price))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"price on {_show(dates[first])} is {float(price[first])!r}; prices must be finite and > 0 "
                         "(or null on a day without a price)")
    raw_position = observations["position"].to_numpy("float64", na_value=np.nan)[order]
    bad = ~np.isin(raw_position, POSITIONS)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"position on {_show(dates[first])} is {float(raw_position[first])!r}; positions must be -1, 0 or +1"
        )
    if "net_prob" in observations.columns:
        net_prob = observations["net_prob"].to_numpy("float64", na_value=np.nan)[order]
    else:
        net_prob = np.full(len(dates), np.nan)
    return dates, price, raw_position.astype("int64"), net_prob


def _cost_bps(cost_bps: float) -> float:
    if isinstance(cost_bps, bool) or not isinstance(cost_bps, (int, float, np.integer, np.floating)):
        raise ValueError(f"cost_bps must be a number of basis points per side, got {cost_bps!r}")
    if not (np.isfinite(cost_bps) and cost_bps >= 0):
        raise ValueError(f"cost_bps must be finite and >= 0 basis points per side, got {cost_bps!r}")
    return float(cost_bps)


def _day(date: dt.date | pd.Timestamp | str) -> np.datetime64:
    """A date as ``datetime64[ns]``."""
    stamp = pd.Timestamp(date)
    if stamp.tz is not None:
        raise ValueError(f"dates must be naive (no time zone), got {date!r}")
    return stamp.to_datetime64().astype("datetime64[ns]")


def _show(date: np.datetime64) -> str:
    """A date for a message: ``2025-01-02``, or with its time if it has one."""
    stamp = pd.Timestamp(date)
    return str(stamp.date()) if stamp == stamp.normalize() else str(stamp)
