"""Plain within-horizon combinations of the child models, next to the quantile ensemble.

Nexus v2's horizon search (``docs/horizon-search.md``) compares ways of combining a horizon's models: the
dynamic quantile ensemble (``core.ensembles``) and three plain ones, computed here per
(date, horizon) from the horizon-slices rows:

- ``raw_mean`` / ``raw_median``: mean / median of every model's forecast on the date (NaN
  forecasts and absent models skipped);
- ``low_variance``: the mean forecast of the ``max(1, int(0.1 * n))`` models whose forecasts have
  the lowest sample variance (ddof 1) over the horizon's last ``window`` rows up to and including
  the date, ``n`` being the models with a forecast on the date and at least two finite forecasts
  in that window. Equal variances are broken by symbol order. Nexus v2 used the variance "so
  far" (an expanding window); a fixed trailing window is used instead so that a date's value does
  not depend on how much history a run happens to load.

Every value for a date depends only on rows dated on or before it (point in time in both modes),
and only on the models that have forecasts in its own window: a model that retired earlier or
first publishes later, absent from the date's rows, changes nothing, not even the last bit.
Variances are computed window by window (never with running sums), and every sum over models
adds the forecasts in ascending order of value, one after the other, so a value is bit-identical
whatever rows precede its window and whatever other models the loaded frame holds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from nexus_assets.core.contract import COMBINATION_ROWS, columns, empty_frame

__all__ = ["COMBINATION_COLUMNS", "LOW_VARIANCE_SHARE", "VARIANCE_WINDOW", "within_horizon_combinations"]

COMBINATION_COLUMNS: tuple[str, ...] = columns(COMBINATION_ROWS)
LOW_VARIANCE_SHARE = 0.1
VARIANCE_WINDOW = 60
_BLOCK_CELLS = 8_000_000  # (rows x window x models) per block: bounds memory at Crude-Oil scale


def within_horizon_combinations(
    slices: pd.DataFrame,
    *,
    dates: Iterable[object] | None = None,
    window: int = VARIANCE_WINDOW,
    low_variance_share: float = LOW_VARIANCE_SHARE,
) -> pd.DataFrame:
    """The plain combinations of one asset's horizon slices, one row per (date, horizon).

    ``slices``: horizon-slices rows (``date, horizon, symbol, forecast, price``) of ONE asset.
    ``dates``: the dates to output (others are history); default every date. Returns the columns
    :data:`COMBINATION_COLUMNS` sorted by date and horizon; ``price`` is the day's price of the
    horizon (the first ``price`` of its rows).
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 rows, got {window!r}")
    if not 0.0 < low_variance_share <= 1.0:
        raise ValueError(f"low_variance_share must be in (0, 1], got {low_variance_share!r}")
    missing = [c for c in ("date", "horizon", "symbol", "forecast", "price") if c not in slices.columns]
    if missing:
        raise ValueError(f"slices lack column(s) {missing}; pass the horizon_slices table")
    wanted = None if dates is None else pd.DatetimeIndex(pd.to_datetime(list(dates))).as_unit("ns")
    parts = []
    for horizon, group in slices.groupby("horizon", sort=True):
        wide = group.pivot_table(index="date", columns="symbol", values="forecast", aggfunc="first", dropna=False)
        wide = wide.sort_index().reindex(sorted(wide.columns), axis=1)
        price = group.groupby("date", sort=True)["price"].first().reindex(wide.index)
        rows = np.arange(len(wide)) if wanted is None else np.flatnonzero(wide.index.isin(wanted))
        if not len(rows):
            continue
        X = wide.to_numpy(dtype="float64", na_value=np.nan)
        mean, median, low = _combine(X, rows, window, low_variance_share)
        parts.append(
            pd.DataFrame(
                {
                    "date": wide.index[rows].astype("datetime64[ns]"),
                    "horizon": np.full(len(rows), int(horizon), dtype="int64"),
                    "price": price.to_numpy(dtype="float64")[rows],
                    "raw_mean": mean,
                    "raw_median": median,
                    "low_variance": low,
                }
            )
        )
    if not parts:
        return empty_frame(COMBINATION_ROWS)
    out = pd.concat(parts, ignore_index=True).sort_values(["date", "horizon"], kind="stable")
    return out.reset_index(drop=True)[list(COMBINATION_COLUMNS)]


def _combine(X: np.ndarray, rows: np.ndarray, window: int, share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T, M = X.shape
    today = X[rows]
    present = ~np.isnan(today)
    count = present.sum(axis=1)
    mean = np.full(len(rows), np.nan)
    median = np.full(len(rows), np.nan)
    if len(rows) and M:
        ordered = np.sort(np.where(present, today, np.inf), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = _ordered_sum(ordered) / count
        mean[count == 0] = np.nan
        lo, hi = np.maximum(count - 1, 0) // 2, count // 2
        hi = np.minimum(hi, M - 1)
        pick = np.arange(len(rows))
        median = np.where(count > 0, (ordered[pick, lo] + ordered[pick, hi]) / 2, np.nan)
    low = np.full(len(rows), np.nan)
    padded = np.vstack([np.full((window - 1, M), np.nan), X])
    block = max(1, _BLOCK_CELLS // max(1, window * M))
    for begin in range(0, len(rows), block):
        chunk = rows[begin : begin + block]
        # the window of row r is padded rows r .. r + window - 1
        stack = padded[chunk[:, None] + np.arange(window)[None, :]]  # (B, window, M)
        finite = ~np.isnan(stack)
        n = finite.sum(axis=1)
        filled = np.where(finite, stack, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = filled.sum(axis=1) / n
            dev = np.where(finite, stack - centre[:, None, :], 0.0)
            var = (dev * dev).sum(axis=1) / (n - 1)
        eligible = (n >= 2) & present[begin : begin + block]
        var = np.where(eligible, var, np.inf)
        k = np.maximum(1, (eligible.sum(axis=1) * share).astype("int64"))
        order = np.argsort(var, axis=1, kind="stable")  # ties: symbol order
        chosen = np.arange(M)[None, :] < k[:, None]
        values = np.take_along_axis(today[begin : begin + block], order, axis=1)
        picked = np.sort(np.where(chosen, values, np.inf), axis=1)
        with np.errstate(invalid="ignore"):
            low_chunk = _ordered_sum(picked) / k
        low_chunk[eligible.sum(axis=1) == 0] = np.nan
        low[begin : begin + block] = low_chunk
    return mean, median, low


def _ordered_sum(ordered: np.ndarray) -> np.ndarray:
    """Row sums of ``ordered`` (each row ascending, padded with inf), added left to right.

    A sequential sum of the values in ascending order is a function of the set of values alone:
    padding, other models' columns and their positions never change a bit (numpy's pairwise
    ``sum`` would regroup the additions when a column is inserted).
    """
    return np.cumsum(np.where(np.isinf(ordered), 0.0, ordered), axis=1)[:, -1] if ordered.shape[1] else np.zeros(len(ordered))
