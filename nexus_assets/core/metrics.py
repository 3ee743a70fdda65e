"""Trading metrics of the signals as of each date, point in time and Nexus v2 legacy (``docs/metrics.md``).

:func:`record` takes the stored ``signals`` table of one asset (both variants, many dates) and
returns, for every as-of date ``D``, three tables that use only outcomes realised by ``D``:
``statistics`` (long format, :data:`STATISTICS_COLUMNS`), ``trades`` (:data:`TRADES_COLUMNS`)
and ``daily`` (:data:`DAILY_COLUMNS`). Each signal (``raw``, ``optimised``) is simulated once over
its whole history with :func:`nexus_assets.core.trading.simulate` and sliced per as-of date; the
simulation up to ``D`` is the prefix of the whole one, so this equals computing each date alone.

Point-in-time figures (basis ``"point_in_time"``)
-------------------------------------------------
The observations of a signal are its rows in the signals table that have a price (the close on
the row's date); ``r`` are the daily strategy returns of :mod:`nexus_assets.core.trading` up to
``D`` (``N`` of them, one per observation, the first being the entry cost), annualised with
``P`` = 252 (calendar ``exchange``) or 365 (``crypto``). A row without a price (upstream's "not
yet known") is no observation: the position is carried over it, it has no return, and it counts
in no statistic; the ``daily`` table still shows it, with ``price_known`` False, and a record
as of such a day is the record of the last priced day before it, with the open trade marked at
that day's price.

- Return statistics are empyrical's functions on ``r`` (see the ``definition`` column); checked in
  empyrical-reloaded 0.7.1's source: Sharpe uses the sample std (``ddof=1``), Sortino divides
  ``mean(r) P`` by the downside deviation ``sqrt(mean(min(r, 0)^2)) sqrt(P)`` over all ``N``
  returns, the maximum drawdown is compounded with the peak including the starting capital, VaR is
  numpy's linear-interpolated 5th percentile and CVaR the mean of the ``int((N - 1) 0.05) + 1``
  lowest returns. A value that is infinite (Sharpe or Sortino with zero dispersion, Calmar with no
  drawdown) is reported as NaN: undefined. ``total_return`` is ``prod(1 + r) - 1`` (the equity on
  ``D`` minus 1), ``exposure`` the share of observations with a non-zero position,
  ``buy_and_hold_return`` the price on ``D`` over the first price, minus 1.
- Trade statistics use the closed trades (exit by ``D``) and their ``net_return`` (after the two
  sides of cost): ``win_rate`` = share with net return > 0 (a zero net return is not a win),
  ``profit_factor`` = sum of positive / |sum of negative| net returns (NaN without a losing
  trade), ``average_win`` / ``average_loss`` = mean of the positive / negative net returns,
  ``expectancy`` = mean net return per trade, best and worst trade, average holding in calendar
  days and in observations. ``n`` is the number of closed trades for all of them.
- ``directional_accuracy_k`` for ``k`` = 1 and each horizon, in observations: a non-neutral signal
  at ``t_i`` counts as of ``D`` only if ``t_{i+k} <= D``; it is a hit if ``sign(position) ==
  sign(price_{i+k} - price_i)``. A zero price move is a miss: neither direction was right.

Nexus v2 legacy figures (basis ``"legacy"``)
--------------------------------------------
Spec section 5's formulas, side by side with the point-in-time ones. The legacy price of the
signal row ``i`` is Nexus v2's ``actual`` column, the price ``h_min`` observations later
(``price_{i + h_min}``, ``h_min`` = the smallest horizon in row ``i``'s ``horizons``, so it may
change from row to row for the optimised signal). Trades follow the signal as in the point-in-time
simulation (the same runs of positions), entered and exited at legacy prices, cost 0; the trades
table shows them with the signal dates ``t_a``, ``t_b`` and the legacy prices. Point in time as of
``D``: row ``i`` is usable when ``t_{i + h_min} <= D``; the legacy rows as of ``D`` are the
leading rows that are all usable (a prefix, so that later rows never change earlier trades).
A legacy trade still open at the last usable row is stored with status ``open`` (marked at that
row's legacy price) but, as every legacy figure, only closed trades count. Returns are fractions
(Nexus v2 printed percent): ``total_return`` = sum of trade returns, win rate, average win and
loss, profit factor as above, ``sharpe_ratio`` = mean / sample std of trade returns times
``sqrt(252 / average holding days)`` (252 for every calendar, as Nexus v2; NaN with zero
dispersion), ``max_drawdown`` = the minimum of ``E / peak - 1`` for the compounded trade equity
``E = cumprod(1 + trade return)`` with the peak including the starting 1, best and worst trade,
average holding days. With fewer than :data:`MIN_LEGACY_TRADES` closed trades every legacy trade
figure is NaN (Nexus v2 reports no metrics). ``directional_accuracy_1`` compares row ``i`` with
row ``i + 1`` of the legacy price (both usable), a zero move being a miss.

Minimum samples
---------------
``n`` is the sample a figure is computed on and ``sufficient = n >= min_n``; point-in-time values
are reported even when insufficient (the flag says how far to trust them). ``min_n``:
:data:`MIN_RETURNS` daily returns for the annualised return statistics (a quarter of a trading
year), 1 for the exact figures (total return, exposure, buy and hold), :data:`MIN_TRADES` closed
trades for the trade statistics (including the ``trades`` count, whose flag therefore tells
whether the trade statistics are trustworthy), :data:`MIN_SIGNALS` scored signals for accuracies,
:data:`MIN_LEGACY_TRADES` legacy trades for the legacy trade figures.

Tables
------
Rows are ordered by signal (``raw``, ``optimised``), then basis (``point_in_time``, ``legacy``),
then the fixed order of :func:`statistic_names` (statistics) or the trade number (trades); the
daily rows by signal, then date. A signal without an observation by ``D`` has no rows; a date
before every observation gets three empty, typed tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import empyrical
import numpy as np
import pandas as pd

from nexus_assets.core import trading
from nexus_assets.core.contract import DAILY, DAILY_ROWS, STATISTICS, TRADE_ROWS, TRADES, columns, empty_frame
from nexus_assets.core.periods import TRADING_DAYS, periods_per_year

__all__ = [
    "SIGNALS",
    "BASES",
    "TABLES",
    "STATISTICS_COLUMNS",
    "TRADES_COLUMNS",
    "DAILY_COLUMNS",
    "MIN_RETURNS",
    "MIN_TRADES",
    "MIN_SIGNALS",
    "MIN_LEGACY_TRADES",
    "VAR_CUTOFF",
    "statistic_names",
    "record",
]

SIGNALS: tuple[str, ...] = ("raw", "optimised")
BASES: tuple[str, ...] = ("point_in_time", "legacy")
TABLES: tuple[str, ...] = ("statistics", "trades", "daily")
STATISTICS_COLUMNS: tuple[str, ...] = columns(STATISTICS)
TRADES_COLUMNS: tuple[str, ...] = columns(TRADES)
DAILY_COLUMNS: tuple[str, ...] = columns(DAILY)
MIN_RETURNS = 60
"""Daily returns needed before annualised return statistics are trusted (a quarter of a trading year)."""
MIN_TRADES = 10
"""Closed trades needed for the point-in-time trade statistics."""
MIN_SIGNALS = 20
"""Scored non-neutral signals needed for a directional accuracy."""
MIN_LEGACY_TRADES = 3
"""Nexus v2 reports no trade metrics below 3 trades."""
VAR_CUTOFF = 0.05

_SIGNAL_COLUMNS = ("date", "variant", "horizons", "net_prob", "position", "price")
_NO_ROWS = np.zeros(0, dtype="int64")
_EXACT = 1  # min_n of figures that are exact for any sample (total return, exposure, buy and hold)


class _Statistic(NamedTuple):
    name: str
    min_n: int
    definition: str


def statistic_names(basis: str, *, horizons: Sequence[int]) -> tuple[str, ...]:
    """The statistics of ``basis``, in table order, for an asset with these horizons."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    specs = _point_in_time_specs(TRADING_DAYS, 0.0, _steps(horizons)) if basis == "point_in_time" else _legacy_specs()
    return tuple(spec.name for spec in specs)


def record(
    signals: pd.DataFrame,
    *,
    as_of: Sequence[dt.date] | None = None,
    calendar: str,
    cost_bps: float,
    horizons: Sequence[int],
) -> dict[dt.date, dict[str, pd.DataFrame]]:
    """The metrics tables of one asset as of each date, using only outcomes realised by then.

    Parameters
    ----------
    signals:
        The stored ``signals`` table of one asset (many dates), at least columns ``date, variant,
        horizons, net_prob, position, price``; ``variant`` in :data:`SIGNALS`, one row per (date,
        variant), prices finite and > 0, positions -1, 0 or +1, ``horizons`` like ``"1,3,5"``.
        Rows dated after the last as-of date are ignored (not even checked).
    as_of:
        The as-of dates; ``None`` (default) means every date in ``signals``.
    calendar:
        The catalog calendar, ``"exchange"`` (252 observations a year) or ``"crypto"`` (365).
    cost_bps:
        Transaction cost per side in basis points (the catalog's ``cost_bps``).
    horizons:
        The asset's horizons (observations); a directional accuracy is reported at 1 observation
        and at each of them.

    Returns
    -------
    dict
        ``{as-of date: {"statistics": ..., "trades": ..., "daily": ...}}``, dates ascending; see
        the module docstring for the definitions and row order. Identical inputs give identical
        frames.
    """
    periods = periods_per_year(calendar)
    if isinstance(cost_bps, bool) or not isinstance(cost_bps, (int, float, np.integer, np.floating)) or not (
        np.isfinite(cost_bps) and cost_bps >= 0
    ):
        raise ValueError(f"cost_bps must be a finite number >= 0 of basis points per side, got {cost_bps!r}")
    steps = _steps(horizons)
    frame = _checked(signals)
    if as_of is None:
        wanted = np.unique(frame["date"].to_numpy("datetime64[ns]"))
    else:
        wanted = np.unique(np.array([_day(d) for d in as_of], dtype="datetime64[ns]"))
    if not len(wanted):
        return {}
    frame = frame[frame["date"].to_numpy("datetime64[ns]") <= wanted[-1]]  # later rows can change nothing
    tracks = [
        _Track.build(signal, frame[frame["variant"] == signal], cost_bps=float(cost_bps), steps=steps)
        for signal in SIGNALS
        if (frame["variant"] == signal).any()
    ]
    specs = {"point_in_time": _point_in_time_specs(periods, float(cost_bps), steps), "legacy": _legacy_specs()}
    labels, daily, trades = _Labels.of(tracks, specs), _daily_frame(tracks), _trades_frame(tracks)
    return {
        pd.Timestamp(day).date(): _tables(tracks, day, labels=labels, periods=periods, daily=daily, trades=trades)
        for day in wanted
    }


# ---------------------------------------------------------------------------------------------
# one signal's whole history, indexed for slicing


@dataclass(frozen=True)
class _Book:
    """The trades of one (signal, basis) over the whole history."""

    simulation: trading.Simulation
    closed: pd.DataFrame  # the closed trades, in exit order
    closed_exit: np.ndarray  # observation index of each closed trade's exit, ascending
    net: np.ndarray  # closed trades' net returns ...
    days: np.ndarray  # ... calendar days held ...
    observations: np.ndarray  # ... and observations held
    mark_row: np.ndarray  # per observation: its row in ``simulation.marks`` (the open trade there), -1 if flat

    @classmethod
    def of(cls, simulation: trading.Simulation) -> _Book:
        daily = simulation.daily[simulation.daily["price_known"].to_numpy(dtype=bool)]  # the observations
        dates = daily["date"].to_numpy("datetime64[ns]")
        trades = simulation.trades
        closed = trades[trades["status"] == "closed"].reset_index(drop=True)
        in_market = daily["position"].to_numpy("int64") != 0
        return cls(
            simulation,
            closed,
            np.searchsorted(dates, closed["exit_date"].to_numpy("datetime64[ns]")),
            closed["net_return"].to_numpy("float64"),
            closed["holding_days"].to_numpy("float64"),
            closed["holding_observations"].to_numpy("float64"),
            np.where(in_market, np.cumsum(in_market) - 1, -1),
        )

    def closed_by(self, last: int) -> int:
        """How many trades are closed once observation ``last`` is known."""
        return int(np.searchsorted(self.closed_exit, last, side="right"))


@dataclass(frozen=True)
class _Track:
    signal: str
    rows: np.ndarray  # datetime64[ns]: every row's date (the daily table), sorted
    dates: np.ndarray  # datetime64[ns]: the observations' (priced rows'), sorted
    returns: np.ndarray  # daily strategy returns
    position: np.ndarray
    price: np.ndarray
    equity: np.ndarray
    point_in_time: _Book
    scored: dict[int, tuple[np.ndarray, np.ndarray]]  # k -> counts of scored signals and hits in rows < j
    legacy_reach: np.ndarray  # running max of i + h_min(i): row i is a legacy row once it is <= the last index
    legacy: _Book  # over the rows whose legacy price exists by the last date
    legacy_scored: tuple[np.ndarray, np.ndarray]

    @classmethod
    def build(cls, signal: str, rows: pd.DataFrame, *, cost_bps: float, steps: tuple[int, ...]) -> _Track:
        rows = rows.sort_values("date", kind="stable")
        try:
            simulation = trading.simulate(rows, cost_bps=cost_bps)
        except ValueError as error:
            raise ValueError(f"signals of variant {signal!r}: {error}") from None
        every = simulation.daily
        priced = every["price_known"].to_numpy(dtype=bool)
        daily = every[priced]
        dates = daily["date"].to_numpy("datetime64[ns]")
        price = daily["price"].to_numpy("float64")
        position = daily["position"].to_numpy("int64")
        lags = _lags(rows)[priced]
        reach = np.maximum.accumulate(np.arange(len(dates)) + lags)
        usable = int(np.searchsorted(reach, len(dates) - 1, side="right"))  # rows whose legacy price exists
        legacy_price = price[np.arange(usable) + lags[:usable]]
        legacy = trading.simulate(
            pd.DataFrame({"date": dates[:usable], "price": legacy_price, "position": position[:usable]}),
            cost_bps=0.0,
        )
        return cls(
            signal, every["date"].to_numpy("datetime64[ns]"), dates, daily["strategy_return"].to_numpy("float64"),
            position, price,
            daily["equity"].to_numpy("float64"), _Book.of(simulation),
            {k: _hits(position[:-k], price[:-k], price[k:]) for k in steps},
            reach, _Book.of(legacy), _hits(position[: max(usable - 1, 0)], legacy_price[:-1], legacy_price[1:]),
        )


def _hits(position: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative counts (leading 0) of non-neutral signals and of hits: sign(position) == sign(move)."""
    signalled = position != 0
    hit = signalled & (np.sign(position) == np.sign(end - start))
    zero = np.zeros(1, dtype="int64")
    return np.concatenate([zero, np.cumsum(signalled)]), np.concatenate([zero, np.cumsum(hit)])


def _lags(rows: pd.DataFrame) -> np.ndarray:
    """``h_min`` of each row: the smallest horizon of its ``horizons`` string ("1,3,5")."""
    cache: dict[object, int] = {}
    lags = np.empty(len(rows), dtype="int64")
    for i, (value, date) in enumerate(zip(rows["horizons"].tolist(), rows["date"].tolist())):
        if value not in cache:
            try:
                parts = [int(part) for part in str(value).split(",")]
            except ValueError:
                parts = []
            if not parts or min(parts) < 1:
                raise ValueError(
                    f"horizons {value!r} on {pd.Timestamp(date).date()} is not a list of horizons like '1,3,5'"
                )
            cache[value] = min(parts)
        lags[i] = cache[value]
    return lags


# ---------------------------------------------------------------------------------------------
# the tables as of one date


def _tables(tracks: list[_Track], day: np.datetime64, *, labels: _Labels, periods: int, daily: pd.DataFrame,
            trades: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The three tables as of ``day``: slices of the whole-history frames and the statistics."""
    seen_tracks, values, counts, trade_rows, daily_rows = [], [], [], [], []
    daily_offset = trade_offset = 0
    for index, track in enumerate(tracks):
        seen = int(np.searchsorted(track.dates, day, side="right"))  # M: observations up to D
        shown = int(np.searchsorted(track.rows, day, side="right"))  # daily rows up to D, priced or not
        legacy_rows = int(np.searchsorted(track.legacy_reach, seen - 1, side="right")) if seen else 0
        for book, last in ((track.point_in_time, seen - 1), (track.legacy, legacy_rows - 1)):  # BASES order
            closed = book.closed_by(last) if last >= 0 else 0
            trade_rows.append(trade_offset + np.arange(closed))
            if last >= 0 and book.mark_row[last] >= 0:
                trade_rows.append(np.array([trade_offset + len(book.closed) + book.mark_row[last]]))
            trade_offset += len(book.closed) + len(book.simulation.marks)
        if seen:
            seen_tracks.append(index)
            for block_values, block_counts in (_point_in_time_values(track, seen, periods),
                                               _legacy_values(track, legacy_rows)):
                values += block_values
                counts += block_counts
        if shown:
            daily_rows.append(daily_offset + np.arange(shown))
        daily_offset += len(track.rows)
    return {
        "statistics": _statistics_frame(day, labels, seen_tracks, values, counts),
        "trades": trades.take(np.concatenate(trade_rows or [_NO_ROWS])).reset_index(drop=True),
        "daily": daily.take(np.concatenate(daily_rows or [_NO_ROWS])).reset_index(drop=True),
    }


def _point_in_time_values(track: _Track, seen: int, periods: int) -> tuple[list[float], list[int]]:
    r = track.returns[:seen]
    # empyrical's own power and division on degenerate samples (no dispersion, equity <= 0) would
    # warn; those values are undefined and reported as NaN below
    with np.errstate(divide="ignore", invalid="ignore"):
        values = [
            track.equity[seen - 1] - 1.0,
            empyrical.annual_return(r, annualization=periods),
            empyrical.annual_volatility(r, annualization=periods),
            empyrical.sharpe_ratio(r, annualization=periods),
            empyrical.sortino_ratio(r, annualization=periods),
            empyrical.max_drawdown(r),
            empyrical.calmar_ratio(r, annualization=periods),
            empyrical.value_at_risk(r, cutoff=VAR_CUTOFF),
            empyrical.conditional_value_at_risk(r, cutoff=VAR_CUTOFF),
            np.count_nonzero(track.position[:seen]) / seen,
            track.price[seen - 1] / track.price[0] - 1.0,
        ]
    counts = [seen] * len(values)
    book = track.point_in_time
    closed = book.closed_by(seen - 1)
    net = book.net[:closed]
    trade_values = _trade_values(net)
    values += [
        closed,
        trade_values["win_rate"],
        trade_values["average_win"],
        trade_values["average_loss"],
        trade_values["profit_factor"],
        _mean(net),
        trade_values["best_trade"],
        trade_values["worst_trade"],
        _mean(book.days[:closed]),
        _mean(book.observations[:closed]),
    ]
    counts += [closed] * 10
    for k, (signalled, hits) in track.scored.items():
        j = max(seen - k, 0)  # signals at rows i <= M - 1 - k
        values.append(hits[j] / signalled[j] if signalled[j] else np.nan)
        counts.append(int(signalled[j]))
    return _finite(values), counts


def _legacy_values(track: _Track, legacy_rows: int) -> tuple[list[float], list[int]]:
    book = track.legacy
    closed = book.closed_by(legacy_rows - 1) if legacy_rows else 0
    x, days = book.net[:closed], book.days[:closed]
    if closed >= MIN_LEGACY_TRADES:
        trade_values = _trade_values(x)
        spread = x.std(ddof=1) if x.max() != x.min() else np.nan  # equal returns: no dispersion, no Sharpe
        equity = np.cumprod(1.0 + x)
        figures = [
            x.sum(),
            trade_values["win_rate"],
            trade_values["average_win"],
            trade_values["average_loss"],
            trade_values["profit_factor"],
            x.mean() / spread * np.sqrt(TRADING_DAYS / days.mean()),
            (equity / np.maximum.accumulate(np.maximum(equity, 1.0)) - 1.0).min(),
            trade_values["best_trade"],
            trade_values["worst_trade"],
            days.mean(),
        ]
    else:
        figures = [np.nan] * 10
    signalled, hits = track.legacy_scored
    j = max(legacy_rows - 1, 0)  # pairs (i, i + 1) of legacy rows: i <= legacy_rows - 2
    values = [closed, *figures, hits[j] / signalled[j] if signalled[j] else np.nan]
    counts = [closed] * 11 + [int(signalled[j])]
    return _finite(values), counts


def _finite(values: list) -> list[float]:
    """Floats, NaN for an undefined (infinite or NaN) value."""
    return [float(v) if np.isfinite(v) else np.nan for v in values]


def _trade_values(net: np.ndarray) -> dict[str, float]:
    wins, losses = net[net > 0], net[net < 0]
    return {
        "win_rate": len(wins) / len(net) if len(net) else np.nan,
        "profit_factor": wins.sum() / -losses.sum() if len(losses) else np.nan,
        "average_win": _mean(wins),
        "average_loss": _mean(losses),
        "best_trade": net.max() if len(net) else np.nan,
        "worst_trade": net.min() if len(net) else np.nan,
    }


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else np.nan


# ---------------------------------------------------------------------------------------------
# statistic names, sample minimums and definitions


def _steps(horizons: Sequence[int]) -> tuple[int, ...]:
    """Observations ahead at which accuracy is scored: 1 and every horizon, ascending."""
    values = list(horizons)
    if not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in values):
        raise ValueError(f"horizons must be integers >= 1 (observations), got {values!r}")
    return tuple(sorted({1, *(int(h) for h in values)}))


def _point_in_time_specs(periods: int, cost_bps: float, steps: tuple[int, ...]) -> list[_Statistic]:
    r = f"daily strategy returns r (cost {cost_bps:g} bps per side)"
    p = f"annualization={periods}"
    trades = "closed trades' net_return"
    return [
        _Statistic("total_return", _EXACT, f"prod(1 + r) - 1 over the {r}: equity on D - 1, compounded"),
        _Statistic("annual_return", MIN_RETURNS,
                   f"empyrical.annual_return({r}, {p}) = (1 + total_return) ** ({periods} / N) - 1"),
        _Statistic("annual_volatility", MIN_RETURNS,
                   f"empyrical.annual_volatility({r}, {p}) = std(r, ddof=1) * sqrt({periods})"),
        _Statistic("sharpe_ratio", MIN_RETURNS,
                   f"empyrical.sharpe_ratio({r}, {p}) = mean(r) / std(r, ddof=1) * sqrt({periods}); "
                   "NaN without dispersion"),
        _Statistic("sortino_ratio", MIN_RETURNS,
                   f"empyrical.sortino_ratio({r}, {p}) = mean(r) * {periods} / (sqrt(mean(min(r, 0) ** 2)) * "
                   f"sqrt({periods})), downside deviation over all N returns; NaN without a negative return"),
        _Statistic("max_drawdown", MIN_RETURNS,
                   f"empyrical.max_drawdown({r}) = min(equity / running peak - 1), compounded, "
                   "peak includes the starting 1"),
        _Statistic("calmar_ratio", MIN_RETURNS,
                   f"empyrical.calmar_ratio({r}, {p}) = annual_return / |max_drawdown|; NaN without a drawdown"),
        _Statistic("value_at_risk", MIN_RETURNS,
                   f"empyrical.value_at_risk({r}, cutoff={VAR_CUTOFF}) = numpy percentile {VAR_CUTOFF * 100:g} "
                   "(linear) of r"),
        _Statistic("conditional_value_at_risk", MIN_RETURNS,
                   f"empyrical.conditional_value_at_risk({r}, cutoff={VAR_CUTOFF}) = mean of the "
                   f"int((N - 1) * {VAR_CUTOFF}) + 1 lowest r"),
        _Statistic("exposure", _EXACT, "share of observations up to D with position != 0"),
        _Statistic("buy_and_hold_return", _EXACT, "price on D / first price - 1"),
        _Statistic("trades", MIN_TRADES, "number of closed trades (entry and exit by D); flags the trade statistics"),
        _Statistic("win_rate", MIN_TRADES, f"share of {trades} > 0"),
        _Statistic("average_win", MIN_TRADES, f"mean of {trades} > 0"),
        _Statistic("average_loss", MIN_TRADES, f"mean of {trades} < 0"),
        _Statistic("profit_factor", MIN_TRADES,
                   f"sum of {trades} > 0 / |sum of those < 0|; NaN without a losing trade"),
        _Statistic("expectancy", MIN_TRADES, f"mean of {trades} (after 2 x {cost_bps:g} bps)"),
        _Statistic("best_trade", MIN_TRADES, f"max of {trades}"),
        _Statistic("worst_trade", MIN_TRADES, f"min of {trades}"),
        _Statistic("average_holding_days", MIN_TRADES, "mean (exit_date - entry_date).days of closed trades"),
        _Statistic("average_holding_observations", MIN_TRADES, "mean observations from entry to exit of closed trades"),
        *(
            _Statistic(f"directional_accuracy_{k}", MIN_SIGNALS,
                       f"share of non-neutral signals at t_i with t_(i+{k}) <= D where sign(position) == "
                       f"sign(price_(i+{k}) - price_i), {k} observation(s) ahead; a zero move is a miss")
            for k in steps
        ),
    ]


def _legacy_specs() -> list[_Statistic]:
    x = "closed legacy trade returns x (at the price h_min observations after the signal date, no cost)"
    nexus = f"Nexus v2; NaN below {MIN_LEGACY_TRADES} trades"
    least = MIN_LEGACY_TRADES
    return [
        _Statistic("trades", least, "number of closed legacy trades whose legacy prices are realised by D"),
        _Statistic("total_return", least, f"sum of {x} (Nexus v2: sum of trade %; here a fraction); {nexus}"),
        _Statistic("win_rate", least, f"share of {x} > 0; {nexus}"),
        _Statistic("average_win", least, f"mean of {x} > 0; {nexus}"),
        _Statistic("average_loss", least, f"mean of {x} < 0; {nexus}"),
        _Statistic("profit_factor", least, f"sum of {x} > 0 / |sum of those < 0|; NaN without a losing trade; {nexus}"),
        _Statistic("sharpe_ratio", least,
                   f"mean(x) / std(x, ddof=1) * sqrt({TRADING_DAYS} / average holding days) of {x}; {nexus}"),
        _Statistic("max_drawdown", least,
                   f"min(E / running peak - 1), E = cumprod(1 + x) of {x}, peak includes the starting 1; {nexus}"),
        _Statistic("best_trade", least, f"max of {x}; {nexus}"),
        _Statistic("worst_trade", least, f"min of {x}; {nexus}"),
        _Statistic("average_holding_days", least,
                   f"mean (exit signal date - entry signal date).days of closed legacy trades; {nexus}"),
        _Statistic("directional_accuracy_1", MIN_SIGNALS,
                   "share of non-neutral signals at row i (rows i and i + 1 usable by D) where sign(position) == "
                   "sign(legacy price_(i+1) - legacy price_i), Nexus v2; a zero move is a miss"),
    ]


# ---------------------------------------------------------------------------------------------
# frames


def _checked(signals: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _SIGNAL_COLUMNS if c not in signals.columns]
    if missing:
        raise ValueError(
            f"signals lack column(s) {missing}; pass the stored signals table (columns {list(_SIGNAL_COLUMNS)})"
        )
    frame = signals[list(_SIGNAL_COLUMNS)].copy()
    frame["date"] = pd.to_datetime(frame["date"])
    if getattr(frame["date"].dt, "tz", None) is not None:
        raise ValueError("signal dates must be naive (no time zone)")
    frame["date"] = frame["date"].astype("datetime64[ns]")
    unknown = sorted(set(frame["variant"].astype(str)) - set(SIGNALS))
    if unknown:
        raise ValueError(f"signals have unknown variant(s) {unknown}; expected {list(SIGNALS)}")
    return frame


def _day(date: dt.date | pd.Timestamp | str) -> np.datetime64:
    """An as-of date (its calendar day) as ``datetime64[ns]``."""
    return np.datetime64(pd.Timestamp(date).date(), "ns")


def _daily_frame(tracks: list[_Track]) -> pd.DataFrame:
    """Every track's daily rows, signal by signal."""
    parts = [track.point_in_time.simulation.daily for track in tracks] or [empty_frame(DAILY_ROWS)]
    frame = pd.concat(parts, ignore_index=True)
    labels = np.repeat([track.signal for track in tracks], [len(part) for part in parts[: len(tracks)]])
    frame.insert(1, "signal", pd.Series(labels, dtype="str"))
    return frame[list(DAILY_COLUMNS)]


def _trades_frame(tracks: list[_Track]) -> pd.DataFrame:
    """Per track and basis: its closed trades, then its marks (the open trade at each observation)."""
    parts, signals, bases = [empty_frame(TRADE_ROWS)], [], []
    for track in tracks:
        for basis, book in (("point_in_time", track.point_in_time), ("legacy", track.legacy)):
            parts += [book.closed, book.simulation.marks]
            size = len(book.closed) + len(book.simulation.marks)
            signals += [track.signal] * size
            bases += [basis] * size
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "signal", pd.Series(signals, dtype="str"))
    frame.insert(1, "basis", pd.Series(bases, dtype="str"))
    return frame


@dataclass(frozen=True)
class _Labels:
    """The label columns of the statistics table for every track, built once per :func:`record`."""

    columns: dict[str, pd.api.extensions.ExtensionArray | np.ndarray]  # signal, basis, statistic, min_n, definition
    size: int  # rows per track

    @classmethod
    def of(cls, tracks: list[_Track], specs: dict[str, list[_Statistic]]) -> _Labels:
        block = [(basis, spec) for basis in BASES for spec in specs[basis]]
        rows = [(track.signal, basis, spec) for track in tracks for basis, spec in block]
        return cls(
            {
                "signal": pd.array([signal for signal, _, _ in rows], dtype="str"),
                "basis": pd.array([basis for _, basis, _ in rows], dtype="str"),
                "statistic": pd.array([spec.name for _, _, spec in rows], dtype="str"),
                "min_n": np.array([spec.min_n for _, _, spec in rows], dtype="int64"),
                "definition": pd.array([spec.definition for _, _, spec in rows], dtype="str"),
            },
            len(block),
        )


def _statistics_frame(day: np.datetime64, labels: _Labels, seen: list[int], values: list[float],
                      counts: list[int]) -> pd.DataFrame:
    """The statistics of the tracks at positions ``seen`` (their values and counts in table order)."""
    columns = labels.columns
    if len(seen) * labels.size != len(columns["min_n"]):  # a signal without observations yet: drop its rows
        rows = np.concatenate([np.arange(labels.size) + track * labels.size for track in seen] or [_NO_ROWS])
        columns = {name: column.take(rows) for name, column in columns.items()}
    n = np.array(counts, dtype="int64")
    return pd.DataFrame(
        {
            "date": np.full(len(n), day, dtype="datetime64[ns]"),
            "signal": columns["signal"],
            "basis": columns["basis"],
            "statistic": columns["statistic"],
            "value": np.array(values, dtype="float64"),
            "n": n,
            "min_n": columns["min_n"],
            "sufficient": n >= columns["min_n"],
            "definition": columns["definition"],
        }
    )
