"""``signals``: the day's pairwise-slope signals, raw (all horizons) and optimised (the search's pick).

Reads the same partition of ``horizon_ensembles`` (the day's forecasts) and of ``horizon_search``
(the day's winner); nothing else, so a day's signal is point in time whenever its inputs are.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, asset

from nexus_assets.catalog import Catalog
from nexus_assets.core import contract
from nexus_assets.core.contract import empty_frame
from nexus_assets.core.signals import daily_signals
from nexus_assets.defs.ensembles import HORIZON_ENSEMBLES
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import days_by_asset, partition_key, split_by_day
from nexus_assets.defs.search import HORIZON_SEARCH
from nexus_assets.defs.steps import step_asset_args
from nexus_assets.defs.storage import TABLES_METADATA, PartitionFrames

__all__ = ["SIGNALS", "SIGNAL_TABLES", "build_signal_assets"]

SIGNALS = "signals"
SIGNAL_TABLES = ("signals", "slopes")


def build_signal_assets(catalog: Catalog, partitions_def) -> list:
    @asset(
        name=SIGNALS,
        **step_asset_args(partitions_def),
        metadata={TABLES_METADATA: list(SIGNAL_TABLES)},
        ins={
            "horizon_ensembles": AssetIn(key=HORIZON_ENSEMBLES, metadata={"allow_missing_partitions": True}),
            "horizon_search": AssetIn(key=HORIZON_SEARCH, metadata={"allow_missing_partitions": True}),
        },
        description=(
            "Pairwise-slope signal (Nexus v2 section 4) per date, two variants: `raw` (every horizon, the "
            "quantile-ensemble forecasts, the catalog's signal_threshold) and `optimised` (the horizon subset, "
            "threshold and combination horizon_search chose for the date, when the winner's deflated Sharpe ratio "
            "reaches the catalog's min_deflated_sharpe; otherwise, or while the search has no winner, the raw "
            "configuration: config_source not_significant / fallback). Only pairs where both forecasts exist. "
            "Tables: `signals` (net_prob, bullish/bearish "
            "counts and probabilities, pairs, mean_drift, strength and tier, agreement_ratio, signal, position, "
            "the separation-weighted variant, price) and `slopes` (every pair's slope: the heatmap)."
        ),
    )
    def signals(context: AssetExecutionContext, horizon_ensembles: PartitionFrames, horizon_search: PartitionFrames) -> dict:
        outputs: dict[str, dict[str, pd.DataFrame]] = {}
        metadata: dict[str, dict] = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            frame = horizon_ensembles.concat(key)
            boards = horizon_search.concat(key, "leaderboard")
            winners = None if boards is None else boards[boards["rank"] == 1]
            tables = daily_signals(frame if frame is not None else empty_frame(contract.HORIZON_ENSEMBLES),
                                   threshold=entry.signal_threshold, winners=winners,
                                   min_deflated_sharpe=entry.min_deflated_sharpe)
            per_table = {name: split_by_day(tables[name], days) for name in SIGNAL_TABLES}
            facts = _metadata_by_day(tables["signals"], days)
            for day in days:
                pk = partition_key(key, day)
                outputs[pk] = {name: per_table[name][day] for name in SIGNAL_TABLES}
                metadata[pk] = facts[day]
        attach_partition_metadata(context, metadata)
        return outputs

    return [signals]


_FACT_COLUMNS = ("variant", "signal", "net_prob", "tier", "pairs", "horizons", "threshold", "combination",
                 "config_source", "deflated_sharpe")
_NO_SIGNAL = {"signal": "none (no ensemble forecast on this date)"}


def _metadata_by_day(signals: pd.DataFrame, days) -> dict:
    """Each day's metadata (its raw and optimised signal) from the run's whole ``signals`` table in
    one pass over plain columns (a day's own frame through ``itertuples`` cost ~15 ms a partition);
    equal to computing it on each day's rows (tested)."""
    values = {c: signals[c].tolist() for c in _FACT_COLUMNS}
    rows: dict = {}
    for i, stamp in enumerate(signals["date"].tolist()):
        rows.setdefault(stamp.date(), {})[values["variant"][i]] = i
    out = {}
    for day in days:
        if day not in rows:
            out[day] = dict(_NO_SIGNAL)
            continue
        raw, best = rows[day]["raw"], rows[day]["optimised"]
        v = {c: (values[c][raw], values[c][best]) for c in _FACT_COLUMNS}
        out[day] = {
            "signal": v["signal"][0],
            "net_prob": float(v["net_prob"][0]),
            "tier": v["tier"][0],
            "pairs": int(v["pairs"][0]),
            "horizons": v["horizons"][0],
            "optimised_signal": v["signal"][1],
            "optimised_net_prob": float(v["net_prob"][1]),
            "optimised_config": f"horizons {v['horizons'][1]} | threshold {v['threshold'][1]:g} | {v['combination'][1]} "
                                f"({v['config_source'][1]})",
            "winner_deflated_sharpe": None if pd.isna(v["deflated_sharpe"][1]) else float(v["deflated_sharpe"][1]),
        }
    return out
