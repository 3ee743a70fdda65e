"""Dynamic quantile ensemble (Nexus v2's; ``docs/ensembles.md``), vectorised, in two modes.

For every horizon ``h`` of one asset and every date it can forecast, the ensemble ranks the child
models on a trailing window, tries five scoring strategies x two aggregators x eight quantiles
(80 candidate ensembles), keeps the one with the best quality score on the window's validate rows
and forecasts with it. :func:`dynamic_quantile_ensemble` takes the long horizon-slices table
(``date, horizon, symbol, forecast, price``) and returns one row per (date, horizon).

Modes
-----
``"nexus_v2"`` reproduces the Nexus v2 scripts exactly, quirks included. For row ``i`` of ``X_h``
(``i >= lookback``) the window is rows ``i - L .. i - 1``; ``y_h`` on those rows is the price up
to ``h`` observations later, so the forecast for a date uses prices up to ``i - 1 + h``
(look-ahead: a date's forecast changes when later data arrives). Direction base and return are
the previous row's *future* price, the quality score is in squared price units, and
``best_child_forecast`` is the first model of the *last* strategy (``MSE_Only``).

``"point_in_time"`` (default) fixes those flaws. For the date of row ``i`` a training pair
``(t, h)`` is usable only if its target row ``t + h <= i``; the window is the last ``lookback``
usable rows ``i - h - L + 1 .. i - h`` (split into fit/validate as in Nexus v2), so a date is
forecast once ``L + h - 1`` earlier rows exist. With ``P`` a forecast, ``p_t`` the price on the
forecast's own date and ``A = p_{t+h}`` the realised price:
direction ``sign(P - p_t)``, actual direction ``sign(A - p_t)``, return ``A / p_t - 1``, and the
error is the squared relative error ``((P - A) / A) ** 2`` (a fraction, like the returns), used
both as the per-model ``mse`` metric and as the ``mse`` term of the quality score
``10 pnl + 10 hits + 5 dd - mse``, which is therefore scale free.

The *population* of a date is the models with at least one forecast in the date's window (the
``L`` rows ``i - h - L + 1 .. i - h``); only they take part: they are the ``n_models`` (``M``) of
that date, the population of the percentile ranks and the base of ``n = max(1, int(M q))``. A
model that retired before the window, or first publishes after it, is not counted, so a date's
result depends on its window and the date's own row only, never on how much history a run
loaded (a year-long backfill and a one-date daily run give the same bits). Ties in the score
ordering go to the earlier column (ascending ``symbol``: a stable sort), a deterministic order
of this mode's own. ``best_child_forecast`` is the winner's first model. Outputs for a date
depend only on slices rows dated on or before it.

In ``"nexus_v2"`` mode ``M`` is every column of the horizon's whole pivot since the start date,
as the old script pivoted the whole table: pass the horizon's model ``roster`` (every model of
the asset's whole history, including models that first publish after the date) to reproduce it;
without one, the models in ``slices`` are the pivot. The rank populations are the same columns:
a model without a forecast in the fit rows has ``mse`` NaN (so a NaN score, ordered last) but
``dir_acc``, ``pnl`` and ``sharpe`` 0, as pandas computes them.

Definitions Nexus v2 leaves open (identical in both modes)
---------------------------------------------------------
- Ranks are pandas ``rank(pct=True)`` (average ties; NaN stays NaN and is not counted in the
  denominator). A strategy score is ``w_mse r_mse + w_acc r_acc + w_pnl r_pnl + w_shp r_shp``
  evaluated left to right with all four terms, so a NaN rank (only ``mse`` can be NaN: a model
  with no error pair in the fit rows) makes the score NaN even where its weight is 0.
- Models are ordered by score ascending, NaN scores last. Exact ties are common in real tables:
  children with the same direction sequence over the fit rows share ``dir_acc``, ``pnl`` and
  ``sharpe`` to the bit, so strategies without the ``mse`` term (and sums of ranks that happen
  to coincide) tie, often at the top-``n`` boundary, and the tie order decides the forecast.
  ``nexus_v2`` reproduces the old script's order exactly: pandas' default ``sort_values``
  sorts the non-NaN scores, in column order, with ``numpy.argsort(kind="quicksort")`` (not
  stable) and appends the NaN scores in column order; the same sort on bit-identical scores
  gives the same order. That order is a property of the numpy build (its quicksort is an
  introsort with SIMD kernels chosen per CPU), so bit-exact parity holds on the numpy build the
  comparison runs on. ``point_in_time`` uses a stable sort: equal scores keep column order.
- The first combination (strategy, aggregator, quantile order) whose score is strictly greater
  than the best so far (initially -inf) wins. If none is (every score NaN or -inf, e.g. a long
  horizon whose fit window has no realised prices yet), the Nexus v2 script would have no winner
  and fail; here the first combination (``Balanced``, ``mean``, first quantile) is used.
- Sharpe of a model is ``mean / std(ddof=1) * sqrt(252)`` of ``dir * return``, and 0 where fewer
  than two values exist or the variance is not positive. The variance is computed from window
  sums (``(S2 - S1**2 / n) / (n - 1)``); all window sums are sequential in row order, so two
  models with identical values in a window get bit-identical metrics and tie exactly, as in pandas.
  (Only if a model's values in a window are all equal and non-zero can this differ from pandas'
  two-pass std, which may then leave a tiny positive std instead of 0.)
- A horizon with a single model outputs that model's forecast: strategy ``single_model``,
  aggregator ``none``, quantile 1.0, ``n_selected = n_models = 1``. In ``nexus_v2`` mode
  (``M == 1`` for the whole pivot) on every row, with no warm-up, as Nexus v2 does. In point-in-time
  mode only on a date whose window is complete and holds exactly one model: a horizon whose first
  model publishes before the others never emits an unvalidated forecast ahead of the warm-up.
- ``best_child`` is the symbol of the model ``best_child_forecast`` is taken from.
- A forecast, ``best_child_forecast`` or percentile is NaN when the models it is taken from have
  no forecast on the date (e.g. the winner is one model and it is missing that day).

Output
------
One row per (date, horizon), sorted by date then horizon, columns :data:`ENSEMBLE_COLUMNS`
(``"nexus_v2"``: ``date, horizon, forecast, actual, strategy, ...``; ``actual`` is ``y_h`` on the
row). ``p05 .. p95`` are numpy linear percentiles of the selected models' forecasts on the date
(NaN-skipping), for the forecast fan. Dtypes: ``date`` datetime64[ns]; ``horizon``,
``n_selected``, ``n_models`` int64; ``strategy``, ``aggregator``, ``mode`` str; the rest float64.

Implementation
--------------
Python loops run over horizons, blocks of dates, quantiles and the (few) window offsets, never
over single dates or models; everything else is numpy over (dates x models) arrays. Per horizon
the slices are pivoted into ``X`` (dates x models). The model metrics of all forecast dates come
from window sums of per-row terms (errors, ``dir * return``, its square; counts by cumulative
sums). Percentile ranks: one row-wise argsort per metric (``dir_acc`` by counting). The
largest ``n`` best models of each strategy: in point-in-time mode a partition, then a stable sort
of the candidates; in ``nexus_v2`` mode a full quicksort of each (date, strategy) row, as pandas.
The 80 ensembles on the validate rows: the ordered models' forecasts are gathered for a block of
dates at once; means are sums over the first ``n`` columns, computed with the bits pandas uses
(``frame.mean(axis=1)`` sums pairwise per row, or sequentially when the block has a NaN; pandas
takes another path below 6 validate rows, i.e. ``lookback`` < 6, where only the bits of exact
equal-quality ties may differ); medians are one int32 partition per quantile on value-rank codes.
Quality scores and winners are vectorised over dates and combinations with the same
floating-point operations as pandas, so equal-quality ties resolve as in the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from nexus_assets.core.combinations import within_horizon_combinations
from nexus_assets.core.contract import ENSEMBLE_ROWS, HORIZON_SLICE_COLUMNS, columns, dtypes
from nexus_assets.core.parallel import worker_threads
from nexus_assets.core.periods import TRADING_DAYS

__all__ = [
    "LOOKBACK",
    "FIT_SHARE",
    "MIN_FIT_ROWS",
    "MIN_VALIDATE_ROWS",
    "QUANTILES",
    "AGGREGATORS",
    "STRATEGIES",
    "QUALITY_WEIGHTS",
    "PERCENTILES",
    "MODES",
    "SINGLE_MODEL",
    "NO_AGGREGATOR",
    "ENSEMBLE_COLUMNS",
    "ensemble_columns",
    "dynamic_quantile_ensemble",
    "ensembles_with_combinations",
]

LOOKBACK = 60
"""Window length ``L`` in rows of ``X_h``."""
FIT_SHARE = 0.7
"""The fit part of the window is the first ``int(FIT_SHARE * L)`` rows, the rest validates."""
MIN_FIT_ROWS = 10
MIN_VALIDATE_ROWS = 5
"""Below either size, fit and validate are both the whole window."""
QUANTILES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30)
AGGREGATORS: tuple[str, ...] = ("mean", "median")
STRATEGIES: Mapping[str, tuple[float, float, float, float]] = MappingProxyType(
    {  # weights on the percentile ranks of (mse, dir_acc, pnl, sharpe), in evaluation order
        "Balanced": (0.25, 0.25, 0.25, 0.25),
        "Profit_Heavy": (0.0, 0.0, 0.7, 0.3),
        "Accuracy_Heavy": (0.7, 0.3, 0.0, 0.0),
        "Risk_Heavy": (0.1, 0.1, 0.1, 0.7),
        "MSE_Only": (1.0, 0.0, 0.0, 0.0),
    }
)
QUALITY_WEIGHTS: Mapping[str, float] = MappingProxyType({"pnl": 10.0, "hits": 10.0, "drawdown": 5.0, "mse": -1.0})
"""Quality score of an ensemble on the validate rows: ``10 pnl + 10 hits + 5 dd - mse``."""
PERCENTILES: tuple[int, ...] = (5, 25, 75, 95)
MODES: tuple[str, ...] = ("point_in_time", "nexus_v2")
SINGLE_MODEL = "single_model"
NO_AGGREGATOR = "none"
ENSEMBLE_COLUMNS: tuple[str, ...] = columns(ENSEMBLE_ROWS)
"""Output columns in ``point_in_time`` mode; ``nexus_v2`` adds ``actual`` after ``forecast``."""

_SLICE_COLUMNS = HORIZON_SLICE_COLUMNS
_STRATEGY_NAMES = tuple(STRATEGIES)
_WEIGHTS = np.array([STRATEGIES[name] for name in _STRATEGY_NAMES], dtype="float64")
_LAST_STRATEGY = len(_STRATEGY_NAMES) - 1  # MSE_Only: where Nexus v2 takes best_child from
_NAN_SCORE = np.finfo("float64").max  # sorts after every real score, before unknown models (inf)
# Dates per block: the gathered (dates x strategies x validate rows x models) floats stay near
# _BLOCK_BYTES (cache-sized work), but a block always has a few dates (fewer Python steps).
_BLOCK_BYTES = 6 * 2**20
_MIN_BLOCK_ROWS = 8
_SQRT_ANNUAL = np.sqrt(TRADING_DAYS)  # a model's Sharpe, as in Nexus v2, whatever the calendar


def ensemble_columns(mode: str) -> list[str]:
    """The output columns of ``mode``, in order."""
    return list(columns(ENSEMBLE_ROWS, optional=["actual"] if mode == "nexus_v2" else []))


def dynamic_quantile_ensemble(
    slices: pd.DataFrame,
    *,
    mode: str = "point_in_time",
    lookback: int = LOOKBACK,
    dates: Iterable[object] | None = None,
    quantiles: Sequence[float] = QUANTILES,
    roster: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Dynamic quantile ensemble of one asset: one forecast per (date, horizon).

    Parameters
    ----------
    slices:
        The horizon-slices rows of ONE asset: columns ``date, horizon, symbol, forecast, price``
        (extra columns are ignored), any number of dates and horizons, unique per
        (date, horizon, symbol). Models may be missing on some days and forecasts may be NaN.
        Horizons, models and dates all come from this table.
    mode:
        ``"point_in_time"`` (default) or ``"nexus_v2"``; see the module docstring.
    lookback:
        Window length ``L`` in rows (>= 2). The caller must pass at least the ``L + h - 1``
        rows before the first date it wants (and, in ``nexus_v2`` mode, the ``h`` rows after it
        that ``y_h`` looks at).
    dates:
        Dates to output (others are only history). Default: every date that can be forecast.
        A date's output never depends on which other dates are requested.
    quantiles:
        Shares of models to try, in evaluation order (default :data:`QUANTILES`).
    roster:
        ``nexus_v2`` only: every model of each horizon's whole pivot (columns ``horizon, symbol``),
        i.e. the models of the asset's entire history since the start date, including models
        that first publish after the dates asked for. Nexus v2 pivoted the whole table, so its
        ``M`` and its rank populations count them. Models of the roster without rows in
        ``slices`` take part as all-NaN columns. Default: the models in ``slices``.

    Returns
    -------
    pandas.DataFrame
        Columns :func:`ensemble_columns` (``mode``), sorted by ``date, horizon``; see the module
        docstring for their meaning and dtypes. Rows before the first full window are absent.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(lookback, bool) or not isinstance(lookback, (int, np.integer)) or lookback < 2:
        raise ValueError(f"lookback must be an integer >= 2 rows, got {lookback!r}")
    quantiles = tuple(float(q) for q in quantiles)
    if not quantiles or not all(0.0 < q <= 1.0 for q in quantiles):
        raise ValueError(f"quantiles must be a non-empty sequence of shares in (0, 1], got {quantiles!r}")
    missing = [c for c in _SLICE_COLUMNS if c not in slices.columns]
    if missing:
        raise ValueError(
            f"slices lack column(s) {missing}; pass the horizon_slices table (columns {list(_SLICE_COLUMNS)})"
        )
    if roster is not None and mode != "nexus_v2":
        raise ValueError("roster applies to mode 'nexus_v2' only (point_in_time defines its models per date)")
    wanted = None if dates is None else np.unique(pd.to_datetime(pd.Index(list(dates))).to_numpy("datetime64[ns]"))
    parts = []
    horizon_values = slices["horizon"].to_numpy(dtype="int64")
    symbol_ranks, symbol_names = _symbol_ranks(slices["symbol"])
    extra: dict[int, np.ndarray] = {}
    if roster is not None:
        symbol_ranks, symbol_names, extra = _with_roster(symbol_ranks, symbol_names, roster)
    columns = _Columns(
        slices["date"].to_numpy("datetime64[ns]"),
        symbol_ranks,
        symbol_names,
        _floats(slices["forecast"]),
        _floats(slices["price"]),
    )
    if np.isnat(columns.date).any():
        raise ValueError("slices have rows without a date")
    for h in np.unique(horizon_values):
        if h < 1:
            raise ValueError(f"horizons must be >= 1, got {int(h)}")
        pivot = _pivot(columns, np.flatnonzero(horizon_values == h), extra.get(int(h)))
        want = np.ones(len(pivot.dates), dtype=bool) if wanted is None else np.isin(pivot.dates, wanted)
        if want.any():
            parts.append(_horizon_ensemble(pivot, int(h), mode, int(lookback), quantiles, want))
    return _assemble(parts, mode)


def ensembles_with_combinations(slices: pd.DataFrame, *, mode: str, lookback: int, dates,
                                roster: pd.DataFrame | None = None) -> pd.DataFrame:
    """The stored horizon_ensembles table: the quantile ensemble plus the day's price and the plain
    combinations, on the (date, horizon) rows the ensemble forecasts."""
    result = dynamic_quantile_ensemble(slices, mode=mode, lookback=lookback, dates=dates, roster=roster)
    plain = within_horizon_combinations(slices, dates=dates)
    merged = result.merge(plain, on=["date", "horizon"], how="left", validate="one_to_one")
    return merged[[*result.columns[:-1], *plain.columns[2:], result.columns[-1]]]  # `mode` stays last


# ---------------------------------------------------------------------------------------------
# pivot


@dataclass(frozen=True)
class _Pivot:
    dates: np.ndarray  # (T,) datetime64[ns], sorted
    X: np.ndarray  # (T, M) forecasts, NaN where a model has no row (or a NaN forecast)
    price: np.ndarray  # (T,) first non-null price of each date, in row order
    symbols: np.ndarray  # (M,) the model (column) names, ascending


@dataclass(frozen=True)
class _Columns:
    """The slices' columns as numpy arrays, extracted once for every horizon."""

    date: np.ndarray  # datetime64[ns]
    symbol: np.ndarray  # rank of the symbol in ascending order
    names: np.ndarray  # the distinct symbols, ascending (``names[rank]``)
    forecast: np.ndarray
    price: np.ndarray


def _floats(column: pd.Series) -> np.ndarray:
    if column.dtype == np.float64:
        return column.to_numpy()  # no copy
    return column.to_numpy("float64", na_value=np.nan)


def _pivot(columns: _Columns, positions: np.ndarray, extra: np.ndarray | None = None) -> _Pivot:
    """The golden engine's ``X_h`` and ``price_h`` for the rows at ``positions`` (one horizon),
    with all-NaN columns for the symbol ranks in ``extra`` that have no row (a roster's)."""
    date_codes, days = _date_codes(columns.date[positions])
    symbol_codes, present = _dense(columns.symbol[positions], extra)
    n_models = len(present)
    n_dates = len(days)
    flat = date_codes.astype("int64") * n_models + symbol_codes
    counts = np.bincount(flat, minlength=n_dates * n_models)
    if counts.max(initial=0) > 1:
        raise ValueError("slices have duplicate (date, horizon, symbol) rows; deduplicate them first")
    X = np.full(n_dates * n_models, np.nan)
    X[flat] = columns.forecast[positions]
    X = X.reshape(n_dates, n_models)
    # price_h: the first non-null price of each date, in row order
    prices = columns.price[positions]
    ok = ~np.isnan(prices)
    codes_ok, prices_ok = date_codes[ok], prices[ok]
    if (codes_ok[1:] < codes_ok[:-1]).any():  # rows not in date order: sort, stably
        sorter = np.argsort(codes_ok, kind="stable")
        codes_ok, prices_ok = codes_ok[sorter], prices_ok[sorter]
    heads = np.flatnonzero(np.r_[True, codes_ok[1:] != codes_ok[:-1]]) if len(codes_ok) else codes_ok
    price = np.full(n_dates, np.nan)
    price[codes_ok[heads]] = prices_ok[heads]
    return _Pivot(np.asarray(days, dtype="datetime64[ns]"), X, price, columns.names[present])


def _date_codes(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each date among the sorted distinct dates, and those dates."""
    if len(dates) and not (dates[1:] < dates[:-1]).any():  # the stored order: no hashing needed
        new = np.empty(len(dates), dtype=bool)
        new[0] = True
        np.not_equal(dates[1:], dates[:-1], out=new[1:])
        return np.cumsum(new) - 1, dates[new]
    codes, days = pd.factorize(dates, sort=True)
    return codes, np.asarray(days, dtype="datetime64[ns]")


def _dense(ranks: np.ndarray, extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Renumber ranks 0.. in the same order, keeping only the values present or in ``extra``
    (the kept values are returned too)."""
    size = max(int(ranks.max(initial=-1)), int(extra.max(initial=-1)) if extra is not None else -1) + 1
    present = np.bincount(ranks, minlength=size) > 0
    if extra is not None:
        present[extra] = True
    remap = np.cumsum(present) - 1
    return remap[ranks].astype("int64"), np.flatnonzero(present)


def _with_roster(ranks: np.ndarray, names: np.ndarray, roster: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, dict]:
    """Symbol ranks over the union of the slices' symbols and the roster's, and the roster's
    ranks per horizon."""
    missing = [c for c in ("horizon", "symbol") if c not in roster.columns]
    if missing:
        raise ValueError(f"roster lacks column(s) {missing}; pass one row per (horizon, symbol)")
    roster_symbols = roster["symbol"].astype(str).to_numpy(dtype=object)
    union = np.unique(np.concatenate([names.astype(object), roster_symbols]))  # ascending str order
    remap = np.searchsorted(union, names)
    roster_ranks = np.searchsorted(union, roster_symbols)
    roster_horizons = roster["horizon"].to_numpy(dtype="int64")
    extra = {int(h): np.unique(roster_ranks[roster_horizons == h]) for h in np.unique(roster_horizons)}
    dtype = "int32" if len(union) < 2**31 else "int64"
    return remap.astype(dtype).take(ranks), union, extra


def _symbol_ranks(symbols: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """For every row, the rank of its symbol among the distinct symbols in ascending order; and
    those distinct symbols, ascending.

    Ascending ``str`` order is the column order of the golden engine's pivot, which is also the
    order in which ties between models are broken. Symbols are encoded once for all horizons:
    by their categories, by Arrow dictionary encoding (the default ``str`` dtype), or hashed.
    """
    if isinstance(symbols.dtype, pd.CategoricalDtype):
        codes = symbols.cat.codes.to_numpy()
        names = symbols.cat.categories.astype(str).to_numpy(dtype=object)
    elif getattr(symbols.dtype, "storage", None) == "pyarrow":
        import pyarrow as pa

        encoded = pa.array(symbols).dictionary_encode()
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        indices = encoded.indices if encoded.null_count == 0 else encoded.indices.fill_null(-1)
        codes = indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    else:
        codes, uniques = pd.factorize(symbols)
        names = np.asarray(uniques, dtype=object).astype(str).astype(object)
    if len(codes) and codes.min() < 0:
        raise ValueError("slices have rows without a symbol")
    rank = np.empty(len(names), dtype="int32" if len(names) < 2**31 else "int64")
    order = np.argsort(names, kind="stable")
    rank[order] = np.arange(len(names))
    return rank.take(codes), names[order]


# ---------------------------------------------------------------------------------------------
# one horizon


def _split(lookback: int) -> tuple[int, int, int]:
    """(fit length, validate offset, validate length) inside a window of ``lookback`` rows."""
    n_fit = int(FIT_SHARE * lookback)
    n_val = lookback - n_fit
    if n_fit < MIN_FIT_ROWS or n_val < MIN_VALIDATE_ROWS:
        return lookback, 0, lookback
    return n_fit, n_fit, n_val


def _horizon_ensemble(
    pivot: _Pivot, h: int, mode: str, lookback: int, quantiles: tuple[float, ...], want: np.ndarray
) -> dict[str, np.ndarray]:
    X, price = pivot.X, pivot.price
    T, M = X.shape
    actual = np.full(T, np.nan)  # y_h: the price h rows later
    actual[: max(T - h, 0)] = price[h:]
    rows = np.arange(T)
    missing = np.isnan(X)
    presence = None
    out = _empty_result()
    if mode == "nexus_v2":
        start = rows - lookback
        known = np.full(T, M)
        single = want & (known == 1)  # spec: a one-model horizon outputs every row, no warm-up
        if single.any():
            idx = np.flatnonzero(single)
            out = _merge(out, _single_result(idx, X[idx, 0], 0))
    else:
        start = rows - h - lookback + 1
        presence = _cumcount(~missing)
        known = np.zeros(T, dtype="int64")
        ready = want & (start >= 0)
        known[ready] = _population_sizes(presence, start[ready], lookback)
        single = ready & (known == 1)
        if single.any():
            idx = np.flatnonzero(single)
            only = np.argmax(_population(presence, start[idx], lookback), axis=1)
            out = _merge(out, _single_result(idx, X[idx, only], only))
    multi = want & (known >= 2) & (start >= 0)
    if multi.any():
        codes, sorted_values = _value_codes(X, missing)
        horizon = _Horizon(X, np.where(missing, 0.0, X), codes, sorted_values, np.count_nonzero(~missing, axis=1),
                           price, actual, presence, _row_terms(X, price, actual, mode), mode, lookback, quantiles)
        del codes, sorted_values
        for m in np.unique(known[multi]):  # rows that share a model count share n per quantile
            idx = np.flatnonzero(multi & (known == m))
            out = _merge(out, _ensemble_rows(horizon, idx, start[idx], int(m)))
    order = np.argsort(out["row"], kind="stable")
    result = {k: v[order] for k, v in out.items()}
    result["date"] = pivot.dates[result["row"]]
    result["horizon"] = np.full(len(order), h, dtype="int64")
    result["actual"] = actual[result["row"]]
    result["best_child"] = pivot.symbols[result["child"]]
    return result


def _value_codes(X: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each forecast within its row of ``X`` (NaN last) and each row sorted."""
    T, M = X.shape
    sortable = np.where(missing, np.inf, X) if not np.isinf(X).any() else X  # numpy sorts NaN slowly
    by_value = (np.argsort(sortable, axis=1) + (np.arange(T) * M)[:, None]).ravel()
    del sortable
    codes = np.empty(T * M, dtype="int32" if M < 2**31 else "int64")
    codes[by_value] = np.tile(np.arange(M, dtype=codes.dtype), T)
    return codes.reshape(T, M), X.reshape(-1).take(by_value).reshape(T, M)


@dataclass(frozen=True)
class _Terms:
    """Per-row, per-model terms whose window sums give the model metrics (NaN mapped to 0)."""

    err: np.ndarray  # squared error (nexus_v2) or squared relative error (point_in_time)
    err_count: np.ndarray  # cumulative count of valid errors, (T + 1, M), int32
    ret: np.ndarray  # dir * return
    ret_sq: np.ndarray
    ret_count: np.ndarray  # cumulative count of valid dir * return
    hits: np.ndarray  # cumulative count of direction hits
    lag: int  # nexus_v2: the first row of a block has no previous price, so skip it


@dataclass(frozen=True)
class _Horizon:
    X: np.ndarray
    filled: np.ndarray  # X with NaN as 0
    codes: np.ndarray  # rank of each forecast within its row of X (NaN last), int32
    sorted_values: np.ndarray  # each row of X sorted (NaN last)
    n_valid: np.ndarray  # non-NaN forecasts per row of X
    price: np.ndarray
    actual: np.ndarray
    presence: np.ndarray | None  # point_in_time: cumulative count of forecasts per model, (T + 1, M)
    terms: _Terms
    mode: str
    lookback: int
    quantiles: tuple[float, ...]


def _row_terms(X: np.ndarray, price: np.ndarray, actual: np.ndarray, mode: str) -> _Terms:
    with np.errstate(invalid="ignore", divide="ignore"):
        if mode == "nexus_v2":
            prev = np.r_[np.nan, actual[:-1]]
            move = (actual - prev) / prev
            err = (X - actual[:, None]) ** 2
            direction = np.sign(X - prev[:, None])
            actual_dir = np.sign(move)
            lag = 1
        else:
            move = actual / price - 1
            err = ((X - actual[:, None]) / actual[:, None]) ** 2
            direction = np.sign(X - price[:, None])
            actual_dir = np.sign(actual - price)
            lag = 0
        ret = direction * move[:, None]
    hits = direction == actual_dir[:, None]
    err_ok = ~np.isnan(err)
    ret_ok = ~np.isnan(ret)
    ret = np.where(ret_ok, ret, 0.0)
    return _Terms(
        err=np.where(err_ok, err, 0.0),
        err_count=_cumcount(err_ok),
        ret=ret,
        ret_sq=ret * ret,
        ret_count=_cumcount(ret_ok),
        hits=_cumcount(hits),
        lag=lag,
    )


def _cumcount(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((mask.shape[0] + 1, mask.shape[1]), dtype="int32")
    np.cumsum(mask, axis=0, dtype="int32", out=out[1:])
    return out


def _window_sums(values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``values[s] + values[s + 1] + ... + values[s + length - 1]`` for every start, every column.

    Summed sequentially in row order, never as a difference of cumulative sums, so that two
    columns with the same values in a window get bit-identical sums (their metrics tie exactly).
    """
    if length <= 0:
        return np.zeros((len(starts), values.shape[1]))
    if starts[-1] - starts[0] == len(starts) - 1:  # contiguous starts: slices, no gathers
        lo, n = int(starts[0]), len(starts)
        acc = values[lo : lo + n].copy()
        for k in range(1, length):
            acc += values[lo + k : lo + k + n]
        return acc
    acc = values[starts]
    for k in range(1, length):
        acc += values[starts + k]
    return acc


def _window_counts(cumulative: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    return (cumulative[starts + length] - cumulative[starts]).astype("float64")


def _model_metrics(terms: _Terms, starts: np.ndarray, fit_len: int) -> tuple[np.ndarray, ...]:
    """mse, hits, pnl, sharpe of every model on the fit rows of each window, (R, M) each.

    ``dir_acc = hits / fit_len`` ranks exactly like ``hits``, which is returned instead so that it
    can be ranked by counting.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        err_n = _window_counts(terms.err_count, starts, fit_len)
        mse = _window_sums(terms.err, starts, fit_len) / err_n  # NaN where no error pair
        lag, length = terms.lag, fit_len - terms.lag
        hits = _window_counts(terms.hits, starts + lag, length)  # the lagged row is a miss
        s1 = _window_sums(terms.ret, starts + lag, length)
        s2 = _window_sums(terms.ret_sq, starts + lag, length)
        n = _window_counts(terms.ret_count, starts + lag, length)
        var = (s2 - s1 * s1 / n) / (n - 1)
        defined = (n >= 2) & (var > 0)
        sharpe = np.where(defined, (s1 / n) / np.sqrt(np.where(defined, var, 1.0)) * _SQRT_ANNUAL, 0.0)
    return mse, hits, s1, sharpe


def _pct_rank(values: np.ndarray, descending: bool) -> np.ndarray:
    """Row-wise ``pandas.Series.rank(pct=True, ascending=not descending)``: average ties, NaN kept."""
    key = np.negative(values) if descending else values
    missing = np.isnan(key)
    gaps = bool(missing.any())
    if gaps and not np.isinf(key).any():
        key = np.where(missing, np.inf, key)  # numpy's fast sort paths do not take NaN; inf sorts last too
    order = np.argsort(key, axis=1)  # tie order is irrelevant: ties share the average rank
    ranked = np.take_along_axis(key, order, axis=1)
    R, M = key.shape
    valid = ~np.take_along_axis(missing, order, axis=1) if gaps else np.ones((R, M), dtype=bool)
    n_valid = valid.sum(axis=1) if gaps else np.full(R, M)
    pos = np.arange(M)
    new_group = np.ones((R, M), dtype=bool)
    new_group[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    if new_group.all():  # no ties (NaN, kept as NaN, compare unequal): the rank is the position
        first = last = np.broadcast_to(pos, (R, M))
    else:
        first = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
        group_end = np.ones((R, M), dtype=bool)
        group_end[:, :-1] = new_group[:, 1:]
        last = np.minimum.accumulate(np.where(group_end, pos, M)[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = ((first + last + 2) * 0.5) / n_valid[:, None]  # average 1-based rank / count, as pandas
    if gaps:
        pct[~valid] = np.nan
    out = np.empty_like(pct)
    np.put_along_axis(out, order, pct, axis=1)
    return out


def _count_pct_rank(counts: np.ndarray, most: int) -> np.ndarray:
    """:func:`_pct_rank` descending of integer counts ``0 .. most`` (NaN kept), by counting."""
    R, _ = counts.shape
    valid = ~np.isnan(counts)
    bins = most + 2  # the last bin collects NaN
    code = np.where(valid, counts, most + 1).astype("int64")
    table = np.bincount((np.arange(R)[:, None] * bins + code).ravel(), minlength=R * bins).reshape(R, bins)[:, :-1]
    n_valid = table.sum(axis=1, keepdims=True)
    greater = n_valid - np.cumsum(table, axis=1)  # models with a strictly higher count
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = (greater + (table + 1) * 0.5) / n_valid  # average of the tied ranks / count, as pandas
    out = np.take_along_axis(pct, np.minimum(code, most), axis=1)
    out[~valid] = np.nan
    return out


def _top_models(scores: np.ndarray, known: np.ndarray | None, n_top: int) -> np.ndarray:
    """First ``n_top`` models of each (row, strategy) by score ascending; stable; NaN, then unknown, last."""
    R, S, M = scores.shape
    nan = np.isnan(scores)
    key = np.where(nan, _NAN_SCORE, scores) if nan.any() else scores
    if known is not None:
        key = np.where(known[:, None, :], key, np.inf)
    key = key.reshape(R * S, M)
    if n_top < M:
        threshold = np.partition(key, n_top - 1, axis=1)[:, n_top - 1]
        candidate = key <= threshold[:, None]  # every model tied at the threshold stays a candidate
    else:
        candidate = np.ones_like(key, dtype=bool)
    counts = candidate.sum(axis=1)
    width = int(counts.max())
    row, col = np.nonzero(candidate)  # column order within each row
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded_key = np.full((R * S, width), np.inf)
    padded_col = np.zeros((R * S, width), dtype="int64")
    padded_key[row, slot] = key[row, col]
    padded_col[row, slot] = col
    # Stable: equal scores keep column order; padding (inf, at the end) stays behind real models.
    # A row whose keys are all distinct sorts the same either way, and the default sort is faster.
    best = np.argsort(padded_key, axis=1)
    ranked = np.take_along_axis(padded_key, best, axis=1)
    tied = (ranked[:, 1:] == ranked[:, :-1]).any(axis=1)
    if tied.any():
        best[tied] = np.argsort(padded_key[tied], axis=1, kind="stable")
    best = best[:, :n_top]
    return np.take_along_axis(padded_col, best, axis=1).reshape(R, S, n_top)


def _quicksort_top_models(scores: np.ndarray, n_top: int) -> np.ndarray:
    """First ``n_top`` models of each (row, strategy) in the order pandas' default
    ``Series.sort_values()`` gives (Nexus v2's ordering, ties included).

    pandas sorts the non-NaN scores, taken in column order, with ``numpy.argsort(kind="quicksort")``
    and appends the NaN scores in column order. numpy's quicksort is not stable and its tie
    order depends on the whole array (length and values) and on the numpy build, so each row is
    sorted whole, as that same compacted array: rows with the same number of non-NaN scores are
    stacked and sorted along the last axis, which calls the same 1-D sort on each row.
    """
    R, S, M = scores.shape
    key = scores.reshape(R * S, M)
    nan = np.isnan(key)
    valid = M - nan.sum(axis=1)
    out = np.empty((R * S, n_top), dtype="int64")
    for count in np.unique(valid).tolist():
        rows = np.flatnonzero(valid == count)
        if count == M:
            cols = np.broadcast_to(np.arange(M), (len(rows), M))
            compact = key[rows]
        else:
            cols = np.nonzero(~nan[rows])[1].reshape(len(rows), count)  # column order within each row
            compact = np.take_along_axis(key[rows], cols, axis=1)
        ranked = np.take_along_axis(cols, np.argsort(compact, axis=1, kind="quicksort"), axis=1)
        if count >= n_top:
            out[rows] = ranked[:, :n_top]
        else:  # the NaN scores follow, in column order
            tail = np.nonzero(nan[rows])[1].reshape(len(rows), M - count)
            out[rows] = np.concatenate([ranked, tail[:, : n_top - count]], axis=1)
    return out.reshape(R, S, n_top)


def _ensemble_rows(hz: _Horizon, rows: np.ndarray, starts: np.ndarray, n_models: int) -> dict[str, np.ndarray]:
    """Winners and forecasts of ``rows`` (all with ``n_models`` models), a block of dates at a time.

    Blocks are independent, so they are spread over the cores in contiguous runs (numpy releases
    the GIL in the gathers, sorts and partitions); each thread has its own work buffers and the
    results are joined in block order, so the output does not depend on the thread count.
    """
    fit_len, val_off, val_len = _split(hz.lookback)
    sizes = np.array([max(1, int(n_models * q)) for q in hz.quantiles], dtype="int64")
    n_top = int(sizes.max())
    block = max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // (len(_STRATEGY_NAMES) * val_len * n_top * 8))
    lows = list(range(0, len(rows), block))
    workers = min(worker_threads(), len(lows))

    def run(share: list[int]) -> list[dict[str, np.ndarray]]:
        buffers = _Buffers.allocate(min(block, len(rows)) * len(_STRATEGY_NAMES) * val_len, n_top, hz.codes.dtype)
        parts = []
        for lo in share:
            r, s = rows[lo : lo + block], starts[lo : lo + block]
            known = None if hz.presence is None else _population(hz.presence, s, hz.lookback)
            metrics = _model_metrics(hz.terms, s, fit_len)
            if known is not None:  # models outside the date's population take no part in the ranks
                metrics = tuple(np.where(known, m, np.nan) for m in metrics)
            mse, hits, pnl, sharpe = metrics
            ranks = (_pct_rank(mse, False), _count_pct_rank(hits, fit_len), _pct_rank(pnl, True), _pct_rank(sharpe, True))
            scores = np.stack([w[0] * ranks[0] + w[1] * ranks[1] + w[2] * ranks[2] + w[3] * ranks[3] for w in _WEIGHTS], axis=1)
            if hz.mode == "nexus_v2":
                top = _quicksort_top_models(scores, n_top)  # (R, S, n_top)
            else:
                top = _top_models(scores, known, n_top)
            val_rows = s[:, None] + val_off + np.arange(val_len)[None, :]  # (R, V)
            ensembles = _validate_ensembles(hz, top, val_rows, sizes, buffers)  # (R, C, V)
            quality = _quality_scores(ensembles, hz.actual[val_rows], hz.price[val_rows], hz.mode)
            parts.append(_winners(hz, r, top, sizes, quality, n_models))
        return parts

    if workers <= 1:
        parts = run(lows)
    else:
        shares = [list(chunk) for chunk in np.array_split(np.array(lows, dtype="int64"), workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = [part for done in pool.map(run, shares) for part in done]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass(frozen=True)
class _Buffers:
    """Work arrays for one block of validate rows, reused from block to block.

    A fresh multi-megabyte array costs a page fault per 4 KiB when first written; reusing these
    keeps the gathers and partitions in memory that is already mapped (and often cached).
    """

    flat: np.ndarray  # (K, n_top) int64: positions in X
    filled: np.ndarray  # (K, n_top) float64: forecasts, NaN as 0
    codes: np.ndarray  # (K, n_top): value ranks
    missing: np.ndarray  # (K, n_top) bool
    columns: np.ndarray  # (n_top, K) float64: ``filled`` transposed
    work: np.ndarray  # (K, n_top): partition scratch

    @classmethod
    def allocate(cls, K: int, n_top: int, code_dtype: np.dtype) -> _Buffers:
        return cls(np.empty((K, n_top), dtype="int64"), np.empty((K, n_top)), np.empty((K, n_top), dtype=code_dtype),
                   np.empty((K, n_top), dtype=bool), np.empty((n_top, K)), np.empty((K, n_top), dtype=code_dtype))


def _validate_ensembles(hz: _Horizon, top: np.ndarray, val_rows: np.ndarray, sizes: np.ndarray,
                        buffers: _Buffers) -> np.ndarray:
    """Mean and median of the first n ordered models on each validate row, every combination.

    Returns (R, C, V) with C in evaluation order: strategy, then aggregator, then quantile.
    """
    R, S, n_top = top.shape
    V = val_rows.shape[1]
    K = R * S * V
    # One row per (date, strategy, validate row); columns: that strategy's ordered models.
    flat = buffers.flat[:K]
    np.add((val_rows * hz.X.shape[1])[:, None, :, None], top[:, :, None, :], out=flat.reshape(R, S, V, n_top))
    filled = np.take(hz.filled.reshape(-1), flat, out=buffers.filled[:K], mode="clip")  # NaN as 0
    codes = np.take(hz.codes.reshape(-1), flat, out=buffers.codes[:K], mode="clip")  # value rank in its row
    row_of = np.broadcast_to(val_rows[:, None, :], (R, S, V)).reshape(K)
    # Missing forecasts, as a sparse list: (row, column, rank among the row's missing, by column).
    missing = np.greater_equal(codes, hz.n_valid[row_of][:, None], out=buffers.missing[:K])
    hole_row, hole_col = np.divmod(np.flatnonzero(missing), n_top)
    gaps = len(hole_row) > 0
    holes = None
    if gaps:
        per_row = np.bincount(hole_row, minlength=K)
        holes = (hole_row, hole_col, np.arange(len(hole_row)) - np.repeat(np.cumsum(per_row) - per_row, per_row))
    running: dict[int, np.ndarray] | None = None
    ensembles = np.empty((R, S, len(AGGREGATORS), len(sizes), V))
    done: dict[int, int] = {}
    valid = np.zeros(K, dtype="int64")
    counted = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, n in enumerate(sizes.tolist()):
            if n in done:  # int(M q) repeats for small M: the same ensemble
                ensembles[:, :, :, j] = ensembles[:, :, :, done[n]]
                continue
            done[n] = j
            valid += n - counted
            if gaps:
                valid -= np.bincount(hole_row[(hole_col >= counted) & (hole_col < n)], minlength=K)
            counted = n
            # pandas' ``frame.mean(axis=1)`` sums a block (one date and strategy, all validate
            # rows) without NaN pairwise per row, as numpy sums a contiguous run; a block with a
            # NaN is copied first, which makes its sum sequential in column order. Ties between
            # equal-quality combinations depend on these bits, so both are reproduced.
            gappy = np.repeat((valid.reshape(R * S, V) < n).any(axis=1), V)
            if gappy.any():
                if running is None:
                    running = _running_sums(filled, sizes, buffers.columns[:, :K])
                total = running[n].copy()
                whole = np.flatnonzero(~gappy)
                if whole.size:
                    total[whole] = filled[whole, :n].sum(axis=1)
            else:
                total = filled[:, :n].sum(axis=1)  # pairwise within each row
            ensembles[:, :, 0, j] = (total / valid).reshape(R, S, V)
            work = buffers.work[:K, :n]
            np.copyto(work, codes[:, :n])
            ensembles[:, :, 1, j] = _median(work, holes, valid, hz.sorted_values, row_of).reshape(R, S, V)
    return ensembles.reshape(R, -1, V)


def _running_sums(filled: np.ndarray, sizes: np.ndarray, columns: np.ndarray) -> dict[int, np.ndarray]:
    """Sums of the first n columns of each row, added one column at a time (sequentially).

    ``columns`` receives ``filled`` transposed; a reduction over its outer axis adds whole rows
    in order, so each sum is the sequential one. Each segment is reduced starting from the
    running total, written into the row just before it, which continues the sequence exactly.
    """
    np.copyto(columns, filled.T)
    out: dict[int, np.ndarray] = {}
    done = 0
    for n in sorted(set(sizes.tolist())):
        if done == 0:
            out[n] = np.add.reduce(columns[:n], axis=0)
        else:
            columns[done - 1] = out[done]
            out[n] = np.add.reduce(columns[done - 1 : n], axis=0)
        done = n
    return out


def _median(work: np.ndarray, holes: tuple[np.ndarray, np.ndarray, np.ndarray] | None, valid: np.ndarray,
            sorted_values: np.ndarray, row_of: np.ndarray) -> np.ndarray:
    """NaN-skipping median of each row of ``work`` (value-rank codes of the first n models); clobbers it.

    Codes rank each forecast within its row of ``X`` (NaN ranks last), so order statistics of
    codes are those of the values and ``sorted_values[row, code]`` is the value; int32 partitions
    are much faster than float ones. One partition at ``k = n // 2`` serves every row: a row with
    ``c < n`` valid entries has ``z = k - c // 2`` of its NaN codes lowered to -1 (the others
    already rank above every valid code), which puts the upper middle of its valid entries at
    ``k``; the lower middle (even ``c``) is then the maximum to the left of ``k``. ``holes`` lists
    the missing entries (row, column, rank among the row's missing entries in column order).
    """
    n = work.shape[1]
    k = n // 2
    if holes is not None:
        row, col, rank = holes
        lowered = k - valid // 2  # how many of each row's missing values go low
        pick = (col < n) & (rank < lowered[row])  # the first ones, in column order
        work[row[pick], col[pick]] = -1
    work.partition(k, axis=1)
    upper = work[:, k]
    median = sorted_values[row_of, upper]
    even = np.flatnonzero((valid % 2 == 0) & (valid > 0))
    if even.size and k > 0:
        below = work[:, :k].max(axis=1)[even] if 2 * even.size > len(valid) else work[even, :k].max(axis=1)
        median[even] = (sorted_values[row_of[even], below] + median[even]) / 2
    median[valid == 0] = np.nan
    return median


def _quality_scores(E: np.ndarray, actual: np.ndarray, price: np.ndarray, mode: str) -> np.ndarray:
    """Spec step 4 for ensembles ``E`` (R, C, V) on the validate rows, vectorised over R and C.

    The same floating-point operations as pandas on a Series of V values: sums and means over a
    contiguous last axis (numpy's pairwise sum, as ``Series.sum``), products and running maxima
    in order, NaN skipped the way ``cumprod``/``cummax``/``min`` skip it.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        if mode == "nexus_v2":
            base = np.full_like(actual, np.nan)  # prev: the actual shifted one row inside the block
            base[:, 1:] = actual[:, :-1]
            move = (actual - base) / base
            actual_dir = np.sign(move)
            err = (E - actual[:, None, :]) ** 2
        else:
            base = price
            move = actual / price - 1
            actual_dir = np.sign(actual - price)
            err = ((E - actual[:, None, :]) / actual[:, None, :]) ** 2
        signal = np.sign(E - base[:, None, :])
        err_ok = ~np.isnan(err)
        mse = np.where(err_ok, err, 0.0).sum(axis=-1) / err_ok.sum(axis=-1)
        hits = (signal == actual_dir[:, None, :]).sum(axis=-1) / E.shape[-1]
        rets = signal * move[:, None, :]
        rets_ok = ~np.isnan(rets)
        pnl = np.where(rets_ok, rets, 0.0).sum(axis=-1)
        growth = 1 + rets
        cum_gap = np.isnan(growth)
        cum = np.cumprod(np.where(cum_gap, 1.0, growth), axis=-1)
        cum[cum_gap] = np.nan
        peak_gap = np.isnan(cum)
        peak = np.maximum.accumulate(np.where(peak_gap, -np.inf, cum), axis=-1)
        peak[peak_gap] = np.nan
        drawdown = (cum - peak) / peak
        dd_gap = np.isnan(drawdown)
        dd = np.where(dd_gap, np.inf, drawdown).min(axis=-1)
        dd[dd_gap.all(axis=-1)] = np.nan
        w = QUALITY_WEIGHTS  # 10 pnl + 10 hits + 5 dd - mse, term by term, left to right
        return w["pnl"] * pnl + w["hits"] * hits + w["drawdown"] * dd + w["mse"] * mse


def _winners(hz: _Horizon, rows: np.ndarray, top: np.ndarray, sizes: np.ndarray, quality: np.ndarray,
             n_models: int) -> dict[str, np.ndarray]:
    """The first strictly-best combination of each row and its forecast, fan and best child."""
    R, _, n_top = top.shape
    scores = np.where(np.isnan(quality), -np.inf, quality)
    best = scores.max(axis=1)
    winner = np.argmax(scores == best[:, None], axis=1)  # first of the best = strict improvement
    winner[best == -np.inf] = 0  # nothing beats -inf: fall back to the first combination
    n_q, n_agg = len(sizes), len(AGGREGATORS)
    strategy, aggregator, quantile = winner // (n_agg * n_q), (winner // n_q) % n_agg, winner % n_q
    n_selected = sizes[quantile]
    chosen = top[np.arange(R), strategy]  # (R, n_top)
    picked = hz.X[rows[:, None], chosen]
    picked[np.arange(n_top)[None, :] >= n_selected[:, None]] = np.nan
    ordered = np.sort(picked, axis=1)  # NaN last
    count = (~np.isnan(ordered)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(np.isnan(picked), 0.0, picked).sum(axis=1) / count
        lo, hi = np.maximum(count - 1, 0) // 2, np.maximum(count, 1) // 2
        median = (np.take_along_axis(ordered, lo[:, None], 1)[:, 0] + np.take_along_axis(ordered, hi[:, None], 1)[:, 0]) / 2
    median[count == 0] = np.nan
    fan = _linear_percentiles(ordered, count, PERCENTILES)
    child_strategy = np.full(R, _LAST_STRATEGY) if hz.mode == "nexus_v2" else strategy
    child = top[np.arange(R), child_strategy, 0]
    return {
        "row": rows.astype("int64"),
        "forecast": np.where(aggregator == 0, mean, median),
        "strategy": np.array(_STRATEGY_NAMES, dtype=object)[strategy],
        "aggregator": np.array(AGGREGATORS, dtype=object)[aggregator],
        "quantile": np.array(hz.quantiles, dtype="float64")[quantile],
        "n_selected": n_selected.astype("int64"),
        "n_models": np.full(R, n_models, dtype="int64"),
        "best_child_forecast": hz.X[rows, child],
        "child": child.astype("int64"),
        **{f"p{p:02d}": fan[j] for j, p in enumerate(PERCENTILES)},
    }


def _linear_percentiles(ordered: np.ndarray, count: np.ndarray, percents: Sequence[int]) -> list[np.ndarray]:
    """``np.nanpercentile(..., method="linear")`` of each row's first ``count`` sorted values."""
    R = len(count)
    last = np.maximum(count - 1, 0)
    out = []
    for p in percents:
        virtual = last * (p / 100)
        below = np.floor(virtual)
        at_top = virtual >= last
        prev = np.where(at_top, last, below).astype("int64")
        nxt = np.where(at_top, last, below + 1).astype("int64")
        gamma = virtual - below
        a = ordered[np.arange(R), prev]
        b = ordered[np.arange(R), nxt]
        diff = b - a
        value = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        value = np.where(at_top, ordered[np.arange(R), last], value)
        value[count == 0] = np.nan
        out.append(value)
    return out


def _population(presence: np.ndarray, starts: np.ndarray, lookback: int) -> np.ndarray:
    """(R, M): the models with at least one forecast in each window ``starts .. starts + L - 1``."""
    return (presence[starts + lookback] - presence[starts]) > 0


def _population_sizes(presence: np.ndarray, starts: np.ndarray, lookback: int) -> np.ndarray:
    """Models in each window's population, a block of windows at a time (bounded memory)."""
    sizes = np.empty(len(starts), dtype="int64")
    block = max(1, _BLOCK_BYTES // max(1, presence.shape[1] * 4))
    for lo in range(0, len(starts), block):
        sizes[lo : lo + block] = _population(presence, starts[lo : lo + block], lookback).sum(axis=1)
    return sizes


def _single_result(rows: np.ndarray, value: np.ndarray, child: np.ndarray | int) -> dict[str, np.ndarray]:
    n = len(rows)
    return {
        "row": rows.astype("int64"),
        "forecast": value,
        "strategy": np.full(n, SINGLE_MODEL, dtype=object),
        "aggregator": np.full(n, NO_AGGREGATOR, dtype=object),
        "quantile": np.ones(n),
        "n_selected": np.ones(n, dtype="int64"),
        "n_models": np.ones(n, dtype="int64"),
        "best_child_forecast": value.copy(),
        "child": np.broadcast_to(np.asarray(child, dtype="int64"), (n,)).copy(),
        **{f"p{p:02d}": value.copy() for p in PERCENTILES},
    }


def _empty_result() -> dict[str, np.ndarray]:
    return _single_result(np.array([], dtype="int64"), np.array([], dtype="float64"), 0)


def _merge(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _assemble(parts: list[dict[str, np.ndarray]], mode: str) -> pd.DataFrame:
    columns = ensemble_columns(mode)
    merged = _empty_result() | {"date": np.array([], dtype="datetime64[ns]"), "horizon": np.array([], dtype="int64"),
                                "actual": np.array([], dtype="float64"), "best_child": np.array([], dtype=object)}
    for part in parts:
        merged = {k: np.concatenate([merged[k], part[k]]) for k in merged}
    merged["mode"] = [mode] * len(merged["date"])
    frame = pd.DataFrame({name: pd.Series(merged[name], dtype=dtype)
                          for name, dtype in dtypes(ENSEMBLE_ROWS, optional=["actual"]).items()})
    frame = frame.sort_values(["date", "horizon"], kind="stable").reset_index(drop=True)
    return frame[columns]
