"""The daily schedule: one run for the latest day of every catalog asset (stopped by default).

``build_schedule_from_partitioned_job`` would make one run per asset per tick on an asset x date
grid; a single RunRequest whose partition range spans every asset for one day makes one run.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.
import datetime as dt

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from nexus_assets.catalog import Catalog
from nexus_assets.defs.partitions import partition_key

__all__ = ["RANGE_START_TAG", "RANGE_END_TAG", "daily_run_request", "build_daily_schedule"]

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def daily_run_request(catalog: Catalog, day: dt.date) -> RunRequest:
    """One run materialising ``day`` for every asset of the catalog."""
    keys = catalog.keys
    return RunRequest(
        run_key=f"nexus_daily|{day.isoformat()}",
        tags={RANGE_START_TAG: partition_key(keys[0], day), RANGE_END_TAG: partition_key(keys[-1], day)},
    )


def build_daily_schedule(catalog: Catalog, job, cron: str = "30 6 * * *"):
    @schedule(
        name="nexus_daily",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Every day at 06:30 UTC: yesterday's partition of every catalog asset, in one run.",
    )
    def nexus_daily(context: ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)
        if day < catalog.start_date:
            return SkipReason(f"{day} is before the catalog's first start_date {catalog.start_date}")
        if catalog.end_date is not None and day > catalog.end_date:
            day = catalog.end_date  # a closed history (the sandbox): keep refreshing its last day
        return daily_run_request(catalog, day)

    return nexus_daily
