"""What every pipeline step shares: its group, partitions, backfill policy, store and freshness."""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import BackfillPolicy, Failure, FreshnessPolicy, RetryRequested

from nexus_assets.qml.client import QMLLimitError, QMLRequestError, QMLTransientError

__all__ = ["DAILY_FRESHNESS", "GROUP", "step_asset_args", "upstream_errors"]

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


@contextmanager
def upstream_errors(context, key: str, endpoint: str, what: str) -> Iterator[None]:
    """How a step other than ``qml_models`` answers the QML client's errors on one of upstream's
    endpoints: a refused or oversized request fails the step at once, a transient fault that
    outlived the client's own retries asks Dagster to retry the step later."""
    try:
        yield
    except (QMLRequestError, QMLLimitError) as exc:
        raise Failure(description=f"{key}: {what}: {exc}", allow_retries=False) from None
    except QMLTransientError as exc:
        context.log.warning(f"{key}: {endpoint} still failing after the client's retries: {exc}")
        raise RetryRequested(max_retries=3, seconds_to_wait=60) from None
