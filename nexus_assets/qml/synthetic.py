"""A seeded synthetic QML project at any scale, shaped like real QDT tables.

The price is a seeded geometric random walk on the asset's calendar. By default
(:data:`QDT_TRAITS`) the child models imitate what real QDT child-model tables look like
(measured on QDT's published tables of project 1860, Bitcoin: 4 horizons, 369 days, 1.19M rows):

- each horizon has its own 2 to 4 parent models; each parent's children are grouped in clusters
  around the parent's forecast, and a share of each cluster are *near-copies* (a perturbation
  far below the day-to-day move), so many children have exactly the same direction sequence over
  a fit window and tie to the bit in ``pnl``, ``sharpe`` and ``dir_acc``;
- the bare parent id (``4382.0``) is a symbol too, and a few child columns per horizon are exact
  copies of another child's forecasts;
- model sets change: some models appear weeks or months into the history, some retire early;
- a day may lack a horizon entirely, a model may skip a day, and ``target_var_price`` is null
  ("not yet known") on a few days.

:data:`CLEAN_TRAITS` turns all of that off: independent models with their own bias and noise,
no churn, no missing horizon-days, no null prices (the generator of earlier releases, kept for
benchmarks that want the plain shape).

Everything is seeded per (project, horizon, model) and per (project, day[, horizon]): the rows of
a day are the same whether asked alone or inside a year, and do not depend on the published end
of the history, which is what makes benchmarks and tests reproducible.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexus_assets.core.contract import QML_COLUMNS, empty_qml_rows

__all__ = ["SyntheticProject", "Traits", "QDT_TRAITS", "CLEAN_TRAITS", "CODE_VERSION"]

CODE_VERSION = "synthetic-2"
_FAMILIES = ("gbm_drift", "mean_revert", "momentum", "noise")
_WALK_VOLATILITY = 0.02
_FIRST_PARENT = 4382  # parent ids look like QDT's (4382.0, 4386.0, ...)


@dataclass(frozen=True)
class Traits:
    """Which real-data traits the generator imitates, and how strongly.

    ``parents``: (fewest, most) parent models per horizon; 0 means independent models (no
    parents, no clusters, no near-copies). ``cluster_size``: mean children per cluster around a
    parent. ``near_copy_share``: share of children whose perturbation of their cluster's
    forecast is tiny (``near_copy_noise``, relative), so that their direction sequences match.
    ``duplicate_columns``: child columns per horizon that copy another child exactly.
    ``late_share`` / ``retired_share``: models that first publish between days 20 and 300 of the
    history / stop publishing between days 60 and 400. ``missing_horizon_days``: share of
    (day, horizon) without any row. ``null_price_days``: share of days whose
    ``target_var_price`` is null. ``dropout``: share of (day, model) without a row.
    """

    parents: tuple[int, int] = (2, 4)
    cluster_size: float = 12.0
    near_copy_share: float = 0.3
    near_copy_noise: float = 2e-5
    duplicate_columns: int = 5
    late_share: float = 0.08
    retired_share: float = 0.08
    missing_horizon_days: float = 0.01
    null_price_days: float = 0.01
    dropout: float = 0.002


QDT_TRAITS = Traits()
"""The default: every trait of real QDT tables (above)."""
CLEAN_TRAITS = Traits(parents=(0, 0), near_copy_share=0.0, duplicate_columns=0, late_share=0.0, retired_share=0.0,
                      missing_horizon_days=0.0, null_price_days=0.0)
"""Independent models, every model every day but for a 0.2 % dropout; no churn, gaps or null prices."""


@dataclass(frozen=True)
class _HorizonModels:
    symbols: np.ndarray  # (M,) ascending
    parent: np.ndarray  # (M,) parent index, -1 for independent models
    cluster: np.ndarray  # (M,) cluster index (global within the horizon), -1 for a bare parent
    copies: np.ndarray  # (M,) index of the model whose forecast this one copies exactly, -1 if none
    bias: np.ndarray  # (M,) fixed log bias
    noise: np.ndarray  # (M,) log noise scale
    born: np.ndarray  # (M,) first day offset (from the project's first day) with rows
    retired: np.ndarray  # (M,) first day offset without rows any more
    n_parents: int
    n_clusters: int
    parent_bias: np.ndarray
    parent_noise: np.ndarray
    cluster_bias: np.ndarray
    cluster_noise: np.ndarray


class SyntheticProject:
    """Deterministic synthetic QML output for one project.

    ``start``/``end`` bound the published history (``end`` is the watermark); ``calendar`` is
    ``"crypto"`` (every day) or ``"exchange"`` (Monday to Friday). ``models_per_horizon`` is the
    number of distinct models each horizon publishes over its history (parents included).
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
        traits: Traits = QDT_TRAITS,
    ) -> None:
        if models_per_horizon < 1 or not horizons or min(horizons) < 1:
            raise ValueError("synthetic project needs models_per_horizon >= 1 and horizons >= 1")
        if calendar not in ("crypto", "exchange"):
            raise ValueError(f"calendar must be 'crypto' or 'exchange', got {calendar!r}")
        self.project_id = project_id
        self.horizons = tuple(sorted(set(int(h) for h in horizons)))
        self.models_per_horizon = int(models_per_horizon)
        self.seed = int(seed)
        self.start, self.end, self.calendar = start, end, calendar
        self.traits = traits
        # The walk runs past the watermark by the longest horizon, so every forecast has a target.
        days = pd.date_range(start, end + dt.timedelta(days=2 * max(self.horizons) + 7), freq="D")
        if calendar == "exchange":
            days = days[days.dayofweek < 5]
        self._days = days
        self._offset = (days - pd.Timestamp(start)).days.to_numpy()  # calendar days since the first day
        walk = np.random.default_rng([self.seed, project_id, 0]).normal(0.0, _WALK_VOLATILITY, len(days))
        self._price = start_price * np.exp(np.cumsum(walk))
        self._models = {h: self._horizon_models(position, h) for position, h in enumerate(self.horizons)}

    # -----------------------------------------------------------------------------------------
    # the model roster of one horizon (fixed for the project, whatever range is asked)

    def _horizon_models(self, position: int, h: int) -> _HorizonModels:
        t = self.traits
        rng = np.random.default_rng([self.seed, self.project_id, 1, h])
        M = self.models_per_horizon
        scale = h ** 0.25  # forecasts spread a little more at longer horizons
        n_parents = min(M, int(rng.integers(t.parents[0], t.parents[1] + 1))) if t.parents[1] > 0 else 0
        if n_parents == 0:  # independent models, as the clean generator
            index = np.arange(M)
            parent_ids = 5000 + 10 * position + index % len(_FAMILIES) + 1
            symbols = np.array([f"{p}.0_{100000 + i}" for p, i in zip(parent_ids, index)], dtype=object)
            parent = np.full(M, -1)
            cluster = np.full(M, -1)
            bias = rng.normal(0.0, 0.002 * scale, M)
            noise = rng.uniform(0.002, 0.03, M) * scale
            n_clusters = 0
            parent_bias = parent_noise = cluster_bias = cluster_noise = np.zeros(0)
        else:
            # parent ids of this horizon (each horizon has its own), then children split among them
            first = _FIRST_PARENT + 40 * position
            parent_ids = first + 4 * np.arange(n_parents)
            children = M - n_parents
            share = rng.dirichlet(np.full(n_parents, 4.0)) if children else np.zeros(n_parents)
            per_parent = np.floor(share * children).astype(int)
            per_parent[: children - per_parent.sum()] += 1
            symbols_list, parent_list, cluster_list = [], [], []
            n_clusters = 0
            child_number = 100000 + 1000 * position
            for p in range(n_parents):
                symbols_list.append(f"{parent_ids[p]}.0")
                parent_list.append(p)
                cluster_list.append(-1)
                k = int(per_parent[p])
                # clusters around the parent, of heavy-tailed sizes (most small, a few large)
                sizes = []
                while sum(sizes) < k:
                    sizes.append(1 + int(rng.lognormal(np.log(t.cluster_size) - 0.6, 1.1)))
                if sizes:
                    sizes[-1] -= sum(sizes) - k
                for size in sizes:
                    for _ in range(size):
                        child_number += int(rng.integers(1, 4))
                        symbols_list.append(f"{parent_ids[p]}.0_{child_number}")
                        parent_list.append(p)
                        cluster_list.append(n_clusters)
                    n_clusters += 1
            symbols = np.array(symbols_list, dtype=object)
            parent = np.array(parent_list)
            cluster = np.array(cluster_list)
            parent_bias = rng.normal(0.0, 0.006, n_parents) * scale
            parent_noise = rng.uniform(0.006, 0.012, n_parents) * scale
            cluster_bias = rng.normal(0.0, 0.004, n_clusters) * scale
            cluster_noise = rng.uniform(0.002, 0.008, n_clusters) * scale
            near = rng.random(M) < t.near_copy_share
            bias = np.where(near, rng.normal(0.0, t.near_copy_noise, M), rng.normal(0.0, 0.002, M) * scale)
            noise = np.where(near, rng.uniform(0.2, 1.0, M) * t.near_copy_noise,
                             rng.uniform(0.002, 0.012, M) * scale)
            bare = cluster < 0
            bias[bare], noise[bare] = 0.0, 0.0  # a bare parent publishes its own forecast
        order = np.argsort(symbols, kind="stable")
        symbols, parent, cluster, bias, noise = symbols[order], parent[order], cluster[order], bias[order], noise[order]
        copies = np.full(M, -1)
        children = np.flatnonzero(cluster >= 0) if n_parents else np.arange(M)
        n_copies = min(t.duplicate_columns, len(children) // 2)
        if n_copies:
            picked = rng.choice(children, size=2 * n_copies, replace=False)
            copies[picked[:n_copies]] = picked[n_copies:]
        born = np.zeros(M, dtype="int64")
        retired = np.full(M, np.iinfo("int64").max)
        late = rng.random(M) < t.late_share
        born[late] = rng.integers(20, 300, int(late.sum()))
        gone = rng.random(M) < t.retired_share
        retired[gone] = rng.integers(60, 400, int(gone.sum()))
        retired[gone] = np.maximum(retired[gone], born[gone] + 30)
        source = copies >= 0  # a copy lives exactly as long as the model it copies
        born[source], retired[source] = born[copies[source]], retired[copies[source]]
        return _HorizonModels(symbols, parent, cluster, copies, bias, noise, born, retired, n_parents, n_clusters,
                              parent_bias, parent_noise, cluster_bias, cluster_noise)

    # -----------------------------------------------------------------------------------------
    # public interface (shared with the sandbox model farm)

    def watermark(self) -> pd.Timestamp:
        """The last published day."""
        published = self._days[self._days <= pd.Timestamp(self.end)]
        return published[-1]

    def models(self) -> pd.DataFrame:
        """Model metadata, one row per child model (every model the project ever publishes)."""
        records = []
        first_day = pd.Timestamp(self.start)
        for h in self.horizons:
            m = self._models[h]
            for i, symbol in enumerate(m.symbols):
                parent = symbol.split("_")[0]
                family = _FAMILIES[int(float(parent)) % len(_FAMILIES)]
                retired = None if m.retired[i] == np.iinfo("int64").max else (
                    first_day + pd.Timedelta(days=int(m.retired[i]))).date().isoformat()
                records.append(
                    {
                        "symbol": symbol,
                        "parent": parent,
                        "algorithm": f"synthetic_{family}",
                        "family": family,
                        "horizon": h,
                        "training_window": 0,
                        "params": json.dumps({"bias": round(float(m.bias[i]), 8), "noise": round(float(m.noise[i]), 8),
                                              "copies": None if m.copies[i] < 0 else str(m.symbols[m.copies[i]]),
                                              "first_day": (first_day + pd.Timedelta(days=int(m.born[i]))).date().isoformat(),
                                              "retired": retired}),
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

    # -----------------------------------------------------------------------------------------
    # one day

    def _day_rows(self, i: int) -> pd.DataFrame:
        t = self.traits
        day = self._days[i]
        ordinal = day.toordinal()
        price = self._price[i]
        up_today = 1.0 if i > 0 and price > self._price[i - 1] else 0.0
        null_price = np.random.default_rng([self.seed, self.project_id, 4, ordinal]).random() < t.null_price_days
        offset = int(self._offset[i])
        blocks = []
        for h in self.horizons:
            m = self._models[h]
            rng = np.random.default_rng([self.seed, self.project_id, 2, ordinal, h])
            M = len(m.symbols)
            draws = rng.standard_normal(M)
            keep = rng.random(M) >= t.dropout
            gap = rng.random() < t.missing_horizon_days
            if gap:
                continue
            target = self._price[i + h]
            if m.n_parents:
                parent_draw = rng.standard_normal(m.n_parents)
                cluster_draw = rng.standard_normal(m.n_clusters)
                parent_log = m.parent_bias + m.parent_noise * parent_draw
                cluster_log = np.concatenate([m.cluster_bias + m.cluster_noise * cluster_draw, [0.0]])
                log = parent_log[m.parent] + cluster_log[m.cluster] + m.bias + m.noise * draws
            else:
                log = m.bias + m.noise * draws
            forecast = target * np.exp(log)
            copied = m.copies >= 0
            forecast[copied] = forecast[m.copies[copied]]
            keep[copied] = keep[m.copies[copied]]
            keep &= (m.born <= offset) & (offset < m.retired)
            blocks.append((h, m.symbols[keep], forecast[keep]))
        if not blocks:
            return empty_qml_rows()
        symbols = np.concatenate([b[1] for b in blocks])
        forecasts = np.concatenate([b[2] for b in blocks])
        horizons = np.concatenate([np.full(len(b[1]), b[0], dtype="int64") for b in blocks])
        return pd.DataFrame(
            {
                "symbol": pd.array(symbols, dtype="str"),
                "time": np.full(len(symbols), day.to_datetime64(), dtype="datetime64[ns]"),
                "n_predict": horizons,
                "close_predict": forecasts,
                "target_var_price": np.full(len(symbols), np.nan if null_price else price),
                "yn_p": (forecasts > price).astype("float64"),
                "yn_actual": np.full(len(symbols), up_today),
            }
        )
