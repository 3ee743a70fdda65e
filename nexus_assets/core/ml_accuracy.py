"""Accuracy of the ML probabilities per model version, as of each date (``docs/ml-signals.md``).

Per horizon ``h``, the observations ``t_0 < t_1 < ...`` are the ``ml_signals`` rows of that horizon
that have a price (a day with a price, as the predictions are made). The prediction at ``t_i``
(probability ``p_i`` of an up move, made by model version ``v_i``) has the outcome
``y_i = 1`` if ``price_(i+h) > price_i``, else 0 (a zero move is not an up move), **known once
``t_(i+h) <= D``**: as of ``D`` with ``M`` observations up to ``D``, the scored predictions are
those with ``i + h <= M - 1`` and a probability. Nothing dated after ``D`` is read.

For each horizon, every model version that made a prediction with a probability by ``D`` (scope
``version``) and all of them pooled (scope ``all``, ``model_version`` ""):

- ``hit_rate``: share of scored predictions where ``p > 0.5`` and ``y = 1``, or ``p < 0.5`` and
  ``y = 0`` (``p = 0.5`` calls no direction: a miss); ``brier``: mean of ``(p - y)^2`` (0.25 is
  what a constant 0.5 scores); ``mean_predicted`` (mean ``p``) and ``observed_frequency`` (mean
  ``y``, the base rate) over the same scored predictions; NaN with none scored. ``sufficient``
  once ``scored >= min_n`` (:data:`MIN_SCORED`).
- The calibration table: the scored predictions in :data:`BINS` equal probability bins
  (``[0, 0.1), ..., [0.9, 1.0]``), each non-empty bin's count, mean predicted and observed
  frequency.

Rows: by horizon, then scope ``all`` before the versions in order of their first prediction; the
calibration by bin within each. Each table as of ``D`` is a prefix computation, so the same
whatever range of dates a run covers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nexus_assets.core.contract import ML_ACCURACY, ML_CALIBRATION, columns, empty_frame

__all__ = ["BINS", "MIN_SCORED", "ACCURACY_COLUMNS", "CALIBRATION_COLUMNS", "INPUT_COLUMNS", "outcomes", "accuracy"]

BINS = 10
MIN_SCORED = 20
"""Scored predictions needed before a hit rate or Brier score is trusted (as the slope signals' accuracies)."""
ACCURACY_COLUMNS: tuple[str, ...] = columns(ML_ACCURACY)
CALIBRATION_COLUMNS: tuple[str, ...] = columns(ML_CALIBRATION)
INPUT_COLUMNS: tuple[str, ...] = ("date", "horizon", "model_version", "probability_up", "price")
"""The columns of ``ml_signals`` that :func:`accuracy` reads."""


def outcomes(rows: pd.DataFrame, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """For one horizon's priced rows sorted by date: ``y_i`` (1.0 up, 0.0 not, NaN while unknown in the
    rows given) and the observation index ``i + h`` at which each outcome is realised."""
    price = rows["price"].to_numpy("float64")
    n = len(price)
    y = np.full(n, np.nan)
    if n > horizon:
        y[: n - horizon] = (price[horizon:] > price[: n - horizon]).astype("float64")
    return y, np.arange(n) + horizon


def accuracy(signals: pd.DataFrame, *, as_of: Sequence[dt.date]) -> dict[dt.date, dict[str, pd.DataFrame]]:
    """``{as-of date: {"ml_accuracy": ..., "ml_calibration": ...}}`` for one asset's ``ml_signals``
    rows (any dates; rows after the last as-of date are ignored). See the module docstring."""
    missing = [c for c in INPUT_COLUMNS if c not in signals.columns]
    if missing:
        raise ValueError(f"ml_signals lack column(s) {missing}; pass the stored ml_signals table")
    wanted = np.unique(np.array([np.datetime64(pd.Timestamp(d).date(), "ns") for d in as_of], dtype="datetime64[ns]"))
    if not len(wanted):
        return {}
    frame = signals[list(INPUT_COLUMNS)].copy()
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    frame = frame[(frame["date"].to_numpy("datetime64[ns]") <= wanted[-1]) & frame["price"].notna()]
    horizons = [_Horizon.build(int(h), part) for h, part in frame.groupby("horizon", sort=True)]
    accuracies, calibrations, accuracy_ends, calibration_ends = [], [], [], []
    for day in wanted:
        for horizon in horizons:
            horizon.as_of(day, accuracies, calibrations)
        accuracy_ends.append(len(accuracies))
        calibration_ends.append(len(calibrations))
    # one frame per table for every date, sliced per date: the frames a construction per date and
    # table gives, without ~0.7 s of pandas overhead in a year's run
    every_accuracy = _accuracy_frame(np.repeat(wanted, np.diff(accuracy_ends, prepend=0)), accuracies)
    every_calibration = _calibration_frame(np.repeat(wanted, np.diff(calibration_ends, prepend=0)), calibrations)
    out = {}
    for i, day in enumerate(wanted):
        out[pd.Timestamp(day).date()] = {
            "ml_accuracy": _part(every_accuracy, accuracy_ends, i, ML_ACCURACY),
            "ml_calibration": _part(every_calibration, calibration_ends, i, ML_CALIBRATION),
        }
    return out


def _part(frame: pd.DataFrame, ends: list[int], i: int, schema) -> pd.DataFrame:
    """The rows of the ``i``-th date (an empty typed frame when it has none)."""
    start = ends[i - 1] if i else 0
    if start == ends[i]:
        return empty_frame(schema)
    return frame.iloc[start:ends[i]].reset_index(drop=True)


def _accuracy_frame(days: np.ndarray, rows: list[tuple]) -> pd.DataFrame:
    """The accuracy rows, each of its date in ``days``."""
    if not rows:
        return empty_frame(ML_ACCURACY)
    horizon, kind, version, first, predictions, scored, hits, hit_rate, brier, mean_p, freq, sufficient = zip(*rows)
    n = len(rows)
    return pd.DataFrame({
        "date": days.astype("datetime64[ns]"),
        "horizon": np.array(horizon, dtype="int64"),
        "scope": pd.array(kind, dtype="str"),
        "model_version": pd.array(version, dtype="str"),
        "first_date": np.array(first, dtype="datetime64[ns]"),
        "predictions": np.array(predictions, dtype="int64"),
        "scored": np.array(scored, dtype="int64"),
        "hits": np.array(hits, dtype="int64"),
        "hit_rate": np.array(hit_rate, dtype="float64"),
        "brier": np.array(brier, dtype="float64"),
        "mean_predicted": np.array(mean_p, dtype="float64"),
        "observed_frequency": np.array(freq, dtype="float64"),
        "min_n": np.full(n, MIN_SCORED, dtype="int64"),
        "sufficient": np.array(sufficient, dtype=bool),
    })[list(ACCURACY_COLUMNS)]


def _calibration_frame(days: np.ndarray, rows: list[tuple]) -> pd.DataFrame:
    """The calibration rows, each of its date in ``days``."""
    if not rows:
        return empty_frame(ML_CALIBRATION)
    horizon, kind, version, bins, low, high, count, mean_p, freq = zip(*rows)
    return pd.DataFrame({
        "date": days.astype("datetime64[ns]"),
        "horizon": np.array(horizon, dtype="int64"),
        "scope": pd.array(kind, dtype="str"),
        "model_version": pd.array(version, dtype="str"),
        "bin": np.array(bins, dtype="int64"),
        "bin_low": np.array(low, dtype="float64"),
        "bin_high": np.array(high, dtype="float64"),
        "count": np.array(count, dtype="int64"),
        "mean_predicted": np.array(mean_p, dtype="float64"),
        "observed_frequency": np.array(freq, dtype="float64"),
    })[list(CALIBRATION_COLUMNS)]


class _Scope:
    """One scope's predictions (its rows' observation indices, ascending) and cumulative sums over them."""

    def __init__(self, kind: str, version: str, rows: np.ndarray, first: np.datetime64, stats: np.ndarray,
                 slot: np.ndarray):
        self.kind, self.version, self.rows, self.first = kind, version, rows, first
        zero = np.zeros((stats.shape[0], 1))
        self.sums = np.concatenate([zero, np.cumsum(stats[:, rows], axis=1)], axis=1)  # [stat, j + 1]
        in_bin = (slot[rows][None, :] == np.arange(BINS)[:, None]).astype("float64")  # [bin, j]
        binned = in_bin[:, None, :] * stats[None, [0, 3, 4]][:, :, rows]  # [bin, count/p/y, j]
        self.bins = np.concatenate([np.zeros((BINS, 3, 1)), np.cumsum(binned, axis=2)], axis=2)


class _Horizon:
    """One horizon's predictions, with cumulative sums per scope so that any as-of date is a lookup."""

    def __init__(self, horizon: int, dates: np.ndarray, scopes: list[_Scope]):
        self.horizon, self.dates, self.scopes = horizon, dates, scopes

    @classmethod
    def build(cls, horizon: int, rows: pd.DataFrame) -> _Horizon:
        rows = rows.sort_values("date", kind="stable")
        dates = rows["date"].to_numpy("datetime64[ns]")
        p = rows["probability_up"].to_numpy("float64", na_value=np.nan)
        version = rows["model_version"].fillna("").astype(str).to_numpy()
        y, _ = outcomes(rows, horizon)
        has_p = ~np.isnan(p)
        q = np.where(has_p, p, 0.0)
        outcome = np.where(np.isnan(y), 0.0, y)  # only read for scored rows, whose outcome is known
        hit = ((q > 0.5) & (outcome == 1.0)) | ((q < 0.5) & (outcome == 0.0))
        stats = np.stack([np.ones_like(q), hit.astype("float64"), (q - outcome) ** 2, q, outcome])  # [stat, i]
        slot = np.minimum((q * BINS).astype("int64"), BINS - 1)
        members = [("all", "", has_p)] + [
            ("version", name, has_p & (version == name)) for name in dict.fromkeys(version[has_p])  # by first use
        ]
        scopes = []
        for kind, name, member in members:
            where = np.flatnonzero(member)
            if len(where):
                scopes.append(_Scope(kind, name, where, dates[where[0]], stats, slot))
        return cls(horizon, dates, scopes)

    def as_of(self, day: np.datetime64, accuracy: list[tuple], calibration: list[tuple]) -> None:
        """Append this horizon's rows as of ``day`` to the two row lists."""
        m = int(np.searchsorted(self.dates, day, side="right"))  # observations up to D
        k = max(m - self.horizon, 0)  # scored: rows i <= M - 1 - h
        h = self.horizon
        for scope in self.scopes:
            predictions = int(np.searchsorted(scope.rows, m))
            if not predictions:
                continue
            j = int(np.searchsorted(scope.rows, k))  # the scope's rows below k
            scored, hits, squared, p_sum, y_sum = scope.sums[:, j].tolist()
            defined = scored > 0
            accuracy.append((h, scope.kind, scope.version, scope.first, predictions, int(scored), int(hits),
                             *((v / scored if defined else np.nan) for v in (hits, squared, p_sum, y_sum)),
                             scored >= MIN_SCORED))
            for b in np.flatnonzero(scope.bins[:, 0, j] > 0).tolist():
                count, p_bin, y_bin = scope.bins[b, :, j].tolist()
                calibration.append((h, scope.kind, scope.version, b, b / BINS, (b + 1) / BINS, int(count),
                                    p_bin / count, y_bin / count))
