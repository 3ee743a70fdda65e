"""A seeded synthetic QML project at any scale, for benchmarks and load tests.

The price is a seeded geometric random walk on the asset's calendar. Each child model has a
fixed bias and noise level; its forecast for day ``t`` and horizon ``h`` is the walk's price ``h``
observations later, distorted by the model's bias and a noise draw seeded by (seed, day, horizon).
Every day is therefore generated independently of the requested range: the rows of a day are the
same whether asked alone or inside a year, which is what makes benchmarks and tests reproducible.
A small share of (day, model) pairs is missing, as in real QML output.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nexus_assets.core.contract import QML_COLUMNS, empty_qml_rows

__all__ = ["SyntheticProject", "CODE_VERSION"]

CODE_VERSION = "synthetic-1"
_FAMILIES = ("gbm_drift", "mean_revert", "momentum", "noise")
_WALK_VOLATILITY = 0.02
_DROPOUT = 0.002


class SyntheticProject:
    """Deterministic synthetic QML output for one project.

    ``start``/``end`` bound the published history (``end`` is the watermark); ``calendar`` is
    ``"crypto"`` (every day) or ``"exchange"`` (Monday to Friday).
    """

    def __init__(
        self,
        project_id: int,
        *,
        horizons: Sequence[int] = (1, 3, 5, 8, 13),
        models_per_horizon: int = 100,
        seed: int = 0,
        start: dt.date = dt.date(2025, 1, 1),
        end: dt.date = dt.date(2025, 12, 31),
        calendar: str = "crypto",
        start_price: float = 100.0,
    ) -> None:
        if models_per_horizon < 1 or not horizons or min(horizons) < 1:
            raise ValueError("synthetic project needs models_per_horizon >= 1 and horizons >= 1")
        self.project_id = project_id
        self.horizons = tuple(sorted(set(int(h) for h in horizons)))
        self.models_per_horizon = int(models_per_horizon)
        self.seed = int(seed)
        self.start, self.end, self.calendar = start, end, calendar
        # The walk runs past the watermark by the longest horizon, so every forecast has a target.
        days = pd.date_range(start, end + dt.timedelta(days=2 * max(self.horizons) + 7), freq="D")
        if calendar == "exchange":
            days = days[days.dayofweek < 5]
        self._days = days
        walk = np.random.default_rng([self.seed, project_id, 0]).normal(0.0, _WALK_VOLATILITY, len(days))
        self._price = start_price * np.exp(np.cumsum(walk))
        self._symbols: dict[int, np.ndarray] = {}
        self._bias: dict[int, np.ndarray] = {}
        self._noise: dict[int, np.ndarray] = {}
        for position, h in enumerate(self.horizons):
            rng = np.random.default_rng([self.seed, project_id, 1, h])
            index = np.arange(self.models_per_horizon)
            family = index % len(_FAMILIES)
            parent = 5000 + 10 * position + family + 1
            symbols = np.array([f"{p}.0_{100000 + i}" for p, i in zip(parent, index)], dtype=object)
            order = np.argsort(symbols, kind="stable")
            self._symbols[h] = symbols[order]
            self._bias[h] = rng.normal(0.0, 0.002 * np.sqrt(h), self.models_per_horizon)[order]
            self._noise[h] = rng.uniform(0.002, 0.03, self.models_per_horizon)[order] * np.sqrt(h)

    def watermark(self) -> pd.Timestamp:
        """The last published day."""
        published = self._days[self._days <= pd.Timestamp(self.end)]
        return published[-1]

    def models(self) -> pd.DataFrame:
        """Model metadata, one row per child model."""
        records = []
        for h in self.horizons:
            for symbol, bias, noise in zip(self._symbols[h], self._bias[h], self._noise[h]):
                parent, child = symbol.split("_")
                family = _FAMILIES[(int(child) - 100000) % len(_FAMILIES)]
                records.append(
                    {
                        "symbol": symbol,
                        "parent": parent,
                        "algorithm": f"synthetic_{family}",
                        "family": family,
                        "horizon": h,
                        "training_window": 0,
                        "params": json.dumps({"bias": round(float(bias), 6), "noise": round(float(noise), 6)}),
                        "code_version": CODE_VERSION,
                    }
                )
        return pd.DataFrame.from_records(records)

    def rows(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """QML contract rows for every published day ``start <= t <= end``, sorted by time, horizon, symbol."""
        lo = max(pd.Timestamp(start), pd.Timestamp(self.start))
        hi = min(pd.Timestamp(end), pd.Timestamp(self.end))
        positions = np.flatnonzero((self._days >= lo) & (self._days <= hi))
        if positions.size == 0:
            return empty_qml_rows()
        parts = [self._day_rows(int(i)) for i in positions]
        frame = pd.concat(parts, ignore_index=True)
        return frame[list(QML_COLUMNS)]

    def _day_rows(self, i: int) -> pd.DataFrame:
        day = self._days[i]
        price = self._price[i]
        up_today = 1.0 if i > 0 and price > self._price[i - 1] else 0.0
        blocks = []
        for h in self.horizons:
            rng = np.random.default_rng([self.seed, self.project_id, 2, day.toordinal(), h])
            draws = rng.standard_normal(self.models_per_horizon)
            keep = rng.random(self.models_per_horizon) >= _DROPOUT
            forecast = self._price[i + h] * np.exp(self._bias[h] + self._noise[h] * draws)
            blocks.append((h, self._symbols[h][keep], forecast[keep]))
        symbols = np.concatenate([b[1] for b in blocks])
        forecasts = np.concatenate([b[2] for b in blocks])
        horizons = np.concatenate([np.full(len(b[1]), b[0], dtype="int64") for b in blocks])
        return pd.DataFrame(
            {
                "symbol": pd.array(symbols, dtype="str"),
                "time": np.full(len(symbols), day.to_datetime64(), dtype="datetime64[ns]"),
                "n_predict": horizons,
                "close_predict": forecasts,
                "target_var_price": np.full(len(symbols), price),
                "yn_p": (forecasts > price).astype("float64"),
                "yn_actual": np.full(len(symbols), up_today),
            }
        )
