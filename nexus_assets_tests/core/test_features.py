"""features: the fast indicators against a naive per-row reference, and point in time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import FEATURE_COLUMNS, FEATURES, table_problems
from nexus_assets.core.features import feature_frame, model_features


def _series(seed: int, n: int = 160, *, volume: bool = True) -> tuple[pd.Series, pd.Series | None]:
    """Business days with real-data traits: gaps (holidays dropped), flat runs (ties), a jump,
    and volumes with a missing day and a zero."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2019-01-01", periods=n + 12)
    days = days.delete(sorted(rng.choice(len(days), 12, replace=False)))
    steps = rng.normal(0, 0.015, n)
    steps[rng.choice(n, 15, replace=False)] = 0.0  # unchanged closes
    steps[n // 2] = 0.2
    close = pd.Series(100 * np.exp(np.cumsum(steps)), index=days)
    close.iloc[30:36] = close.iloc[30]  # a flat run: no gains, no losses
    if not volume:
        return close, None
    vol = pd.Series(rng.integers(1_000, 5_000, n).astype(float), index=days)
    vol.iloc[40] = np.nan
    vol.iloc[70] = 0.0
    return close, vol


def _naive(close: pd.Series, volume: pd.Series | None) -> dict[str, list[float]]:
    """Loops over rows, textbook definitions, no pandas windows."""
    c = [float(x) for x in close]
    n = len(c)
    nan = math.nan

    def sma(values, t, w):
        if t + 1 < w:
            return nan
        window = values[t + 1 - w: t + 1]
        return nan if any(math.isnan(x) for x in window) else sum(window) / w

    def ema_list(values, span):
        out, prev, a = [], None, 2 / (span + 1)
        for x in values:
            prev = x if prev is None else a * x + (1 - a) * prev
            out.append(prev)
        return [nan if i < span - 1 else v for i, v in enumerate(out)]

    def rel(a, b):
        return nan if (math.isnan(a) or math.isnan(b) or b == 0) else a / b - 1

    e12, e26 = ema_list(c, 12), ema_list(c, 26)
    macd = [(e12[t] - e26[t]) / c[t] for t in range(n)]
    first = next(i for i, x in enumerate(macd) if not math.isnan(x))
    signal = [nan] * first + ema_list(macd[first:], 9)
    rsi = [nan] * n
    gains = [max(c[t] - c[t - 1], 0) for t in range(1, n)]
    losses = [max(c[t - 1] - c[t], 0) for t in range(1, n)]
    ag, al = sum(gains[:14]) / 14, sum(losses[:14]) / 14
    for t in range(14, n):
        if t > 14:
            ag = (13 * ag + gains[t - 1]) / 14
            al = (13 * al + losses[t - 1]) / 14
        rsi[t] = (50.0 if ag == 0 else 100.0) if al == 0 else 100 - 100 / (1 + ag / al)
    rows: dict[str, list[float]] = {k: [] for k in FEATURE_COLUMNS}
    v = None if volume is None else [float(x) if x > 0 else nan for x in volume.reindex(close.index)]
    for t in range(n):
        rows["return_1"].append(rel(c[t], c[t - 1]) if t >= 1 else nan)
        rows["return_5"].append(rel(c[t], c[t - 5]) if t >= 5 else nan)
        rows["close_sma_10"].append(rel(c[t], sma(c, t, 10)))
        rows["close_sma_20"].append(rel(c[t], sma(c, t, 20)))
        rows["close_ema_12"].append(rel(c[t], e12[t]))
        rows["close_ema_26"].append(rel(c[t], e26[t]))
        rows["rsi_14"].append(rsi[t])
        rows["macd"].append(macd[t])
        rows["macd_signal"].append(signal[t])
        rows["macd_hist"].append(macd[t] - signal[t])
        if t >= 19:
            window = c[t - 19: t + 1]
            mean = sum(window) / 20
            sd = math.sqrt(sum((x - mean) ** 2 for x in window) / 20)
            lower, upper = mean - 2 * sd, mean + 2 * sd
            rows["bb_position"].append((c[t] - lower) / (upper - lower) if upper > lower else 0.5)
            rows["bb_width"].append((upper - lower) / mean)
        else:
            rows["bb_position"].append(nan)
            rows["bb_width"].append(nan)
        if v is None:
            rows["volume_sma_10"].append(nan)
            rows["volume_oscillator"].append(nan)
        else:
            rows["volume_sma_10"].append(rel(v[t], sma(v, t, 10)))
            rows["volume_oscillator"].append(rel(sma(v, t, 5), sma(v, t, 20)))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("with_volume", [True, False])
def test_features_match_the_naive_reference(seed, with_volume):
    close, volume = _series(seed, volume=with_volume)
    fast = feature_frame(close, volume)
    assert table_problems(FEATURES, fast) == []
    expected = _naive(close, volume)
    for name in FEATURE_COLUMNS:
        np.testing.assert_allclose(fast[name].to_numpy(), np.array(expected[name]), rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=name)
    assert fast["day_of_week"].tolist() == [d.weekday() for d in close.index]
    assert fast["month"].tolist() == [d.month for d in close.index]
    assert fast["observations"].tolist() == list(range(1, len(close) + 1))
    # the reference is not vacuous: every price feature is defined after the warm-up
    assert fast.iloc[40:][[c for c in FEATURE_COLUMNS if not c.startswith("volume")]].notna().all().all()


@pytest.mark.parametrize("seed", [4, 5])
def test_features_are_point_in_time(seed):
    """Rewriting every close after a date changes nothing on or before it, bit for bit."""
    close, volume = _series(seed)
    cut = 90
    whole = feature_frame(close, volume)
    rewritten = close.copy()
    rewritten.iloc[cut + 1:] *= np.random.default_rng(seed).uniform(0.5, 2.0, len(close) - cut - 1)
    changed_volume = volume.copy()
    changed_volume.iloc[cut + 1:] = 1.0
    again = feature_frame(rewritten, changed_volume)
    prefix = feature_frame(close.iloc[: cut + 1], volume.iloc[: cut + 1])
    pd.testing.assert_frame_equal(whole.iloc[: cut + 1], again.iloc[: cut + 1])
    pd.testing.assert_frame_equal(whole.iloc[: cut + 1], prefix)
    assert not whole.iloc[cut + 1:].equals(again.iloc[cut + 1:])


def test_calendar_features_come_from_the_bar_date_and_volume_features_only_with_volume():
    close, _ = _series(6, n=50, volume=False)
    frame = feature_frame(close)
    assert frame["volume_sma_10"].isna().all()
    assert "volume_sma_10" not in model_features(False) and "volume_sma_10" in model_features(True)
    assert model_features(True)[-2:] == ["day_of_week", "month"]
    friday = frame[frame["date"].dt.dayofweek == 4].iloc[0]
    assert friday["day_of_week"] == 4 and friday["month"] == friday["date"].month


def test_bad_closes_are_refused():
    close, _ = _series(7, n=50, volume=False)
    with pytest.raises(ValueError, match="positive"):
        feature_frame(close.where(close.index != close.index[3], np.nan))
    with pytest.raises(ValueError, match="sorted"):
        feature_frame(close.iloc[::-1])
