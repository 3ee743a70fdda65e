"""Horizon slices: the "golden engine" of Nexus v2 (``docs/horizon-slices.md``).

Stored form (:func:`slice_horizons`): a long table, one row per date, horizon and child model,
columns ``date, horizon, symbol, forecast, price`` with ``price`` the day's ``target_var_price``.
Working form (:func:`horizon_frames`): per horizon ``h`` the wide matrix ``X_h`` (dates x child
models), ``price_h`` and ``y_h`` (the realised price ``h`` observations later), which is what the
ensemble step walks over. Horizons, models and dates always come from the data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexus_assets.core.contract import HORIZON_SLICE_COLUMNS, HORIZON_SLICES, empty_frame

__all__ = ["HorizonFrame", "slice_horizons", "empty_slices", "horizon_frames"]


def empty_slices() -> pd.DataFrame:
    """A zero-row horizon-slices frame with the stored dtypes."""
    return empty_frame(HORIZON_SLICES)


def slice_horizons(rows: pd.DataFrame, start_date: dt.date | None = None) -> pd.DataFrame:
    """Turn typed QML rows (any number of days) into the long horizon-slices table.

    ``price`` for a (date, horizon) is the *first* ``target_var_price`` of that day's rows of
    that horizon, in row order, as Nexus v2 takes it; rows before ``start_date`` are dropped (the
    catalog's start date plays the role of Nexus v2's hard-coded 2025-01-01). Sorted by date,
    horizon, symbol.
    """
    if rows.empty:
        return empty_slices()
    frame = rows[["time", "n_predict", "symbol", "close_predict", "target_var_price"]]
    if start_date is not None:
        frame = frame[frame["time"] >= pd.Timestamp(start_date)]
    first_price = frame.groupby(["time", "n_predict"], sort=False)["target_var_price"].transform("first")
    out = pd.DataFrame(
        {
            "date": frame["time"].astype("datetime64[ns]"),
            "horizon": frame["n_predict"].astype("int64"),
            "symbol": frame["symbol"].astype(str),
            "forecast": frame["close_predict"].astype("float64"),
            "price": first_price.astype("float64"),
        }
    )
    out = out.sort_values(["date", "horizon", "symbol"], kind="stable").reset_index(drop=True)
    return out[list(HORIZON_SLICE_COLUMNS)]


@dataclass(frozen=True)
class HorizonFrame:
    """The golden engine's view of one horizon.

    ``forecasts``: ``X_h``, index = sorted dates of this horizon, columns = child models (sorted),
    values = forecast prices (NaN where a model has no row that day). ``price``: ``price_h``.
    ``actual``: ``y_h``, ``price_h`` shifted back by ``h`` rows of ``X_h``'s index (the last ``h``
    are NaN): the realised price ``h`` observations after each date.
    """

    horizon: int
    forecasts: pd.DataFrame
    price: pd.Series
    actual: pd.Series


def horizon_frames(slices: pd.DataFrame) -> dict[int, HorizonFrame]:
    """Pivot a long horizon-slices table into one :class:`HorizonFrame` per horizon present."""
    frames: dict[int, HorizonFrame] = {}
    for horizon, group in slices.groupby("horizon", sort=True):
        h = int(horizon)
        wide = group.pivot(index="date", columns="symbol", values="forecast").sort_index()
        wide = wide.reindex(sorted(wide.columns), axis=1)
        wide.columns.name = None
        price = group.groupby("date", sort=True)["price"].first().reindex(wide.index)
        actual = pd.Series(np.roll(price.to_numpy(dtype="float64"), -h), index=wide.index, name="actual")
        actual.iloc[max(len(actual) - h, 0):] = np.nan
        frames[h] = HorizonFrame(h, wide, price.rename("price"), actual)
    return frames
