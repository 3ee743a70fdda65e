"""The asset x date partition grid, shared by every asset, job and schedule.

Keys are ``"<asset>|<YYYY-MM-DD>"`` (Dagster orders dimensions by name, so ``asset`` comes first
and one asset's dates form a contiguous key range).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

import dagster
import numpy as np
from dagster import (
    DailyPartitionsDefinition,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
)
from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult

from nexus_assets.catalog import Catalog

__all__ = [
    "ASSET_DIM",
    "DATE_DIM",
    "DEFAULT_MAX_HORIZON",
    "asset_date_partitions",
    "partition_key",
    "split_key",
    "days_by_asset",
    "split_by_day",
    "split_sorted_by_day",
    "day_rows",
    "date_window_mapping",
    "MultiPartitionMapping",
    "observations",
    "per_horizon_observations",
    "priced_observations",
]

ASSET_DIM = "asset"
DATE_DIM = "date"
# An `api` asset's horizons come from its data; QDT's longest published horizon is 180 observations.
DEFAULT_MAX_HORIZON = 180


def asset_date_partitions(catalog: Catalog) -> MultiPartitionsDefinition:
    """Catalog keys x days from the earliest ``start_date`` (to the last ``end_date`` if all assets have one)."""
    end = catalog.end_date
    return MultiPartitionsDefinition(
        {
            ASSET_DIM: StaticPartitionsDefinition(catalog.keys),
            DATE_DIM: DailyPartitionsDefinition(
                start_date=catalog.start_date.isoformat(),
                end_date=(end + dt.timedelta(days=1)).isoformat() if end else None,
            ),
        }
    )


def partition_key(asset: str, day: dt.date) -> str:
    return f"{asset}|{day.isoformat()}"


def split_key(key: str) -> tuple[str, dt.date]:
    asset, _, day = key.partition("|")
    return asset, dt.date.fromisoformat(day)


def days_by_asset(keys: Iterable[str]) -> dict[str, list[dt.date]]:
    """Group a run's partition keys by catalog asset, dates sorted (a run may hold any mix)."""
    grouped: dict[str, list[dt.date]] = {}
    for key in sorted(keys):
        asset, day = split_key(key)
        grouped.setdefault(asset, []).append(day)
    return grouped


def split_by_day(frame, days: Iterable[dt.date]) -> dict:
    """``frame``'s rows (a ``date`` column) for each of ``days``; a day without rows gets an empty
    frame with the same columns (a warm-up day, a day without a session)."""
    by_day = {stamp.date(): rows.reset_index(drop=True) for stamp, rows in frame.groupby("date", sort=True)}
    return {day: by_day.get(day, frame.iloc[0:0]) for day in days}


def day_rows(stamps: np.ndarray, day: dt.date) -> slice:
    """The rows of ``day`` in ``stamps`` (sorted ``datetime64[ns]`` dates), found by binary search."""
    stamp = np.datetime64(day, "ns")
    return slice(int(np.searchsorted(stamps, stamp, "left")), int(np.searchsorted(stamps, stamp, "right")))


def split_sorted_by_day(frame, days: Iterable[dt.date]) -> dict:
    """:func:`split_by_day` for a frame sorted by ``date``: each day's rows by :func:`day_rows`
    (the groupby there cost ~15 ms a day on the ML tables; equal results, tested)."""
    stamps = frame["date"].to_numpy()
    return {day: frame.iloc[day_rows(stamps, day)].reset_index(drop=True) for day in days}


class MultiPartitionMapping(dagster.MultiPartitionMapping):
    """Dagster's ``MultiPartitionMapping``, with the upstream partitions of a run computed per
    asset over all its dates at once when the asset dimension maps to itself and the date
    dimension through a time window (the mappings :func:`date_window_mapping` builds).

    Dagster maps each downstream key separately and builds a key object for every (key, upstream
    date) pair: O(partitions x window) per input, twice per step (inputs, then data versions),
    about 40 ms per partition for ``metrics`` in a year's run. Here one time-window subset per
    asset goes through the date mapping once: O(partitions + window). Any other shape of subset or
    mapping goes to Dagster's own code. The result is the same set of keys (tested against
    Dagster's implementation on random subsets).

    The class name is Dagster's on purpose: Dagster's serdes looks serializers up by class name,
    so a snapshot (the UI's asset graph, a run's plan) stores this mapping as the stock
    ``MultiPartitionMapping`` with the same fields, which computes the same result.
    """

    __slots__ = ()

    def _date_mapping(self, downstream_def, upstream_def) -> TimeWindowPartitionMapping | None:
        mappings = self.downstream_mappings_by_upstream_dimension
        if (
            not isinstance(downstream_def, MultiPartitionsDefinition)
            or not isinstance(upstream_def, MultiPartitionsDefinition)
            or set(mappings) != {ASSET_DIM, DATE_DIM}
            or [d.name for d in downstream_def.partitions_defs] != [ASSET_DIM, DATE_DIM]
            or [d.name for d in upstream_def.partitions_defs] != [ASSET_DIM, DATE_DIM]
            or mappings[ASSET_DIM].dimension_name != ASSET_DIM
            or mappings[DATE_DIM].dimension_name != DATE_DIM
            or type(mappings[ASSET_DIM].partition_mapping) is not IdentityPartitionMapping
            or type(mappings[DATE_DIM].partition_mapping) is not TimeWindowPartitionMapping
        ):
            return None
        return mappings[DATE_DIM].partition_mapping

    def get_upstream_mapped_partitions_result_for_partitions(
        self,
        downstream_partitions_subset,
        downstream_partitions_def,
        upstream_partitions_def,
        current_time=None,
        dynamic_partitions_store=None,
    ):
        date_mapping = self._date_mapping(downstream_partitions_def, upstream_partitions_def)
        if date_mapping is None or downstream_partitions_subset is None or not hasattr(downstream_partitions_subset, "get_partition_keys"):
            return super().get_upstream_mapped_partitions_result_for_partitions(
                downstream_partitions_subset, downstream_partitions_def, upstream_partitions_def,
                current_time, dynamic_partitions_store)
        from dagster._core.definitions.partitions.subset import AllPartitionsSubset

        if isinstance(downstream_partitions_subset, AllPartitionsSubset):
            return super().get_upstream_mapped_partitions_result_for_partitions(
                downstream_partitions_subset, downstream_partitions_def, upstream_partitions_def,
                current_time, dynamic_partitions_store)
        down_dates = downstream_partitions_def.get_partitions_def_for_dimension(DATE_DIM)
        up_dates = upstream_partitions_def.get_partitions_def_for_dimension(DATE_DIM)
        up_assets = set(upstream_partitions_def.get_partitions_def_for_dimension(ASSET_DIM).get_partition_keys(
            current_time=current_time, dynamic_partitions_store=dynamic_partitions_store))
        dates_by_asset: dict[str, list[str]] = {}
        for key in downstream_partitions_subset.get_partition_keys():
            dims = downstream_partitions_def.get_partition_key_from_str(key).keys_by_dimension
            dates_by_asset.setdefault(dims[ASSET_DIM], []).append(dims[DATE_DIM])
        upstream_keys: list[MultiPartitionKey] = []
        nonexistent = set(dates_by_asset) - up_assets  # assets missing upstream, as Dagster reports them
        for asset, dates in dates_by_asset.items():
            result = date_mapping.get_upstream_mapped_partitions_result_for_partitions(
                down_dates.empty_subset().with_partition_keys(dates), down_dates, up_dates,
                current_time=current_time, dynamic_partitions_store=dynamic_partitions_store)
            nonexistent.update(result.required_but_nonexistent_subset.get_partition_keys())
            if asset in up_assets:  # the identity mapping keeps only assets that exist upstream
                upstream_keys.extend(MultiPartitionKey({ASSET_DIM: asset, DATE_DIM: day})
                                     for day in result.partitions_subset.get_partition_keys())
        from dagster._core.definitions.partitions.subset.default import DefaultPartitionsSubset

        return UpstreamPartitionsResult(
            partitions_subset=upstream_partitions_def.empty_subset().with_partition_keys(upstream_keys),
            required_but_nonexistent_subset=DefaultPartitionsSubset(nonexistent),
        )


def date_window_mapping(history_days: int, forward_days: int = 0) -> MultiPartitionMapping:
    """Same asset, dates ``D - history_days .. D + forward_days`` (a trailing, optionally forward, window)."""
    return MultiPartitionMapping(
        {
            ASSET_DIM: DimensionPartitionMapping(ASSET_DIM, IdentityPartitionMapping()),
            DATE_DIM: DimensionPartitionMapping(
                DATE_DIM,
                TimeWindowPartitionMapping(
                    start_offset=-history_days, end_offset=forward_days, allow_nonexistent_upstream_partitions=True
                ),
            ),
        }
    )


def per_horizon_observations(need: Callable[[int], int]):
    """A history rule (see ``storage.PartitionFrames.history``): partitions until every horizon
    that has rows in the run has ``need(h)`` more dates with rows of that horizon (a day may lack
    a horizon upstream, so dates are counted per horizon, not per partition)."""

    def rule(run_rows):
        wanted = {} if run_rows is None else {int(h): need(int(h)) for h in np.unique(run_rows["horizon"])}
        counts = dict.fromkeys(wanted, 0)

        def enough(frame) -> bool:  # one partition = one date
            for h in np.unique(frame["horizon"]).tolist():
                if h in counts:
                    counts[h] += 1
            return all(counts[h] >= n for h, n in wanted.items())

        return enough

    return rule


def observations(n: int):
    """A history rule: ``n`` more non-empty partitions (dates with rows)."""

    def rule(_run_rows):
        seen = [0]

        def enough(_frame) -> bool:  # only non-empty partitions are offered
            seen[0] += 1
            return seen[0] >= n

        return enough

    return rule


def priced_observations(n: int):
    """A history rule: partitions until ``n`` more of them have a price (a finite ``price``)."""

    def rule(_run_rows):
        seen = [0]

        def enough(frame) -> bool:
            seen[0] += bool(np.isfinite(frame["price"].to_numpy("float64", na_value=np.nan)).any())
            return seen[0] >= n

        return enough

    return rule
