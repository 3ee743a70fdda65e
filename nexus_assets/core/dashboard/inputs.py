"""What a dashboard page is rendered from: the stored tables of one asset and date, and their status.

The tables are the partition values of the ``signals``, ``metrics``, ``horizon_search`` and
``horizon_ensembles`` assets (their schemas are in :mod:`nexus_assets.core.contract`). Only the columns
listed in :data:`REQUIRED_COLUMNS` are read (the dates of :data:`DATE_COLUMNS` as naive
``datetime64``, any unit); a table is a pandas DataFrame or its columns as arrays (a
:data:`Table`: what the dashboard step reads from Parquet, because building a DataFrame per table
cost more than rendering it); extra columns (``actual`` in ``nexus_v2`` mode, new statistics) are
ignored, and an empty table (the warm-up, a search without a winner) renders as
an explained empty panel. Rows outside the page's date are dropped on the way in, so the caller
may pass a partition's tables as stored or wider slices of the history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nexus_assets.catalog import CatalogAsset
from nexus_assets.core.freshness import freshness_status

__all__ = [
    "Table",
    "column",
    "REQUIRED_COLUMNS",
    "CHILD_MODEL_COLUMNS",
    "DATE_COLUMNS",
    "DataStatus",
    "data_status",
    "PageInputs",
    "DaySummary",
    "AssetSummary",
    "InputError",
    "summary_json",
]

Table = pd.DataFrame | Mapping[str, np.ndarray]
"""A page's table: a DataFrame, or its columns as arrays (each what ``frame[name].to_numpy()`` gives)."""


def column(table: Table, name: str) -> np.ndarray:
    """The column ``name`` of ``table`` as a numpy array."""
    values = table[name]
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


def _names(table: Table) -> list:
    return list(table.columns) if isinstance(table, pd.DataFrame) else list(table)


REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "signals": (
        "date", "variant", "combination", "horizons", "threshold", "n_horizons", "pairs", "bullish",
        "bearish", "net_prob", "mean_drift", "strength", "tier", "agreement_ratio", "signal", "position",
        "weighted_net_prob", "weighted_signal", "price", "config_source", "deflated_sharpe",
    ),
    "slopes": ("date", "variant", "horizon_short", "horizon_long", "forecast_short", "forecast_long", "slope"),
    "statistics": ("date", "signal", "basis", "statistic", "value", "n", "min_n", "sufficient", "definition"),
    "trades": (
        "signal", "basis", "trade", "direction", "entry_date", "entry_price", "exit_date", "exit_price",
        "status", "holding_observations", "holding_days", "gross_return", "cost", "net_return",
    ),
    "daily": (
        "date", "signal", "price", "net_prob", "position", "strategy_return", "equity", "drawdown", "buy_and_hold",
    ),
    "leaderboard": (
        "date", "rank", "horizons", "n_horizons", "threshold", "combination", "objective", "n_folds", "trades",
        "fold_start", "fold_end", "candidates", "method", "eligible", "expected_max_sharpe", "deflated_sharpe",
    ),
    "ensembles": ("date", "horizon", "forecast", "strategy", "aggregator", "quantile", "n_selected", "n_models",
                  "p05", "p25", "p75", "p95", "best_child", "price"),
    "ensemble_window": ("date", "horizon", "best_child"),
}

CHILD_MODEL_COLUMNS: tuple[str, ...] = ("horizon", "symbol", "algorithm", "code_version")
"""What the child-model panel reads of ``qml_model_metadata`` (optional input)."""

DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "signals": ("date",), "slopes": ("date",), "statistics": ("date",), "trades": ("entry_date", "exit_date"),
    "daily": ("date",), "leaderboard": ("date", "fold_start", "fold_end"), "ensembles": ("date",),
    "ensemble_window": ("date",),
}


class InputError(ValueError):
    """Page inputs that cannot be rendered; the message names the table and what is missing."""


@dataclass(frozen=True)
class DataStatus:
    """Where the page's data came from, as recorded on the ``qml_models`` materialisation of the day.

    ``freshness`` is ``"fresh"``, ``"late"`` or ``"unknown"``; ``freshness_detail`` says why
    (e.g. :meth:`nexus_assets.core.freshness.FreshnessStatus.describe`). ``rows`` and ``models`` are
    the QML rows and child models of the day; ``partition_key`` is the ``asset|date`` key the page
    was generated from.
    """

    partition_key: str
    source: str
    contract_version: str | None = None
    upstream_watermark: dt.date | None = None
    freshness: str = "unknown"
    freshness_detail: str = ""
    rows: int | None = None
    models: int | None = None
    day_status: str | None = None


def data_status(entry: CatalogAsset, day: dt.date, meta: dict, partition_key: str) -> DataStatus:
    """The day's ingestion record (``meta``: qml_models' metadata of the partition ``partition_key``)
    and whether upstream had published the day by the morning after it: a page shows the day as it
    was, not as of today."""
    watermark = dt.date.fromisoformat(meta["upstream_watermark"]) if meta.get("upstream_watermark") else None
    status = freshness_status(entry, day + dt.timedelta(days=1), day, watermark)
    fresh = "unknown" if watermark is None else ("late" if status.upstream_late else "fresh")
    return DataStatus(
        partition_key=partition_key,
        source=str(meta.get("source") or entry.source),
        contract_version=meta.get("contract_version"),
        upstream_watermark=watermark,
        freshness=fresh,
        freshness_detail=status.describe() if watermark is not None else "no upstream watermark recorded",
        rows=meta.get("rows"),
        models=meta.get("models"),
        day_status=meta.get("status"),
    )


@dataclass(frozen=True, eq=False)
class PageInputs:
    """Everything one page shows: one asset, one date ``date`` (the as-of date D).

    ``signals``/``slopes``: the ``signals`` partition of D. ``statistics``/``trades``/``daily``:
    the ``metrics`` partition of D (history up to D). ``leaderboard``: the ``horizon_search``
    partition of D. ``ensembles``: the ``horizon_ensembles`` rows of D (the forecast fan).
    ``ensemble_window``: ``horizon_ensembles`` rows of a trailing window ending at D (e.g. the
    last 30 observations), for the child models selected most often. ``child_models``: the
    ``qml_model_metadata`` partition of D (``horizon``, ``symbol``, ``algorithm``,
    ``code_version``), shown beside those symbols; None or empty shows none. ``ml_signals``: the
    ``ml_signals`` partition of D; ``ml_accuracy`` / ``ml_calibration``: those tables of the
    ``metrics`` partition of D (None: the ML panel says the ML steps have not run). ``previous_date`` and
    ``next_date`` are the dates of the neighbouring pages to link to (None: no link; when
    ``previous_date`` is not given, the last ``daily`` date before D is used).
    """

    asset: str
    display_name: str
    category: str
    calendar: str
    date: dt.date
    signals: Table
    slopes: Table
    statistics: Table
    trades: Table
    daily: Table
    leaderboard: Table
    ensembles: Table
    ensemble_window: Table
    status: DataStatus
    previous_date: dt.date | None = None
    next_date: dt.date | None = None
    child_models: Table | None = None
    ml_signals: Table | None = None
    ml_accuracy: Table | None = None
    ml_calibration: Table | None = None

    @classmethod
    def from_partitions(
        cls,
        *,
        asset: str,
        display_name: str,
        category: str,
        calendar: str,
        date: dt.date,
        signals: Mapping[str, Table],
        metrics: Mapping[str, Table],
        horizon_search: Mapping[str, Table],
        ensembles: Table,
        ensemble_window: Table,
        status: DataStatus,
        previous_date: dt.date | None = None,
        next_date: dt.date | None = None,
        child_models: Table | None = None,
        ml_signals: Table | None = None,
    ) -> PageInputs:
        """Build the inputs from the stored partition values (dicts of tables) of D (a ``metrics``
        partition stored before the ML layer has no ``ml_accuracy``: the ML panel says so)."""
        return cls(
            asset=asset, display_name=display_name, category=category, calendar=calendar, date=date,
            signals=signals["signals"], slopes=signals["slopes"],
            statistics=metrics["statistics"], trades=metrics["trades"], daily=metrics["daily"],
            leaderboard=horizon_search["leaderboard"], ensembles=ensembles, ensemble_window=ensemble_window,
            status=status, previous_date=previous_date, next_date=next_date, child_models=child_models,
            ml_signals=ml_signals, ml_accuracy=metrics["ml_accuracy"] if "ml_accuracy" in metrics else None,
            ml_calibration=metrics["ml_calibration"] if "ml_calibration" in metrics else None,
        )

    def check(self) -> None:
        """Raise :class:`InputError` naming the table and its missing columns, if any."""
        if not isinstance(self.date, dt.date) or isinstance(self.date, dt.datetime):
            raise InputError(f"date must be a datetime.date, got {self.date!r}")
        for name, required in REQUIRED_COLUMNS.items():
            frame = getattr(self, name)
            if not isinstance(frame, (pd.DataFrame, Mapping)):
                raise InputError(f"{name}: expected a pandas DataFrame (or a mapping of column arrays), "
                                 f"got {type(frame).__name__}")
            names = _names(frame)
            missing = [c for c in required if c not in names]
            if missing:
                raise InputError(
                    f"{name}: missing column(s) {', '.join(missing)}; the table has {', '.join(map(str, names))}. "
                    "Pass the stored table (its schema: nexus_assets.core.contract; see REQUIRED_COLUMNS)."
                )
            for date_column in DATE_COLUMNS.get(name, ()):
                values = frame[date_column]
                if len(values) and not pd.api.types.is_datetime64_dtype(values):
                    raise InputError(f"{name}.{date_column}: expected naive datetime64 dates, got {values.dtype}; "
                                     "convert with pd.to_datetime (and tz_localize(None) for aware times).")
        if self.child_models is not None:
            missing = [c for c in CHILD_MODEL_COLUMNS if c not in _names(self.child_models)]
            if missing:
                raise InputError(f"child_models: missing column(s) {', '.join(missing)}; pass the qml_model_metadata "
                                 "table of the date")


@dataclass(frozen=True)
class DaySummary:
    """One page at a glance, for the site index and the asset's history (see :func:`summarise`).

    ``day_status``: what the day is (a :class:`nexus_assets.core.freshness.DayStatus` value, see
    :mod:`.days`); None when unknown (a summary written before it was recorded).
    """

    date: dt.date
    signal: str | None
    net_prob: float | None
    tier: str | None
    optimised_signal: str | None
    optimised_net_prob: float | None
    day_status: str | None = None


def summary_json(summary: DaySummary, watermark: dt.date | None) -> dict:
    """The ``.json`` summary stored next to a page (what the site index is rebuilt from), with the
    upstream watermark recorded for the page's day."""
    return {
        "upstream_watermark": watermark.isoformat() if watermark else None,
        "date": summary.date.isoformat(),
        "signal": summary.signal,
        "net_prob": summary.net_prob,
        "tier": summary.tier,
        "optimised_signal": summary.optimised_signal,
        "optimised_net_prob": summary.optimised_net_prob,
        "day_status": summary.day_status,
    }


@dataclass(frozen=True)
class AssetSummary:
    """One asset on the site index: its pages (``days``, any order) and its freshness."""

    asset: str
    display_name: str
    category: str
    calendar: str
    freshness: str = "unknown"
    freshness_detail: str = ""
    days: tuple[DaySummary, ...] = field(default_factory=tuple)
