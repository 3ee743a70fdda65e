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

Each statistic is declared once, in :func:`statistics`: a :class:`Statistic` with its name, minimum
sample, definition (the table's ``definition`` column) and function of a :class:`Sample` (one
signature for all, so a statistic plugs in by being declared there).

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
Rows are ordered by signal (``raw``, ``optimised``, then the ML signals ``ml_h<h>`` by horizon
when ``ml_signals`` rows are passed too), then basis (``point_in_time``, ``legacy``),
then the declaration order of :func:`statistics` (statistics) or the trade number (trades); the
daily rows by signal, then date. A signal without an observation by ``D`` has no rows; a date
before every observation gets three empty, typed tables.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexus_assets.core import trading
from nexus_assets.core.contract import DAILY, DAILY_ROWS, STATISTICS, TRADE_ROWS, TRADES, columns, empty_frame
from nexus_assets.core.ml_signals import RECORD_INPUT_COLUMNS, variant_horizon
from nexus_assets.core.periods import TRADING_DAYS, periods_per_year
from nexus_assets.core.signals import parse_horizons

__all__ = [
    "SIGNALS",
    "RECORD_INPUT_COLUMNS",
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
    "Sample",
    "Statistic",
    "statistics",
    "statistic_names",
    "record",
    "record_signals",
    "days_by_horizon_set",
]



class _LazyModule:
    """A module imported on first use: empyrical imports scipy.stats and scipy.optimize (1.9 s of the
    4.5 s it took to load the definitions), which every process loading the code location paid (a
    Celery step, the UI's code server, each command) though only the metrics step calls it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)


empyrical = _LazyModule("empyrical")

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

_SIGNAL_COLUMNS = RECORD_INPUT_COLUMNS
_NO_ROWS = np.zeros(0, dtype="int64")
_EXACT = 1  # min_n of figures that are exact for any sample (total return, exposure, buy and hold)


def statistic_names(basis: str, *, horizons: Sequence[int]) -> tuple[str, ...]:
    """The statistics of ``basis``, in table order, for an asset with these horizons."""
    return tuple(statistic.name for statistic in statistics(basis, horizons=horizons))


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
        horizons, net_prob, position, price``; ``variant`` in :data:`SIGNALS` or an ML signal
        ``ml_h<h>`` (``ml_signals`` rows, simulated the same way), one row per (date, variant),
        prices finite and > 0, positions -1, 0 or +1, ``horizons`` like ``"1,3,5"``.
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
        for signal in record_signals(frame["variant"])
    ]
    declared = {basis: statistics(basis, periods=periods, cost_bps=cost_bps, horizons=steps) for basis in BASES}
    labels = _Labels.of(tracks, declared)
    rows = [_rows(tracks, day, declared=declared, periods=periods) for day in wanted]
    # every date's rows taken in one go per table and sliced per date: the same frames as one take
    # (or construction) per date and table, without ~0.8 s of pandas overhead in a year's run
    tables = {
        "statistics": _statistics_frame(wanted, labels, rows),
        "trades": _trades_frame(tracks).take(np.concatenate([r.trades for r in rows])),
        "daily": _daily_frame(tracks).take(np.concatenate([r.daily for r in rows])),
    }
    sizes = {"statistics": [len(r.counts) for r in rows], "trades": [len(r.trades) for r in rows],
             "daily": [len(r.daily) for r in rows]}
    ends = {name: np.cumsum(sizes[name]).tolist() for name in TABLES}
    return {
        pd.Timestamp(day).date(): {
            name: tables[name].iloc[(ends[name][i - 1] if i else 0):ends[name][i]].reset_index(drop=True)
            for name in TABLES
        }
        for i, day in enumerate(wanted)
    }


def days_by_horizon_set(history, days, configured) -> dict:
    """As-of days grouped by the horizons their accuracy is reported at: the catalog's, else those
    of the raw signal on or before the day (a horizon that appears later never changes a past date)."""
    if configured:
        return {tuple(sorted(configured)): list(days)}
    if history is None:
        return {(): list(days)}
    raw = history[history["variant"] == "raw"][["date", "horizons"]].sort_values("date")
    groups: dict[tuple, list] = {}
    seen: set[int] = set()
    rows = iter(raw.itertuples(index=False))
    pending = next(rows, None)
    for day in sorted(days):
        while pending is not None and pending.date.date() <= day:
            seen.update(parse_horizons(pending.horizons))
            pending = next(rows, None)
        groups.setdefault(tuple(sorted(seen)), []).append(day)
    return groups


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


@dataclass(frozen=True)
class _DayRows:
    """What the tables hold as of one date: rows of the whole-history trades and daily frames, and
    the statistics (the tracks with an observation, their values and counts in table order)."""

    trades: np.ndarray
    daily: np.ndarray
    seen: list[int]
    values: list[float]
    counts: list[int]


def _rows(tracks: list[_Track], day: np.datetime64, *, declared: dict[str, tuple[Statistic, ...]],
          periods: int) -> _DayRows:
    """The rows of the three tables as of ``day``: slices of the whole-history frames and the statistics."""
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
            for basis, sample in (("point_in_time", _point_in_time_sample(track, seen, periods)),
                                  ("legacy", _legacy_sample(track, legacy_rows))):
                # empyrical's own power and division on degenerate samples (no dispersion, equity <= 0)
                # would warn; those values are undefined and reported as NaN
                with np.errstate(divide="ignore", invalid="ignore"):
                    values += _finite([statistic.function(sample) for statistic in declared[basis]])
                counts += [statistic.n(sample) for statistic in declared[basis]]
        if shown:
            daily_rows.append(daily_offset + np.arange(shown))
        daily_offset += len(track.rows)
    return _DayRows(np.concatenate(trade_rows or [_NO_ROWS]), np.concatenate(daily_rows or [_NO_ROWS]), seen_tracks,
                    values, counts)


def _point_in_time_sample(track: _Track, seen: int, periods: int) -> Sample:
    book = track.point_in_time
    closed = book.closed_by(seen - 1)
    scored = {}
    for k, (signalled, hits) in track.scored.items():
        j = max(seen - k, 0)  # signals at rows i <= M - 1 - k
        scored[k] = (int(signalled[j]), int(hits[j]))
    return Sample(
        returns=track.returns[:seen], equity=float(track.equity[seen - 1]), position=track.position[:seen],
        price=track.price[:seen], trades=book.net[:closed], days=book.days[:closed],
        observations=book.observations[:closed], scored=scored, periods=periods,
    )


def _legacy_sample(track: _Track, legacy_rows: int) -> Sample:
    book = track.legacy
    closed = book.closed_by(legacy_rows - 1) if legacy_rows else 0
    signalled, hits = track.legacy_scored
    j = max(legacy_rows - 1, 0)  # pairs (i, i + 1) of legacy rows: i <= legacy_rows - 2
    none = np.zeros(0, dtype="float64")
    return Sample(
        returns=none, equity=np.nan, position=np.zeros(0, dtype="int64"), price=none, trades=book.net[:closed],
        days=book.days[:closed], observations=book.observations[:closed],
        scored={1: (int(signalled[j]), int(hits[j]))}, periods=TRADING_DAYS,
    )


def _finite(values: list) -> list[float]:
    """Floats, NaN for an undefined (infinite or NaN) value."""
    return [float(v) if np.isfinite(v) else np.nan for v in values]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else np.nan


# ---------------------------------------------------------------------------------------------
# the statistics: one declaration each (name, minimum sample, definition, function, sample size)


@dataclass(frozen=True)
class Sample:
    """What a statistic sees of one signal's record as of one date, on one basis.

    Point in time: ``returns`` are the daily strategy returns ``r`` of the ``N`` observations up to
    ``D``, ``equity`` the equity on ``D``, ``position`` and ``price`` the observations' own. Legacy:
    those are empty (NaN), and ``periods`` is 252. Both: ``trades`` are the closed trades' net
    returns (legacy: the legacy trade returns ``x``) in exit order, ``days`` and ``observations``
    what each was held, and ``scored[k]`` the non-neutral signals scored ``k`` observations ahead
    by ``D`` and their hits.
    """

    returns: np.ndarray
    equity: float
    position: np.ndarray
    price: np.ndarray
    trades: np.ndarray
    days: np.ndarray
    observations: np.ndarray
    scored: Mapping[int, tuple[int, int]]
    periods: int

    @functools.cached_property
    def wins(self) -> np.ndarray:
        return self.trades[self.trades > 0]

    @functools.cached_property
    def losses(self) -> np.ndarray:
        return self.trades[self.trades < 0]


@dataclass(frozen=True)
class Statistic:
    """One row of the statistics table per signal and basis: ``function(sample)`` is its value
    (infinite or NaN is reported as NaN: undefined), ``n(sample)`` the size of the sample it is
    computed on, trusted once ``n >= min_n``; ``definition`` says what it is, in the table."""

    name: str
    min_n: int
    definition: str
    function: Callable[[Sample], float]
    n: Callable[[Sample], int]


def _returns(sample: Sample) -> int:
    return len(sample.returns)


def _trades(sample: Sample) -> int:
    return len(sample.trades)


def _signals(k: int) -> Callable[[Sample], int]:
    return lambda sample: sample.scored[k][0]


def _accuracy(k: int) -> Callable[[Sample], float]:
    def accuracy(sample: Sample) -> float:
        signalled, hits = sample.scored[k]
        return hits / signalled if signalled else np.nan

    return accuracy


def _win_rate(sample: Sample) -> float:
    return len(sample.wins) / len(sample.trades) if len(sample.trades) else np.nan


def _profit_factor(sample: Sample) -> float:
    return sample.wins.sum() / -sample.losses.sum() if len(sample.losses) else np.nan


def _best_trade(sample: Sample) -> float:
    return sample.trades.max() if len(sample.trades) else np.nan


def _worst_trade(sample: Sample) -> float:
    return sample.trades.min() if len(sample.trades) else np.nan


def _legacy_sharpe(sample: Sample) -> float:
    x = sample.trades
    spread = x.std(ddof=1) if x.max() != x.min() else np.nan  # equal returns: no dispersion, no Sharpe
    return x.mean() / spread * np.sqrt(TRADING_DAYS / sample.days.mean())


def _legacy_drawdown(sample: Sample) -> float:
    equity = np.cumprod(1.0 + sample.trades)
    return (equity / np.maximum.accumulate(np.maximum(equity, 1.0)) - 1.0).min()


def _nexus_v2(function: Callable[[Sample], float]) -> Callable[[Sample], float]:
    """A legacy trade figure: NaN below :data:`MIN_LEGACY_TRADES` trades, as Nexus v2 reported none."""
    return lambda sample: function(sample) if len(sample.trades) >= MIN_LEGACY_TRADES else np.nan


def _steps(horizons: Sequence[int]) -> tuple[int, ...]:
    """Observations ahead at which accuracy is scored: 1 and every horizon, ascending."""
    values = list(horizons)
    if not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1 for h in values):
        raise ValueError(f"horizons must be integers >= 1 (observations), got {values!r}")
    return tuple(sorted({1, *(int(h) for h in values)}))


def statistics(basis: str, *, periods: int = TRADING_DAYS, cost_bps: float = 0.0,
               horizons: Sequence[int]) -> tuple[Statistic, ...]:
    """The statistics of ``basis``, in table order: the one declaration of each row of the
    statistics table (its definition names ``periods`` and ``cost_bps``; a directional accuracy
    is declared for 1 and each of ``horizons``)."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    steps = _steps(horizons)
    return _point_in_time(periods, float(cost_bps), steps) if basis == "point_in_time" else _legacy()


def _point_in_time(periods: int, cost_bps: float, steps: tuple[int, ...]) -> tuple[Statistic, ...]:
    r = f"daily strategy returns r (cost {cost_bps:g} bps per side)"
    p = f"annualization={periods}"
    trades = "closed trades' net_return"
    return (
        Statistic("total_return", _EXACT, f"prod(1 + r) - 1 over the {r}: equity on D - 1, compounded",
                  lambda s: s.equity - 1.0, _returns),
        Statistic("annual_return", MIN_RETURNS,
                  f"empyrical.annual_return({r}, {p}) = (1 + total_return) ** ({periods} / N) - 1",
                  lambda s: empyrical.annual_return(s.returns, annualization=s.periods), _returns),
        Statistic("annual_volatility", MIN_RETURNS,
                  f"empyrical.annual_volatility({r}, {p}) = std(r, ddof=1) * sqrt({periods})",
                  lambda s: empyrical.annual_volatility(s.returns, annualization=s.periods), _returns),
        Statistic("sharpe_ratio", MIN_RETURNS,
                  f"empyrical.sharpe_ratio({r}, {p}) = mean(r) / std(r, ddof=1) * sqrt({periods}); "
                  "NaN without dispersion",
                  lambda s: empyrical.sharpe_ratio(s.returns, annualization=s.periods), _returns),
        Statistic("sortino_ratio", MIN_RETURNS,
                  f"empyrical.sortino_ratio({r}, {p}) = mean(r) * {periods} / (sqrt(mean(min(r, 0) ** 2)) * "
                  f"sqrt({periods})), downside deviation over all N returns; NaN without a negative return",
                  lambda s: empyrical.sortino_ratio(s.returns, annualization=s.periods), _returns),
        Statistic("max_drawdown", MIN_RETURNS,
                  f"empyrical.max_drawdown({r}) = min(equity / running peak - 1), compounded, "
                  "peak includes the starting 1",
                  lambda s: empyrical.max_drawdown(s.returns), _returns),
        Statistic("calmar_ratio", MIN_RETURNS,
                  f"empyrical.calmar_ratio({r}, {p}) = annual_return / |max_drawdown|; NaN without a drawdown",
                  lambda s: empyrical.calmar_ratio(s.returns, annualization=s.periods), _returns),
        Statistic("value_at_risk", MIN_RETURNS,
                  f"empyrical.value_at_risk({r}, cutoff={VAR_CUTOFF}) = numpy percentile {VAR_CUTOFF * 100:g} "
                  "(linear) of r",
                  lambda s: empyrical.value_at_risk(s.returns, cutoff=VAR_CUTOFF), _returns),
        Statistic("conditional_value_at_risk", MIN_RETURNS,
                  f"empyrical.conditional_value_at_risk({r}, cutoff={VAR_CUTOFF}) = mean of the "
                  f"int((N - 1) * {VAR_CUTOFF}) + 1 lowest r",
                  lambda s: empyrical.conditional_value_at_risk(s.returns, cutoff=VAR_CUTOFF), _returns),
        Statistic("exposure", _EXACT, "share of observations up to D with position != 0",
                  lambda s: np.count_nonzero(s.position) / len(s.position), _returns),
        Statistic("buy_and_hold_return", _EXACT, "price on D / first price - 1",
                  lambda s: s.price[-1] / s.price[0] - 1.0, _returns),
        Statistic("trades", MIN_TRADES, "number of closed trades (entry and exit by D); flags the trade statistics",
                  _trades, _trades),
        Statistic("win_rate", MIN_TRADES, f"share of {trades} > 0", _win_rate, _trades),
        Statistic("average_win", MIN_TRADES, f"mean of {trades} > 0", lambda s: _mean(s.wins), _trades),
        Statistic("average_loss", MIN_TRADES, f"mean of {trades} < 0", lambda s: _mean(s.losses), _trades),
        Statistic("profit_factor", MIN_TRADES, f"sum of {trades} > 0 / |sum of those < 0|; NaN without a losing trade",
                  _profit_factor, _trades),
        Statistic("expectancy", MIN_TRADES, f"mean of {trades} (after 2 x {cost_bps:g} bps)",
                  lambda s: _mean(s.trades), _trades),
        Statistic("best_trade", MIN_TRADES, f"max of {trades}", _best_trade, _trades),
        Statistic("worst_trade", MIN_TRADES, f"min of {trades}", _worst_trade, _trades),
        Statistic("average_holding_days", MIN_TRADES, "mean (exit_date - entry_date).days of closed trades",
                  lambda s: _mean(s.days), _trades),
        Statistic("average_holding_observations", MIN_TRADES, "mean observations from entry to exit of closed trades",
                  lambda s: _mean(s.observations), _trades),
        *(
            Statistic(f"directional_accuracy_{k}", MIN_SIGNALS,
                      f"share of non-neutral signals at t_i with t_(i+{k}) <= D where sign(position) == "
                      f"sign(price_(i+{k}) - price_i), {k} observation(s) ahead; a zero move is a miss",
                      _accuracy(k), _signals(k))
            for k in steps
        ),
    )


def _legacy() -> tuple[Statistic, ...]:
    x = "closed legacy trade returns x (at the price h_min observations after the signal date, no cost)"
    nexus = f"Nexus v2; NaN below {MIN_LEGACY_TRADES} trades"
    least = MIN_LEGACY_TRADES
    return (
        Statistic("trades", least, "number of closed legacy trades whose legacy prices are realised by D",
                  _trades, _trades),
        Statistic("total_return", least, f"sum of {x} (Nexus v2: sum of trade %; here a fraction); {nexus}",
                  _nexus_v2(lambda s: s.trades.sum()), _trades),
        Statistic("win_rate", least, f"share of {x} > 0; {nexus}", _nexus_v2(_win_rate), _trades),
        Statistic("average_win", least, f"mean of {x} > 0; {nexus}", _nexus_v2(lambda s: _mean(s.wins)), _trades),
        Statistic("average_loss", least, f"mean of {x} < 0; {nexus}", _nexus_v2(lambda s: _mean(s.losses)), _trades),
        Statistic("profit_factor", least, f"sum of {x} > 0 / |sum of those < 0|; NaN without a losing trade; {nexus}",
                  _nexus_v2(_profit_factor), _trades),
        Statistic("sharpe_ratio", least,
                  f"mean(x) / std(x, ddof=1) * sqrt({TRADING_DAYS} / average holding days) of {x}; {nexus}",
                  _nexus_v2(_legacy_sharpe), _trades),
        Statistic("max_drawdown", least,
                  f"min(E / running peak - 1), E = cumprod(1 + x) of {x}, peak includes the starting 1; {nexus}",
                  _nexus_v2(_legacy_drawdown), _trades),
        Statistic("best_trade", least, f"max of {x}; {nexus}", _nexus_v2(_best_trade), _trades),
        Statistic("worst_trade", least, f"min of {x}; {nexus}", _nexus_v2(_worst_trade), _trades),
        Statistic("average_holding_days", least,
                  f"mean (exit signal date - entry signal date).days of closed legacy trades; {nexus}",
                  _nexus_v2(lambda s: s.days.mean()), _trades),
        Statistic("directional_accuracy_1", MIN_SIGNALS,
                  "share of non-neutral signals at row i (rows i and i + 1 usable by D) where sign(position) == "
                  "sign(legacy price_(i+1) - legacy price_i), Nexus v2; a zero move is a miss",
                  _accuracy(1), _signals(1)),
    )


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
    unknown = sorted(v for v in set(frame["variant"].astype(str)) - set(SIGNALS) if variant_horizon(v) is None)
    if unknown:
        raise ValueError(f"signals have unknown variant(s) {unknown}; expected {list(SIGNALS)} or ml_h<horizon>")
    return frame


def record_signals(variants: pd.Series) -> list[str]:
    """The signals present in ``variants``, in table order: the slope signals (:data:`SIGNALS`), then
    the ML signals ``ml_h<h>`` by horizon."""
    present = set(variants.astype(str))
    ml = sorted((h, v) for v in present if (h := variant_horizon(v)) is not None)
    return [signal for signal in SIGNALS if signal in present] + [v for _, v in ml]


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
    def of(cls, tracks: list[_Track], declared: dict[str, tuple[Statistic, ...]]) -> _Labels:
        block = [(basis, spec) for basis in BASES for spec in declared[basis]]
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


def _statistics_frame(days: np.ndarray, labels: _Labels, rows: list[_DayRows]) -> pd.DataFrame:
    """The statistics of every date, one after the other: per date, those of the tracks it has seen
    (their values and counts in table order)."""
    picked = [np.arange(labels.size) + track * labels.size for r in rows for track in r.seen]
    columns = {name: column.take(np.concatenate(picked or [_NO_ROWS])) for name, column in labels.columns.items()}
    n = np.array([c for r in rows for c in r.counts], dtype="int64")
    return pd.DataFrame(
        {
            "date": np.repeat(days, [len(r.counts) for r in rows]).astype("datetime64[ns]"),
            "signal": columns["signal"],
            "basis": columns["basis"],
            "statistic": columns["statistic"],
            "value": np.array([v for r in rows for v in r.values], dtype="float64"),
            "n": n,
            "min_n": columns["min_n"],
            "sufficient": n >= columns["min_n"],
            "definition": columns["definition"],
        }
    )
