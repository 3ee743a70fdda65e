"""The trailing-window mapping: the same upstream partitions as Dagster's own MultiPartitionMapping
(the slow, obviously-correct reference), computed per asset over a run's dates at once."""

import random
import warnings

import dagster
import pytest
from dagster import (
    DailyPartitionsDefinition,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionsDefinition,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
)
from dagster._serdes import deserialize_value, serialize_value

from nexus_assets.defs.partitions import MultiPartitionMapping, date_window_mapping

warnings.filterwarnings("ignore", category=dagster.BetaWarning)


def grid(assets=("1860_Bitcoin", "9002_NASDAQ", "9004_VIX"), start="2018-01-01", end="2018-12-31"):
    return MultiPartitionsDefinition({
        "asset": StaticPartitionsDefinition(list(assets)),
        "date": DailyPartitionsDefinition(start_date=start, end_date=end),
    })


def stock(mapping: MultiPartitionMapping) -> dagster.MultiPartitionMapping:
    return dagster.MultiPartitionMapping(mapping.downstream_mappings_by_upstream_dimension)


def upstream(mapping, subset, down, up):
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(subset, down, up)
    return (sorted(result.partitions_subset.get_partition_keys()),
            sorted(result.required_but_nonexistent_subset.get_partition_keys()))


def random_subsets(partitions_def, rng, count):
    keys = partitions_def.get_partition_keys()
    by_asset = {}
    for key in keys:
        by_asset.setdefault(key.keys_by_dimension["asset"], []).append(key)
    for _ in range(count):
        shape = rng.choice(["range", "sparse", "mixed", "edge", "one"])
        if shape == "range":  # a backfill: one asset's contiguous dates
            dates = rng.choice(list(by_asset.values()))
            i = rng.randrange(len(dates))
            chosen = dates[i:i + rng.randint(1, 120)]
        elif shape == "sparse":  # gaps: re-running scattered days
            chosen = rng.sample(keys, rng.randint(1, 60))
        elif shape == "mixed":  # several assets, a range each
            chosen = [k for dates in by_asset.values() for k in dates[rng.randrange(len(dates)):][: rng.randint(0, 40)]]
        elif shape == "edge":  # the first and last days of the grid
            chosen = [k for dates in by_asset.values() for k in dates[:3] + dates[-3:]]
        else:
            chosen = [rng.choice(keys)]
        yield partitions_def.empty_subset().with_partition_keys(chosen)


# the long windows take 2-10 s each (Dagster's mapping is the slow side): the whole suite runs them
@pytest.mark.parametrize("history,forward", [(0, 0), (1, 0), (0, 5), *(pytest.param(h, f, marks=pytest.mark.slow)
                                             for h, f in [(45, 0), (400, 0), (30, 260)])])
def test_same_upstream_partitions_as_dagsters_mapping(history, forward):
    rng = random.Random(history * 1000 + forward)
    partitions_def = grid()
    fast = date_window_mapping(history, forward)
    for subset in random_subsets(partitions_def, rng, 25):
        assert upstream(fast, subset, partitions_def, partitions_def) == upstream(stock(fast), subset, partitions_def, partitions_def)


def test_nonexistent_upstream_partitions_reported_as_dagster_does():
    partitions_def = grid(start="2018-01-01", end="2018-03-01")
    strict = MultiPartitionMapping({
        "asset": DimensionPartitionMapping("asset", IdentityPartitionMapping()),
        "date": DimensionPartitionMapping("date", TimeWindowPartitionMapping(start_offset=-10, end_offset=10)),
    })
    subset = partitions_def.empty_subset().with_partition_keys(
        [k for k in partitions_def.get_partition_keys() if k.keys_by_dimension["date"] in ("2018-01-02", "2018-02-27")])
    fast = upstream(strict, subset, partitions_def, partitions_def)
    reference = upstream(stock(strict), subset, partitions_def, partitions_def)
    assert fast == reference  # the window runs past both ends of the grid


def test_an_upstream_grid_without_the_asset_or_with_other_dates():
    down = grid(start="2018-01-01", end="2018-06-01")
    up = grid(assets=("1860_Bitcoin", "9002_NASDAQ"), start="2018-02-01", end="2018-05-01")
    mapping = date_window_mapping(20, 3)
    for subset in random_subsets(down, random.Random(7), 25):
        assert upstream(mapping, subset, down, up) == upstream(stock(mapping), subset, down, up)


def test_other_mappings_fall_back_to_dagsters_code():
    partitions_def = grid()
    other = MultiPartitionMapping({
        "asset": DimensionPartitionMapping("asset", StaticPartitionMapping({"1860_Bitcoin": "9002_NASDAQ"})),
        "date": DimensionPartitionMapping("date", TimeWindowPartitionMapping(start_offset=-2)),
    })
    assert other._date_mapping(partitions_def, partitions_def) is None
    subset = partitions_def.empty_subset().with_partition_keys(partitions_def.get_partition_keys()[:10])
    assert upstream(other, subset, partitions_def, partitions_def) == upstream(stock(other), subset, partitions_def, partitions_def)


def test_snapshots_store_it_as_dagsters_mapping():
    mapping = date_window_mapping(30, 5)
    restored = deserialize_value(serialize_value(mapping))
    assert type(restored) is dagster.MultiPartitionMapping and restored == stock(mapping)
