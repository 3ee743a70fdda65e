"""The ML signal: the direction classifier's probability turned into BUY / SELL / HOLD (``docs/ml-signals.md``).

For each row of ``ml_predictions`` (a date ``D`` and a horizon ``h``) with probability ``p`` of an
up move ``h`` observations ahead and ``confidence = |p - 0.5| x 2``:

- BUY (position +1) if ``p > 0.5`` and ``confidence >= threshold`` (reason ``confident_up``);
- SELL (position -1) if ``p < 0.5`` and ``confidence >= threshold`` (``confident_down``);
  ``>=`` up to float32 rounding (:data:`THRESHOLD_SLACK`), the precision models answer in;
- otherwise HOLD (position 0), with the reason: ``below_threshold``, ``no_direction`` (``p`` is
  exactly 0.5), ``no_model`` (no model version serves on ``D``) or ``no_probability`` (a model
  serves but gave no probability, e.g. while its features warm up).

The table is shaped like the slope signals (``variant``, ``horizons``, ``net_prob``, ``position``,
``price``) so that :func:`nexus_assets.core.metrics.record` simulates each horizon's signal as a
signal of its own, variant ``ml_h<h>``, with the same simulation, costs and statistics;
``net_prob = 2 p - 1`` is the signed confidence. A row reads only its own prediction, so the
signal is point in time whenever the predictions are.

The record of a horizon's ML signal starts on its first prediction (:func:`record_rows`): before
any model serves, the signal only holds by default, as the slope signals have no rows before the
ensemble's warm-up; counting those days would compare a record over another span (and another
buy and hold) with the slope signals'.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from nexus_assets.core.contract import ML_SIGNALS, columns, empty_frame

__all__ = [
    "ML_SIGNAL_COLUMNS",
    "THRESHOLD_SLACK",
    "PREDICTION_COLUMNS",
    "RECORD_INPUT_COLUMNS",
    "VARIANT_PATTERN",
    "ml_signals",
    "ml_variant",
    "record_rows",
    "unpriced_session_rows",
    "variant_horizon",
]

ML_SIGNAL_COLUMNS: tuple[str, ...] = columns(ML_SIGNALS)
RECORD_INPUT_COLUMNS: tuple[str, ...] = ("date", "variant", "horizons", "net_prob", "position", "price")
"""The columns :func:`nexus_assets.core.metrics.record` reads, of the slope signals' and the ML signals'
tables alike (defined here, where :mod:`~nexus_assets.core.metrics` imports it from)."""
PREDICTION_COLUMNS: tuple[str, ...] = (
    "date", "horizon", "model_version", "model_sha256", "probability_up", "confidence", "price",
)
VARIANT_PATTERN = re.compile(r"ml_h([0-9]+)")
_CONFIDENCE_SLACK = 1e-9  # stored confidences are |p - 0.5| x 2 up to rounding
# Models answer in float32: p = 0.2 comes back as 0.20000000298 (confidence 0.59999999404) and 0.8 as
# 0.80000001192 (0.60000002384), so a bare >= would act on 0.8 and not on 0.2 at a 0.6 threshold. A
# confidence within float32's rounding of the threshold (at most one float32 epsilon) acts.
THRESHOLD_SLACK = float(np.finfo(np.float32).eps)


def ml_variant(horizon: int) -> str:
    """The record's signal name of the ML signal at ``horizon``: ``ml_h<horizon>``."""
    return f"ml_h{int(horizon)}"


def variant_horizon(variant: str) -> int | None:
    """The horizon of an ML variant name (``"ml_h5"`` -> 5), ``None`` for any other name."""
    match = VARIANT_PATTERN.fullmatch(str(variant))
    return int(match.group(1)) if match else None


def ml_signals(predictions: pd.DataFrame, *, threshold: float) -> pd.DataFrame:
    """The ML signal of every row of ``predictions``, sorted by date then horizon.

    Parameters
    ----------
    predictions:
        ``ml_predictions`` rows (any number of dates and horizons of one asset), at least
        :data:`PREDICTION_COLUMNS`; ``probability_up`` in [0, 1] or NaN, ``confidence`` NaN exactly
        where the probability is; ``model_version`` "" when no model serves.
    threshold:
        The catalog's ``ml_signal_threshold``: the confidence, in [0, 1], needed to act.

    Returns
    -------
    pandas.DataFrame
        The ``ml_signals`` table (:data:`ML_SIGNAL_COLUMNS`, contract ``ML_SIGNALS``).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) or not (
        0.0 <= threshold <= 1.0
    ):
        raise ValueError(f"threshold must be a confidence in [0, 1] (the catalog's ml_signal_threshold), got {threshold!r}")
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"ml_predictions lack column(s) {missing}; pass the stored ml_predictions table")
    if predictions.empty:
        return empty_frame(ML_SIGNALS)
    frame = predictions[list(PREDICTION_COLUMNS)].sort_values(["date", "horizon"], kind="stable").reset_index(drop=True)
    p = frame["probability_up"].to_numpy("float64", na_value=np.nan)
    confidence = frame["confidence"].to_numpy("float64", na_value=np.nan)
    version = frame["model_version"].fillna("").astype(str).to_numpy()
    _check(frame, p, confidence)
    known = ~np.isnan(p)
    acts = known & (confidence >= threshold - THRESHOLD_SLACK)
    up, down = acts & (p > 0.5), acts & (p < 0.5)
    position = np.where(up, 1, np.where(down, -1, 0)).astype("int64")
    reason = np.select(
        [version == "", ~known, up, down, p == 0.5],
        ["no_model", "no_probability", "confident_up", "confident_down", "no_direction"],
        default="below_threshold",
    )
    horizon = frame["horizon"].to_numpy("int64")
    out = pd.DataFrame({
        "date": frame["date"].to_numpy("datetime64[ns]"),
        "variant": pd.array([ml_variant(h) for h in horizon], dtype="str"),
        "horizon": horizon,
        "horizons": pd.array([str(h) for h in horizon], dtype="str"),
        "model_version": pd.array(version, dtype="str"),
        "model_sha256": pd.array(frame["model_sha256"].fillna("").astype(str), dtype="str"),
        "probability_up": p,
        "confidence": confidence,
        "threshold": np.full(len(frame), float(threshold)),
        "net_prob": 2.0 * p - 1.0,
        "signal": pd.array(np.select([position == 1, position == -1], ["BUY", "SELL"], default="HOLD"), dtype="str"),
        "position": position,
        "reason": pd.array(reason, dtype="str"),
        "price": frame["price"].to_numpy("float64", na_value=np.nan),
    })
    return out[list(ML_SIGNAL_COLUMNS)]


def record_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``rows`` (``ml_signals`` rows, at least ``date``, ``variant``, ``probability_up``)
    that enter the record: each variant's rows from its first date with a probability on; a
    variant without one has none. Point in time: that first date depends on nothing after it."""
    if rows.empty:
        return rows
    variant = rows["variant"].astype(str).to_numpy()
    dates = rows["date"].to_numpy("datetime64[ns]")
    served = ~np.isnan(rows["probability_up"].to_numpy("float64", na_value=np.nan))
    keep = np.zeros(len(rows), dtype=bool)
    for name in np.unique(variant[served]):
        mine = variant == name
        keep |= mine & (dates >= dates[mine & served].min())
    return rows if keep.all() else rows[keep]


def unpriced_session_rows(rows: pd.DataFrame, unpriced: np.ndarray) -> pd.DataFrame:
    """The record's rows (:data:`RECORD_INPUT_COLUMNS`) for the sessions in ``unpriced`` (dates whose price
    is not yet known: the slope signals' rows without a price) that an ML signal's record spans
    (on or after its first row in ``rows``, the output of :func:`record_rows`) but has no row for,
    since the ML steps predict only from a known close: ``price`` and ``net_prob`` NaN, the position
    held before. A day without a price trades nothing (the simulation carries the position), so
    the figures do not change; the record's daily table shows the session, as the slope signals' does."""
    unpriced = np.unique(np.asarray(unpriced, dtype="datetime64[ns]"))
    parts = []
    if len(unpriced) and len(rows):
        for name, group in rows.groupby("variant", sort=True):
            order = np.argsort(group["date"].to_numpy("datetime64[ns]"), kind="stable")
            dates = group["date"].to_numpy("datetime64[ns]")[order]
            extra = unpriced[(unpriced > dates[0]) & ~np.isin(unpriced, dates)]
            if not len(extra):
                continue
            held = group["position"].to_numpy("int64")[order][np.searchsorted(dates, extra, side="right") - 1]
            parts.append(pd.DataFrame({
                "date": extra, "variant": pd.array([str(name)] * len(extra), dtype="str"),
                "horizons": pd.array([str(group["horizons"].iloc[0])] * len(extra), dtype="str"),
                "net_prob": np.full(len(extra), np.nan), "position": held, "price": np.full(len(extra), np.nan)}))
    if not parts:
        return rows.iloc[:0][list(RECORD_INPUT_COLUMNS)]
    return pd.concat(parts, ignore_index=True)


def _check(frame: pd.DataFrame, p: np.ndarray, confidence: np.ndarray) -> None:
    """Refuse predictions the strategy would misread, naming the first offending row."""
    problems = [
        (~np.isnan(p) & ((p < 0) | (p > 1)), "probability_up outside [0, 1]"),
        (np.isnan(p) != np.isnan(confidence), "confidence must be NaN exactly where probability_up is"),
        (np.abs(confidence - np.abs(p - 0.5) * 2.0) > _CONFIDENCE_SLACK, "confidence is not |probability_up - 0.5| x 2"),
    ]
    for bad, what in problems:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"ml_predictions row {pd.Timestamp(frame['date'].iloc[i]).date()} h{int(frame['horizon'].iloc[i])}: "
                f"{what} (probability_up {p[i]!r}, confidence {confidence[i]!r})"
            )
    if frame.duplicated(["date", "horizon"]).any():
        raise ValueError("ml_predictions have more than one row per (date, horizon)")
