"""What every pipeline step shares: its group, partitions, backfill policy, store and freshness."""

import datetime as dt

from dagster import BackfillPolicy, FreshnessPolicy

__all__ = ["DAILY_FRESHNESS", "GROUP", "step_asset_args"]

GROUP = "nexus"
# Daily data: warn when nothing new for a day and a bit, fail after two days.
DAILY_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=48), warn_window=dt.timedelta(hours=26))


def step_asset_args(partitions_def) -> dict:
    """What every pipeline step shares: group, asset x date partitions, single-run backfills, the
    Parquet store, daily freshness."""
    return {
        "group_name": GROUP,
        "partitions_def": partitions_def,
        "backfill_policy": BackfillPolicy.single_run(),
        "io_manager_key": "parquet_io_manager",
        "kinds": {"python", "parquet"},
        "freshness_policy": DAILY_FRESHNESS,
    }
