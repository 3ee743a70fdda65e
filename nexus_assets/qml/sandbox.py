"""Deterministic sandbox "model farm" emulating the upstream QML forecasting service.

For one instrument (a real daily close series bundled with ``arch``, so it loads offline)
the farm trains many small child models walk-forward and emits, for every trading day
``t`` and horizon ``h``, each child model's forecast of the close ``h`` observations after
``t``. A forecast for ``t`` only ever uses closes observed at or before ``t``: a training
pair (features at ``s``, close at ``s + h``) is used only when ``s + h <= t``.

Three parent families, each a grid of variants (child models):

* ``ridge``: closed-form ridge regression of the h-step log return on technical features,
  refitted every day on a rolling window (feature set x window x alpha);
* ``trend``: extrapolation of the slope of an EMA of log closes (span x slope lookback);
* ``analog``: nearest-neighbour analogs of the latest volatility-scaled return pattern
  (pattern length x history window x k).

Whole-series inputs (features, EMAs, prefix sums) are causal and computed once per farm;
the per-day work is vectorised over the requested days with row-wise operations only, so
a day's rows are bit-identical whether requested alone or inside a longer range.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexus_assets.core.contract import QML_COLUMNS

__all__ = ["CODE_VERSION", "DEFAULT_HORIZONS", "SERIES", "ModelFarm", "load_prices", "nearest_first"]

SERIES: tuple[str, ...] = ("sp500", "nasdaq", "wti", "vix")
DEFAULT_HORIZONS: tuple[int, ...] = (1, 3, 5, 8, 13)
CODE_VERSION: str = "sandbox-1"

# series name -> (arch.data submodule, column holding the close)
_SOURCES: dict[str, tuple[str, str]] = {
    "sp500": ("sp500", "Adj Close"),
    "nasdaq": ("nasdaq", "Adj Close"),
    "wti": ("wti", "DCOILWTICO"),
    "vix": ("vix", "vix"),
}

_MAX_ABS_LOG_RETURN = 0.5  # keeps close_predict positive, finite and plausible
_MIN_TRAIN_PAIRS = 5  # below this a model emits the naive random-walk forecast close_t
_VOL_FLOOR = 1e-8  # stale quotes can give a zero rolling volatility
_RIDGE_JITTER = 1e-12  # keeps the normal equations solvable when a feature is constant
_VOL_WINDOW = 20

_FEATURE_SETS: dict[str, tuple[int, ...]] = {
    # column indices into the matrix built by _technical_features
    "returns": (0, 1, 2),
    "technical": (3, 4, 5, 6, 7),
    "full": (0, 1, 2, 3, 4, 5, 6, 7),
}


@dataclass(frozen=True)
class _Family:
    """A parent family: its number in the parent id, names and variant grid."""

    number: int
    name: str
    algorithm: str
    window_param: str  # the variant parameter reported as ``training_window``
    variants: tuple[dict[str, int | float | str], ...]


def _grid(**axes: Sequence[int | float | str]) -> tuple[dict[str, int | float | str], ...]:
    """All combinations of the axes, first axis outermost (fixes variant numbering)."""
    return tuple(dict(zip(axes, values)) for values in itertools.product(*axes.values()))


_FAMILIES: tuple[_Family, ...] = (
    _Family(1, "ridge", "ridge_regression", "window",
            _grid(feature_set=tuple(_FEATURE_SETS), window=(60, 120, 250, 500), alpha=(0.3, 3.0))),
    _Family(2, "trend", "ema_trend", "span",
            _grid(span=(5, 10, 20, 50, 100), lookback=(1, 3, 5, 10))),
    _Family(3, "analog", "knn_analog", "history",
            _grid(pattern=(5, 10, 20), history=(500, 1500), k=(5, 10, 20, 40))),
)


@functools.cache
def _load_cached(series: str) -> pd.Series:
    """Read and clean one arch dataset once per process (parsing the bundled CSV is the slow part)."""
    module_name, column = _SOURCES[series]
    raw = importlib.import_module(f"arch.data.{module_name}").load()[column]
    close = pd.Series(np.asarray(raw, dtype=np.float64),
                      index=pd.DatetimeIndex(raw.index).tz_localize(None).normalize().as_unit("ns"))
    # holidays come as NaN (wti); anything non-positive cannot be a traded close
    close = close[np.isfinite(close.to_numpy()) & (close.to_numpy() > 0)]
    close = close[~close.index.duplicated(keep="last")].sort_index()
    close.index.name = "date"
    return close.rename("close")


def load_prices(series: str) -> pd.Series:
    """Daily closes of ``series``: float64, naive sorted unique DatetimeIndex, named "close".

    Raises ``ValueError`` naming the valid series for an unknown name.
    """
    if series not in _SOURCES:
        raise ValueError(f"unknown series {series!r}; valid series: {', '.join(SERIES)}")
    # a copy, so that callers mutating the result cannot corrupt the cache
    return _load_cached(series).copy()


def _trailing(x: np.ndarray, window: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """``reduce`` over each trailing window ending at every index (NaN until it is full)."""
    out = np.full(x.size, np.nan)
    if x.size >= window:
        out[window - 1:] = reduce(np.lib.stride_tricks.sliding_window_view(x, window), axis=-1)
    return out


def _technical_features(log_close: np.ndarray) -> np.ndarray:
    """Causal features at each index s (NaN during warm-up); only closes <= s are used."""
    n = log_close.size
    ret = np.full(n, np.nan)
    ret[1:] = np.diff(log_close)
    feats = np.full((n, 8), np.nan)
    feats[:, 0] = ret
    feats[1:, 1] = ret[:-1]
    feats[2:, 2] = ret[:-2]
    feats[5:, 3] = log_close[5:] - log_close[:-5]
    feats[20:, 4] = log_close[20:] - log_close[:-20]
    feats[:, 5] = log_close - _trailing(log_close, 10, np.mean)
    feats[:, 6] = log_close - _trailing(log_close, 50, np.mean)
    feats[:, 7] = _trailing(ret, _VOL_WINDOW, np.std)
    return feats


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product accumulated column by column.

    An explicit loop instead of ``sum(axis=-1)``/einsum: the summation order is then fixed
    and independent of how many days are batched, which keeps results bit-identical.
    """
    acc = np.zeros(a.shape[:-1])
    for j in range(a.shape[-1]):
        acc = acc + a[..., j] * b[..., j]
    return acc


def nearest_first(values: np.ndarray, count: int) -> np.ndarray:
    """Per row, the columns of the ``count`` smallest values, smallest first, ties by column.

    Exactly the first ``count`` columns of ``np.argsort(values, axis=1, kind="stable")``, without
    sorting the rest of the row: a partition finds each row's ``count``-th smallest value, the
    columns below it and the leftmost of those equal to it are kept, and only those are sorted.
    ``values`` must hold no NaN (``inf`` is fine).
    """
    rows, width = values.shape
    if count >= width:
        return np.argsort(values, axis=1, kind="stable")
    if count < 1:
        return np.zeros((rows, 0), dtype=np.intp)
    cutoff = np.partition(values, count - 1, axis=1)[:, count - 1:count]
    below = values < cutoff
    tied = values == cutoff
    room = count - below.sum(axis=1, keepdims=True)  # >= 1: the cutoff itself is in the row
    keep = below | (tied & (np.cumsum(tied, axis=1) <= room))
    columns = np.nonzero(keep)[1].reshape(rows, count)  # row-major: ascending columns per row
    order = np.argsort(np.take_along_axis(values, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


class ModelFarm:
    """Walk-forward model farm for one series, emitting QML contract rows.

    ``project_id`` identifies the emulated QML project and is kept as an attribute; the
    forecasts depend only on the series and horizons. Symbols are
    ``f"{7000 + 10 * horizon_position + family_number}.0_{100000 + variant}"``.
    """

    def __init__(self, project_id: int, series: str, horizons: Sequence[int] = DEFAULT_HORIZONS) -> None:
        hs = tuple(int(h) for h in horizons)
        if not hs or min(hs) < 1 or len(set(hs)) != len(hs):
            raise ValueError(f"horizons must be distinct positive integers, got {tuple(horizons)!r}")
        self.project_id = int(project_id)
        self.series = series
        self.horizons = hs
        self._close_series = load_prices(series)
        close = self._close_series.to_numpy(dtype=np.float64)
        self._close = close
        n = close.size
        log_close = np.log(close)

        feats = _technical_features(log_close)
        self._feats = np.where(np.isfinite(feats), feats, 0.0)
        self._feat_ok = np.isfinite(feats).all(axis=1)
        # Prefix sums of g g^T and g y, g = [valid, features]: the Gram matrix of any
        # trailing window is then a difference of two rows (O(1) per day and window).
        g = np.column_stack([self._feat_ok.astype(np.float64), self._feats * self._feat_ok[:, None]])
        self._p_xx = np.concatenate([np.zeros((1, 9, 9)), np.cumsum(g[:, :, None] * g[:, None, :], axis=0)])
        self._p_xy: dict[int, np.ndarray] = {}
        self._fwd_scaled: dict[int, np.ndarray] = {}
        vol = np.maximum(feats[:, 7], _VOL_FLOOR)  # stays NaN during the warm-up
        for h in hs:
            fwd = np.zeros(n)
            fwd[: max(n - h, 0)] = log_close[h:] - log_close[: max(n - h, 0)]
            # s + h beyond the series is never inside a window (s + h <= t <= n - 1)
            self._p_xy[h] = np.concatenate([np.zeros((1, 9)), np.cumsum(g * fwd[:, None], axis=0)])
            self._fwd_scaled[h] = np.where(np.isfinite(vol), fwd / vol, 0.0)

        self._ema = {
            span: pd.Series(log_close).ewm(span=span, adjust=False).mean().to_numpy()
            for span in sorted({int(v["span"]) for v in _FAMILIES[1].variants})
        }
        # returns in units of their trailing volatility make patterns comparable across regimes
        z = feats[:, 0] / vol
        z_ok = np.isfinite(z)
        self._z = np.where(z_ok, z, 0.0)
        self._vol = np.where(np.isfinite(vol), vol, 0.0)
        self._z_start = int(np.argmax(z_ok)) if z_ok.any() else n

        self._models = self._build_models()

    def _build_models(self) -> pd.DataFrame:
        """Model catalogue ordered like the rows: by horizon value, then symbol."""
        records = []
        for position, h in enumerate(self.horizons):
            for fam in _FAMILIES:
                parent = f"{7000 + 10 * position + fam.number}.0"
                for index, params in enumerate(fam.variants):
                    records.append({
                        "symbol": f"{parent}_{100000 + index}",
                        "parent": parent,
                        "algorithm": fam.algorithm,
                        "family": fam.name,
                        "horizon": h,
                        "training_window": int(params[fam.window_param]),
                        "params": json.dumps(params, sort_keys=True),
                        "code_version": CODE_VERSION,
                    })
        frame = pd.DataFrame.from_records(records)
        # positions in the (horizon in given order, family, variant) layout of the forecasts
        frame["_layout"] = np.arange(len(frame))
        frame = frame.sort_values(["horizon", "symbol"], kind="stable").reset_index(drop=True)
        frame["horizon"] = frame["horizon"].astype(np.int64)
        frame["training_window"] = frame["training_window"].astype(np.int64)
        return frame

    def models(self) -> pd.DataFrame:
        """One row per child model: symbol, parent, algorithm, family, horizon,
        training_window, params (JSON) and code_version."""
        return self._models.drop(columns="_layout").copy()

    def watermark(self) -> pd.Timestamp:
        """The last trading day of the series (nothing can be forecast from later days)."""
        return pd.Timestamp(self._close_series.index[-1])

    def rows(self, start: datetime.date, end: datetime.date) -> pd.DataFrame:
        """QML contract rows for every trading day ``t`` with ``start <= t <= end``.

        Columns: the contract's (:data:`~nexus_assets.core.contract.QML_COLUMNS`); sorted by time,
        n_predict, symbol; an empty frame with these columns if no day matches.
        """
        index = self._close_series.index
        lo = index.searchsorted(pd.Timestamp(start).normalize(), side="left")
        hi = index.searchsorted(pd.Timestamp(end).normalize(), side="right")
        days = np.arange(lo, max(lo, hi))

        log_ret = np.concatenate([fam_fn(days) for fam_fn in (self._ridge, self._trend, self._analog)], axis=2)
        log_ret = np.clip(log_ret, -_MAX_ABS_LOG_RETURN, _MAX_ABS_LOG_RETURN)
        # (days, horizon, family x variant) -> (days, model in catalogue order)
        layout = self._models["_layout"].to_numpy()
        log_ret = log_ret.reshape(days.size, layout.size)[:, layout]

        close_t = self._close[days]
        close_prev = self._close[np.maximum(days - 1, 0)]
        up = np.where((days > 0) & (close_t > close_prev), 1.0, 0.0)
        predict = close_t[:, None] * np.exp(log_ret)
        n_models = len(layout)
        return pd.DataFrame({
            "symbol": pd.Series(np.tile(self._models["symbol"].to_numpy(dtype=object), days.size), dtype=str),
            "time": np.repeat(index.to_numpy()[days], n_models).astype("datetime64[ns]"),
            "n_predict": np.tile(self._models["horizon"].to_numpy(), days.size).astype(np.int64),
            "close_predict": predict.ravel(),
            "target_var_price": np.repeat(close_t, n_models),
            "yn_p": (predict > close_t[:, None]).astype(np.float64).ravel(),
            "yn_actual": np.repeat(up, n_models),
        }, columns=list(QML_COLUMNS))

    def _ridge(self, days: np.ndarray) -> np.ndarray:
        """Ridge forecasts of log(close_{t+h}/close_t), shape (days, horizons, variants).

        Features are standardised within the window (covariance form), so ``alpha`` is a
        scale-free shrinkage; the intercept is the window's mean h-step return.
        """
        variants = _FAMILIES[0].variants
        out = np.zeros((days.size, len(self.horizons), len(variants)))
        x_now = self._feats[days]
        for hi, h in enumerate(self.horizons):
            end = np.maximum(days - h + 1, 0)  # exclusive: training pairs need s + h <= t
            for vi, params in enumerate(variants):
                begin = np.maximum(end - int(params["window"]), 0)
                s_xx = self._p_xx[end] - self._p_xx[begin]
                s_xy = self._p_xy[h][end] - self._p_xy[h][begin]
                n_pairs = s_xx[:, 0, 0]
                n_safe = np.maximum(n_pairs, 1.0)
                cols = np.asarray(_FEATURE_SETS[str(params["feature_set"])])
                mean_x = s_xx[:, 0, 1 + cols] / n_safe[:, None]
                mean_y = s_xy[:, 0] / n_safe
                cov_xx = (s_xx[:, 1 + cols][:, :, 1 + cols] / n_safe[:, None, None]
                          - mean_x[:, :, None] * mean_x[:, None, :])
                cov_xy = s_xy[:, 1 + cols] / n_safe[:, None] - mean_x * mean_y[:, None]
                eye = np.eye(cols.size)
                diag = np.diagonal(cov_xx, axis1=1, axis2=2)
                lhs = cov_xx + (float(params["alpha"]) * diag[:, :, None] + _RIDGE_JITTER) * eye
                beta = np.linalg.solve(lhs, cov_xy[:, :, None])[:, :, 0]
                pred = mean_y + _row_dot(x_now[:, cols] - mean_x, beta)
                ok = (n_pairs >= _MIN_TRAIN_PAIRS) & self._feat_ok[days]
                out[:, hi, vi] = np.where(ok, pred, 0.0)
        return out

    def _trend(self, days: np.ndarray) -> np.ndarray:
        """EMA-slope extrapolation h steps ahead, shape (days, horizons, variants)."""
        variants = _FAMILIES[1].variants
        out = np.zeros((days.size, len(self.horizons), len(variants)))
        for vi, params in enumerate(variants):
            ema, lookback = self._ema[int(params["span"])], int(params["lookback"])
            slope = (ema[days] - ema[np.maximum(days - lookback, 0)]) / lookback
            slope = np.where(days >= lookback, slope, 0.0)
            out[:, :, vi] = slope[:, None] * np.asarray(self.horizons, dtype=np.float64)[None, :]
        return out

    def _analog(self, days: np.ndarray) -> np.ndarray:
        """Nearest-neighbour analog forecasts, shape (days, horizons, variants).

        Candidate pattern ends s = t - lag need lag >= h so their forward window ended by t.
        The mean volatility-scaled forward return of the k nearest is rescaled by vol_t.
        """
        variants = _FAMILIES[2].variants
        out = np.zeros((days.size, len(self.horizons), len(variants)))
        lengths = sorted({int(v["pattern"]) for v in variants})
        histories = sorted({int(v["history"]) for v in variants})
        ks = sorted({int(v["k"]) for v in variants})
        nearest_k = max(ks)  # only the nearest max(k) analogs are ever averaged
        lags = np.arange(1, histories[-1] + 1)
        ends = days[:, None] - lags[None, :]
        dist = np.zeros(ends.shape)
        day_pos = np.arange(days.size)
        results: dict[tuple[int, int, int, int], np.ndarray] = {}
        for i in range(lengths[-1]):
            # lag-by-lag accumulation: fixed order, and distances for every length for free
            dist = dist + (self._z[np.maximum(days - i, 0)][:, None] - self._z[np.maximum(ends - i, 0)]) ** 2
            m = i + 1
            if m not in lengths:
                continue
            pattern_ok = days - m + 1 >= self._z_start
            cand_ok = ends - m + 1 >= self._z_start
            for h in self.horizons:
                for history in histories:
                    valid = cand_ok[:, :history] & (lags[None, :history] >= h)
                    order = nearest_first(np.where(valid, dist[:, :history], np.inf), nearest_k)
                    n_valid = valid.sum(axis=1)
                    nearest = np.take_along_axis(ends[:, :history], order, axis=1)
                    fwd = np.where(np.arange(order.shape[1])[None, :] < n_valid[:, None],
                                   self._fwd_scaled[h][np.maximum(nearest, 0)], 0.0)
                    running = np.cumsum(fwd, axis=1)  # sequential: the same sums as over the whole row
                    for k in ks:
                        used = np.minimum(k, n_valid)
                        mean = running[day_pos, np.maximum(used - 1, 0)] / np.maximum(used, 1)
                        ok = pattern_ok & (n_valid >= _MIN_TRAIN_PAIRS)
                        results[(m, h, history, k)] = np.where(ok, mean * self._vol[days], 0.0)
        for hi, h in enumerate(self.horizons):
            for vi, p in enumerate(variants):
                out[:, hi, vi] = results[(int(p["pattern"]), h, int(p["history"]), int(p["k"]))]
        return out
