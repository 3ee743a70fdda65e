"""Technical features of a close series, point in time (docs/ml.md#features).

Every value on observation ``t`` uses closes (and volumes) at or before ``t`` only, and each
is computed by a forward recursion or a trailing window over the whole series, so a prefix of
the series gives bit-identical values to the same rows of the whole series (tested): rewriting
prices after a date changes nothing on or before it.

All indicators are scale-free, so one model can learn across price levels and years:

- ``return_1``, ``return_5``: ``close_t / close_{t-k} - 1``;
- ``close_sma_10``, ``close_sma_20``: ``close / SMA_n - 1`` (simple moving average of the last n closes);
- ``close_ema_12``, ``close_ema_26``: ``close / EMA_n - 1``; EMA seeded with the first close,
  ``EMA_t = a close_t + (1 - a) EMA_{t-1}``, ``a = 2 / (n + 1)``, NaN for the first ``n - 1`` observations;
- ``rsi_14``: Wilder's RSI in [0, 100] (first average: the mean of the first 14 gains/losses,
  then ``avg_t = (13 avg_{t-1} + x_t) / 14``); 100 when there is no loss, 50 when neither;
- ``macd``: ``(EMA_12 - EMA_26) / close``; ``macd_signal``: EMA_9 of the MACD line
  (seeded on the first defined MACD value, NaN for its first 8); ``macd_hist``: their difference;
- ``bb_position``: ``(close - lower) / (upper - lower)`` with bands SMA_20 +/- 2 population standard
  deviations of the last 20 closes (0.5 when the band is flat); ``bb_width``: ``(upper - lower) / SMA_20``;
- ``volume_sma_10``: ``volume / SMA_10(volume) - 1``; ``volume_oscillator``: ``SMA_5(volume) / SMA_20(volume) - 1``
  (NaN for a series without volume, or a window holding a missing or zero volume);
- ``day_of_week`` (Monday 0) and ``month`` of the bar's own date, never the wall clock.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nexus_assets.core.contract import FEATURE_COLUMNS, FEATURES, typed_frame

__all__ = ["VOLUME_FEATURES", "CALENDAR_FEATURES", "WARMUP", "feature_frame", "model_features", "ema", "rsi", "trailing_mean"]

VOLUME_FEATURES: tuple[str, ...] = ("volume_sma_10", "volume_oscillator")
CALENDAR_FEATURES: tuple[str, ...] = ("day_of_week", "month")
WARMUP = 26 + 9 - 1
"""Observations before every price feature is defined (the MACD signal line's)."""


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of the last ``window`` values, NaN before ``window`` values exist or when the
    window holds a NaN (a cumulative sum would let one NaN poison every later value)."""
    return pd.Series(values).rolling(window, min_periods=window).mean().to_numpy()


def ema(values: np.ndarray, span: int) -> np.ndarray:
    """EMA seeded with the first value (``adjust=False``), NaN for the first ``span - 1`` values."""
    out = pd.Series(values).ewm(span=span, adjust=False).mean().to_numpy(copy=True)
    out[: span - 1] = np.nan
    return out


def _ema_from_first_defined(values: np.ndarray, span: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    defined = np.flatnonzero(~np.isnan(values))
    if len(defined):
        first = defined[0]
        out[first:] = ema(values[first:], span)
    return out


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's RSI (see the module docstring); NaN for the first ``period`` observations."""
    n = len(close)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    change = np.diff(close)
    gain, loss = np.clip(change, 0, None), np.clip(-change, 0, None)
    # Wilder's smoothing is an EMA with a = 1/period seeded by the first period's simple mean.
    alpha = 1.0 / period
    seed_gain, seed_loss = gain[:period].mean(), loss[:period].mean()
    avg_gain = pd.Series(np.concatenate([[seed_gain], gain[period:]])).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    avg_loss = pd.Series(np.concatenate([[seed_loss], loss[period:]])).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    value = np.where(avg_loss == 0, np.where(avg_gain == 0, 50.0, 100.0), value)
    out[period:] = value
    return out


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / denominator - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def feature_frame(close: pd.Series, volume: pd.Series | None = None) -> pd.DataFrame:
    """The ``features`` table (:data:`~nexus_assets.core.contract.FEATURES`) of every observation of
    ``close`` (a float Series on a sorted unique DatetimeIndex of sessions; positive values).
    ``volume``, when given, is aligned to the closes' dates (a missing day is NaN)."""
    if not close.index.is_monotonic_increasing or not close.index.is_unique:
        raise ValueError("close must be indexed by sorted unique dates")
    c = close.to_numpy(dtype=np.float64)
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("close must hold finite positive prices only (drop days without a price first)")
    n = len(c)
    out: dict[str, np.ndarray] = {}
    shifted = {k: np.concatenate([np.full(min(k, n), np.nan), c[: max(n - k, 0)]]) for k in (1, 5)}
    out["return_1"] = _ratio(c, shifted[1])
    out["return_5"] = _ratio(c, shifted[5])
    sma = {w: trailing_mean(c, w) for w in (10, 20)}
    ema12, ema26 = ema(c, 12), ema(c, 26)
    out["close_sma_10"], out["close_sma_20"] = _ratio(c, sma[10]), _ratio(c, sma[20])
    out["close_ema_12"], out["close_ema_26"] = _ratio(c, ema12), _ratio(c, ema26)
    out["rsi_14"] = rsi(c, 14)
    macd = (ema12 - ema26) / c
    signal = _ema_from_first_defined(macd, 9)
    out["macd"], out["macd_signal"], out["macd_hist"] = macd, signal, macd - signal
    std20 = pd.Series(c).rolling(20, min_periods=20).std(ddof=0).to_numpy()
    width = 4.0 * std20
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.where(width > 0, (c - (sma[20] - 2.0 * std20)) / width, 0.5)
    position[np.isnan(std20)] = np.nan
    out["bb_position"] = position
    out["bb_width"] = width / sma[20]
    if volume is not None:
        v = volume.reindex(close.index).to_numpy(dtype=np.float64)
        v = np.where(v > 0, v, np.nan)
        out["volume_sma_10"] = _ratio(v, trailing_mean(v, 10))
        out["volume_oscillator"] = _ratio(trailing_mean(v, 5), trailing_mean(v, 20))
    else:
        out["volume_sma_10"] = out["volume_oscillator"] = np.full(n, np.nan)
    dates = pd.DatetimeIndex(close.index).as_unit("ns")
    columns = {
        "date": dates,
        "price": c,
        "observations": np.arange(1, n + 1, dtype=np.int64),
        **{name: out[name] for name in FEATURE_COLUMNS},
        "day_of_week": dates.dayofweek.to_numpy(dtype=np.int64),
        "month": dates.month.to_numpy(dtype=np.int64),
    }
    return typed_frame(columns, FEATURES)


def model_features(has_volume: bool) -> list[str]:
    """The columns a direction model reads, in order: every indicator, the volume ones only for a
    series with volume, and the bar's calendar."""
    return [c for c in FEATURE_COLUMNS if has_volume or c not in VOLUME_FEATURES] + list(CALENDAR_FEATURES)
