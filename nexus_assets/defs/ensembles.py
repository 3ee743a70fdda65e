"""``horizon_ensembles``: the dynamic quantile ensemble per asset, date and horizon.

Each catalog asset uses its own ``selection_mode``. The input is a window of ``horizon_slices``:
the trailing history the ensemble needs (lookback plus the longest horizon, in observations,
turned into calendar days), and, when any catalog asset uses ``nexus_v2``, the forward window
the old semantics look at. A range run computes all its dates of one asset in one call.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, MetadataValue, asset

from nexus_assets.catalog import Catalog
from nexus_assets.core.combinations import VARIANCE_WINDOW, within_horizon_combinations
from nexus_assets.core.ensembles import LOOKBACK, dynamic_quantile_ensemble
from nexus_assets.core.slicing import empty_slices
from nexus_assets.defs.ingest import HORIZON_SLICES_ASSET, step_asset_args
from nexus_assets.defs.partitions import (
    DEFAULT_MAX_HORIZON,
    calendar_days,
    date_window_mapping,
    days_by_asset,
    partition_key,
    split_by_day,
)
from nexus_assets.defs.storage import PartitionFrames

__all__ = [
    "HORIZON_ENSEMBLES",
    "build_ensemble_assets",
    "empty_ensembles",
    "ensemble_window_days",
    "ensembles_with_combinations",
]

HORIZON_ENSEMBLES = "horizon_ensembles"


def ensemble_window_days(catalog: Catalog, lookback: int = LOOKBACK) -> tuple[int, int]:
    """Calendar days of ``horizon_slices`` history (and future) one date's ensemble reads.

    Point-in-time: a pair (t, h) counts for D only when t + h <= D, so D needs ``lookback + h``
    observations of history. nexus_v2: the window ends the day before D but looks ``h``
    observations past each of its rows, and the ``actual`` column ``h`` past D.
    """
    history = forward = 0
    for entry in catalog.assets:
        longest = max(entry.horizons) if entry.horizons else DEFAULT_MAX_HORIZON
        history = max(history, calendar_days(max(lookback + longest + 1, VARIANCE_WINDOW), entry.calendar))
        if entry.selection_mode == "nexus_v2":
            forward = max(forward, calendar_days(longest, entry.calendar))
    return history, forward


def build_ensemble_assets(catalog: Catalog, partitions_def, lookback: int = LOOKBACK) -> list:
    history, forward = ensemble_window_days(catalog, lookback)

    @asset(
        name=HORIZON_ENSEMBLES,
        **step_asset_args(partitions_def),
        ins={
            "horizon_slices": AssetIn(
                key=HORIZON_SLICES_ASSET,
                partition_mapping=date_window_mapping(history, forward),
                metadata={"allow_missing_partitions": True},
            )
        },
        description=(
            "Dynamic quantile ensemble (Nexus v2 section 3): one row per date and horizon with the "
            "ensemble forecast, the winning strategy/aggregator/quantile, the selected models' spread "
            "(p05..p95), the best child model and its symbol, the day's price, and the plain within-horizon "
            "combinations the horizon search compares (raw_mean, raw_median, low_variance: the 10% of models "
            "with the lowest forecast variance over the last 60 rows). Mode per catalog asset: point_in_time (default) uses "
            "only outcomes known by the date; nexus_v2 reproduces the old scripts exactly, look-ahead "
            f"included, so in that mode a date's forecast changes as later data arrives. Reads "
            f"{history} days of horizon_slices history" + (f" and {forward} days ahead." if forward else ".")
        ),
    )
    def horizon_ensembles(context: AssetExecutionContext, horizon_slices: PartitionFrames) -> dict[str, pd.DataFrame]:
        outputs: dict[str, pd.DataFrame] = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            # One catalog asset's window at a time: the mapping may span many assets and a year.
            slices = horizon_slices.concat(key)
            slices = empty_slices() if slices is None else slices
            result = ensembles_with_combinations(slices, mode=entry.selection_mode, lookback=lookback, dates=days)
            for day, day_rows in split_by_day(result, days).items():
                outputs[partition_key(key, day)] = day_rows
                context.add_asset_metadata(_metadata(day_rows, entry.selection_mode), partition_key=partition_key(key, day))
        return outputs

    return [horizon_ensembles]


def ensembles_with_combinations(slices: pd.DataFrame, *, mode: str, lookback: int, dates) -> pd.DataFrame:
    """The stored horizon_ensembles table: the quantile ensemble plus the day's price and the plain
    combinations, on the (date, horizon) rows the ensemble forecasts."""
    result = dynamic_quantile_ensemble(slices, mode=mode, lookback=lookback, dates=dates)
    plain = within_horizon_combinations(slices, dates=dates)
    merged = result.merge(plain, on=["date", "horizon"], how="left", validate="one_to_one")
    return merged[[*result.columns[:-1], *plain.columns[2:], result.columns[-1]]]  # `mode` stays last


def empty_ensembles() -> pd.DataFrame:
    """A zero-row horizon_ensembles table (what a window without forecasts reads as)."""
    return ensembles_with_combinations(empty_slices(), mode="point_in_time", lookback=LOOKBACK, dates=[])


def _metadata(rows: pd.DataFrame, mode: str) -> dict:
    return {
        "mode": mode,
        "rows": len(rows),
        "horizons": MetadataValue.json([int(h) for h in rows["horizon"]]),
        "models_per_horizon": MetadataValue.json({str(int(h)): int(n) for h, n in zip(rows["horizon"], rows["n_models"])}),
        "winners_per_strategy": MetadataValue.json({str(k): int(v) for k, v in rows["strategy"].value_counts().sort_index().items()}),
    }
