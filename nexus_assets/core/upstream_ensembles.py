"""Upstream's own per-horizon forecasts as ``horizon_ensembles`` rows (catalog ``ensemble_source = "upstream"``).

A team that trusts quantum_ml's per-horizon ensemble can skip ours: each (date, horizon) that
upstream's ``/get_qml_horizon_forecast`` has a forecast for becomes one row of the stored
``horizon_ensembles`` table, with ``strategy = "upstream"`` and ``mode = "upstream"``. What
upstream does not provide is left null (``aggregator``, ``quantile``, ``best_child_forecast``,
``best_child``, the ``p05..p95`` fan); the two counts cannot be null in the stored schema, so
``n_selected`` is 0 (our ensemble selected nothing) and ``n_models`` is upstream's count when it
sends one, else the day's models in ``horizon_slices``. ``price`` and the plain combinations
(``raw_mean``, ``raw_median``, ``low_variance``, which the horizon search compares) are computed
from ``horizon_slices`` as for our own ensemble, so every step downstream reads the same columns.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from nexus_assets.core.contract import HORIZON_ENSEMBLES, UPSTREAM_HORIZON_FORECASTS, columns, empty_frame

__all__ = ["UPSTREAM_STRATEGY", "upstream_forecasts", "upstream_ensemble_rows"]

UPSTREAM_STRATEGY = "upstream"


def upstream_forecasts(raw: pd.DataFrame) -> pd.DataFrame:
    """``/get_qml_horizon_forecast`` records typed: ``time`` (a naive UTC day), ``n_predict``
    (int64), ``forecast`` (float64), and ``n_models`` (float64, NaN when not sent). Raises
    ``ValueError`` naming the field and the rule when the records cannot be used."""
    missing = [name for name in ("time", "n_predict", "forecast") if name not in raw.columns]
    if missing:
        raise ValueError(
            f"upstream's horizon forecasts lack field(s) {', '.join(missing)} (fields received: "
            f"{', '.join(map(str, raw.columns)) or 'none'})"
        )
    try:
        times = pd.to_datetime(raw["time"], utc=True, format="mixed").dt.tz_localize(None).dt.normalize()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"upstream's horizon forecasts: field 'time' must be a date-time ({exc})") from None
    horizon = pd.to_numeric(raw["n_predict"], errors="coerce")
    forecast = pd.to_numeric(raw["forecast"], errors="coerce")
    if (horizon.isna() | (horizon != horizon.round())).any():
        raise ValueError("upstream's horizon forecasts: field 'n_predict' must be a whole number")
    if forecast.isna().any() or not np.isfinite(forecast.to_numpy(dtype="float64")).all():
        raise ValueError("upstream's horizon forecasts: field 'forecast' must be a finite number")
    frame = pd.DataFrame({
        "time": times.astype("datetime64[ns]"),
        "n_predict": horizon.astype("int64"),
        "forecast": forecast.astype("float64"),
        "n_models": (pd.to_numeric(raw["n_models"], errors="coerce").astype("float64") if "n_models" in raw.columns
                     else np.nan),
    })
    try:
        UPSTREAM_HORIZON_FORECASTS.validate(frame, lazy=True)
    except Exception as exc:  # pandera's SchemaErrors: one line per failed rule
        cases = getattr(exc, "failure_cases", None)
        shown = "" if cases is None else "; ".join(
            f"{c} {ch}" for c, ch in cases[["column", "check"]].drop_duplicates().head(5).itertuples(index=False))
        raise ValueError(f"upstream's horizon forecasts break the rules: {shown or exc}") from None
    return frame.sort_values(["time", "n_predict"], kind="stable", ignore_index=True)


def upstream_ensemble_rows(forecasts: pd.DataFrame, plain: pd.DataFrame, slices: pd.DataFrame,
                           dates: Iterable[object]) -> pd.DataFrame:
    """The stored ``horizon_ensembles`` rows of ``dates`` from upstream's forecasts.

    ``forecasts``: :func:`upstream_forecasts`; ``plain``: the plain combinations of the same
    dates (:func:`nexus_assets.core.combinations.within_horizon_combinations`: ``date, horizon,
    price, raw_mean, raw_median, low_variance``); ``slices``: the ``horizon_slices`` rows of those
    dates (for ``n_models`` when upstream sends no count)."""
    wanted = pd.DatetimeIndex(pd.to_datetime(list(dates))).as_unit("ns")
    mine = forecasts[forecasts["time"].isin(wanted)]
    if mine.empty:
        return empty_frame(HORIZON_ENSEMBLES)
    counted = slices.groupby(["date", "horizon"], sort=False)["symbol"].size().rename("published").reset_index()
    rows = pd.DataFrame({"date": mine["time"].to_numpy(), "horizon": mine["n_predict"].to_numpy(),
                         "forecast": mine["forecast"].to_numpy(), "upstream_models": mine["n_models"].to_numpy()})
    rows = rows.merge(counted, on=["date", "horizon"], how="left").merge(plain, on=["date", "horizon"], how="left")
    n = len(rows)
    sent = rows["upstream_models"].notna().to_numpy()
    models = np.where(sent, rows["upstream_models"].fillna(0).to_numpy(), rows["published"].fillna(0).to_numpy())
    table = pd.DataFrame({
        "date": rows["date"],
        "horizon": rows["horizon"],
        "forecast": rows["forecast"],
        "strategy": UPSTREAM_STRATEGY,
        "aggregator": pd.Series([None] * n, dtype=str),
        "quantile": np.nan,
        "n_selected": np.zeros(n, dtype=np.int64),
        "n_models": models.astype(np.int64),
        "best_child_forecast": np.nan,
        "best_child": pd.Series([None] * n, dtype=str),
        **{f"p{p:02d}": np.nan for p in (5, 25, 75, 95)},
        "price": rows["price"],
        "raw_mean": rows["raw_mean"],
        "raw_median": rows["raw_median"],
        "low_variance": rows["low_variance"],
        "mode": UPSTREAM_STRATEGY,
    })
    table = table.sort_values(["date", "horizon"], kind="stable", ignore_index=True)
    return table[list(columns(HORIZON_ENSEMBLES))].astype(empty_frame(HORIZON_ENSEMBLES).dtypes.to_dict())
