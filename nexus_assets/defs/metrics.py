"""``metrics``: each date's track record, using only outcomes realised by that date.

Reads ``signals`` and ``ml_signals`` from the start of the asset's history to the date (the
simulation must start at the same point whatever range a run covers, so the record of a date never
depends on how it was backfilled); a range run simulates once and slices the record per date. The
ML signals (``ml_h<h>``) get the slope signals' record, and their probabilities an accuracy per
model version (tables ``ml_accuracy`` and ``ml_calibration``).
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, MetadataValue, asset

from nexus_assets.catalog import Catalog
from nexus_assets.core import contract
from nexus_assets.core.contract import empty_frame
from nexus_assets.core.metrics import RECORD_INPUT_COLUMNS, days_by_horizon_set, record
from nexus_assets.core.ml_accuracy import INPUT_COLUMNS as ACCURACY_INPUT_COLUMNS
from nexus_assets.core.ml_accuracy import accuracy
from nexus_assets.core.ml_signals import record_rows, unpriced_session_rows
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.ml_signals import ML_SIGNALS
from nexus_assets.defs.partitions import date_window_mapping, days_by_asset, partition_key
from nexus_assets.defs.signals import SIGNALS
from nexus_assets.defs.steps import step_asset_args
from nexus_assets.defs.storage import TABLES_METADATA, PartitionFrames

__all__ = ["METRICS", "METRIC_TABLES", "build_metric_assets", "record_window_days"]

METRICS = "metrics"
METRIC_TABLES = ("statistics", "trades", "daily", "ml_accuracy", "ml_calibration")
RECORD_TABLES = ("statistics", "trades", "daily")
OPEN_ENDED_HISTORY_DAYS = 20 * 366  # catalogs without an end_date: twenty years of history
# only the columns the record and the accuracy read (the whole rows: ~1 s more CPU a year's run, mostly strings)
ML_INPUT_COLUMNS = tuple(dict.fromkeys((*RECORD_INPUT_COLUMNS, *ACCURACY_INPUT_COLUMNS)))


def record_window_days(catalog: Catalog) -> int:
    """Calendar days of signals a date's record reads: back to the catalog's first day."""
    if catalog.end_date is not None:
        return (catalog.end_date - catalog.start_date).days
    return OPEN_ENDED_HISTORY_DAYS


def build_metric_assets(catalog: Catalog, partitions_def) -> list:
    history = record_window_days(catalog)

    @asset(
        name=METRICS,
        **step_asset_args(partitions_def),
        metadata={TABLES_METADATA: list(METRIC_TABLES)},
        ins={
            "signals": AssetIn(
                key=SIGNALS,
                partition_mapping=date_window_mapping(history),
                metadata={"allow_missing_partitions": True},
            ),
            "ml_signals": AssetIn(
                key=ML_SIGNALS,
                partition_mapping=date_window_mapping(history),
                metadata={"allow_missing_partitions": True},
            ),
        },
        description=(
            "The record as of each date, from outcomes realised by then: a point-in-time trading simulation of "
            "the raw and the optimised signal (trade at the signal date's price, mark to market every "
            "observation, catalog cost_bps per side), empyrical return statistics annualised by the asset's "
            "calendar, trade statistics, forward directional accuracy at 1 observation and each horizon, "
            "minimum-sample flags, and the Nexus v2 legacy figures side by side (basis `legacy`); the ML signals "
            "(ml_h<h>) the same way, and the ML probabilities' hit rate, Brier score and calibration per model "
            "version. Tables: `statistics` (long), `trades` (every trade), `daily` (returns, equity, drawdown), "
            "`ml_accuracy`, `ml_calibration`."
        ),
    )
    def metrics(context: AssetExecutionContext, signals: PartitionFrames, ml_signals: PartitionFrames) -> dict:
        outputs: dict[str, dict[str, pd.DataFrame]] = {}
        metadata: dict[str, dict] = {}
        lines_seen: dict = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            history = signals.concat(key, "signals", columns=RECORD_INPUT_COLUMNS)
            ml_history = ml_signals.concat(key, columns=ML_INPUT_COLUMNS)
            if ml_history is None:
                ml_history = empty_frame(contract.ML_SIGNALS)
            both = _record_input(history, ml_history)
            accuracies = accuracy(ml_history, as_of=days)
            for horizons, group in days_by_horizon_set(history, days, entry.horizons).items():
                records = record(both, as_of=group, calendar=entry.calendar, cost_bps=entry.cost_bps,
                                 horizons=horizons)
                for day in group:
                    pk = partition_key(key, day)
                    outputs[pk] = {**{name: records[day][name] for name in RECORD_TABLES}, **accuracies[day]}
                    metadata[pk] = _metadata(outputs[pk], lines_seen)
        attach_partition_metadata(context, metadata)
        return outputs

    return [metrics]


def _record_input(history: pd.DataFrame | None, ml_history: pd.DataFrame) -> pd.DataFrame:
    """The slope signals' and the ML signals' rows in one frame of the columns ``record`` reads; an ML
    signal's from its first prediction on (:func:`~nexus_assets.core.ml_signals.record_rows`), with the
    sessions without a price it spans (:func:`~nexus_assets.core.ml_signals.unpriced_session_rows`)."""
    ml_history = record_rows(ml_history)
    if history is not None and len(ml_history):  # the sessions without a price, which the ML table has no row for
        unpriced = history.loc[history["price"].isna(), "date"].to_numpy("datetime64[ns]")
        ml_history = pd.concat([ml_history[list(RECORD_INPUT_COLUMNS)], unpriced_session_rows(ml_history, unpriced)],
                               ignore_index=True)
    parts = [frame[list(RECORD_INPUT_COLUMNS)] for frame in (history, ml_history) if frame is not None and len(frame)]
    if not parts:
        return empty_frame(contract.SIGNALS)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _metadata(tables: dict, lines_seen: dict | None = None) -> dict:
    stats = tables["statistics"]
    if stats.empty:
        return {"record": "none (no signal on or before this date)"}
    meta: dict = {}
    # one pass over the statistics (four filtered selections a partition cost 17 ms in a year's run)
    value_of = dict(zip(zip(*(stats[c].tolist() for c in ("signal", "basis", "statistic"))), stats["value"].tolist()))
    for signal in ("raw", "optimised"):
        for basis, names in (("point_in_time", ("sharpe_ratio", "max_drawdown", "total_return", "trades")),
                             ("legacy", ("sharpe_ratio", "total_return"))):
            for name in names:
                if (signal, basis, name) in value_of:
                    value = value_of[(signal, basis, name)]
                    meta[f"{signal}_{'' if basis == 'point_in_time' else 'legacy_'}{name}"] = (
                        None if pd.isna(value) else float(value))
    ml = sorted({signal for signal, _, _ in value_of} - {"raw", "optimised"})
    for signal in ml:  # the ML signals' headline figures, as the slope signals'
        for name in ("sharpe_ratio", "total_return", "trades"):
            value = value_of.get((signal, "point_in_time", name))
            meta[f"{signal}_{name}"] = None if value is None or pd.isna(value) else float(value)
    scores = tables["ml_accuracy"]
    pooled = scores[scores["scope"].to_numpy() == "all"]
    for h, hit_rate, brier, scored in zip(*(pooled[c].tolist() for c in ("horizon", "hit_rate", "brier", "scored"))):
        meta[f"ml_h{h}_hit_rate"] = None if pd.isna(hit_rate) else float(hit_rate)
        meta[f"ml_h{h}_brier"] = None if pd.isna(brier) else float(brier)
        meta[f"ml_h{h}_scored"] = int(scored)
    meta["last_30_trades_raw"] = MetadataValue.md(_trades_markdown(tables["trades"], lines_seen))
    return meta


_TRADE_COLUMNS = ("entry_date", "exit_date", "direction", "entry_price", "exit_price", "net_return", "status")


def _trades_markdown(trades: pd.DataFrame, lines_seen: dict | None = None) -> str:
    """The last 30 raw point-in-time trades as a table. Read from plain arrays, not through a
    filtered frame and ``itertuples`` (~8 ms a partition in a year's run). ``lines_seen``: table
    lines already formatted in this run, by trade (a trade stays the same across most as-of dates
    of a range run)."""
    lines = ["| entry | exit | direction | entry price | exit price | net return | status |", "|---|---|---|---|---|---|---|"]
    cache = {} if lines_seen is None else lines_seen
    chosen = np.flatnonzero((trades["basis"].to_numpy() == "point_in_time") & (trades["signal"].to_numpy() == "raw"))[-30:]
    if not len(chosen):
        return "\n".join(lines)
    columns = [list(trades[c].to_numpy()[chosen]) for c in _TRADE_COLUMNS]
    for entry_date, exit_date, direction, entry_price, exit_price, net_return, status in zip(*columns):
        key = (entry_date, exit_date, direction, entry_price, exit_price, net_return, status)
        line = cache.get(key)
        if line is None:
            exit_day = "" if pd.isna(exit_date) else pd.Timestamp(exit_date).date().isoformat()
            line = cache[key] = (f"| {pd.Timestamp(entry_date).date().isoformat()} | {exit_day} | {direction} | "
                                 f"{entry_price:.4f} | {exit_price:.4f} | {net_return:.4%} | {status} |")
        lines.append(line)
    return "\n".join(lines)
