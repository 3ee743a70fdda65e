"""Which date upstream's model metadata describes, when upstream says it and when it does not."""

import datetime as dt
import logging

import pandas as pd
import pytest
from dagster import Failure
from upath import UPath

from nexus_assets.catalog import CatalogAsset
from nexus_assets.defs.model_metadata import _latest_day_with_rows, _upstream
from nexus_assets.defs.storage import PartitionFrames, write_parquet_atomic

ASSET = CatalogAsset(key="1_A", project_id=1, name="A", display_name="A", category="Crypto", calendar="crypto",
                     start_date=dt.date(2025, 1, 1), source="api")
HISTORY = pd.DataFrame({"symbol": ["a", "a"], "time": pd.to_datetime(["2025-01-02", "2025-01-04"]), "n_predict": [1, 1]})


def latest(history: pd.DataFrame):
    """What the step passes: the latest day with rows, asked for when needed."""
    return lambda: pd.Timestamp(history["time"].max()).date() if len(history) else None
DESCRIPTION = pd.DataFrame([{"symbol": "a", "horizon": 1, "algorithm": "ridge", "code_version": "v1"}])


class Context:
    log = logging.getLogger("test")


class Upstream:
    """Answers the metadata request as a QMLResource would: a snapshot, or None without the endpoint."""

    def __init__(self, answer):
        self.answer = answer

    def model_metadata(self, asset, log=None):
        return self.answer


def test_the_watermark_upstream_sends_is_the_day_it_describes():
    described, as_of, why = _upstream(Context(), Upstream((DESCRIPTION, pd.Timestamp("2025-01-03"))), ASSET, latest(HISTORY))
    assert as_of == dt.date(2025, 1, 3) and described["code_version"].tolist() == ["v1"]
    assert "describes 2025-01-03" in why


def test_without_a_watermark_it_describes_at_least_the_latest_day_with_rows():
    _, as_of, why = _upstream(Context(), Upstream((DESCRIPTION, None)), ASSET, latest(HISTORY))
    assert as_of == dt.date(2025, 1, 4) and "later days have rows" in why
    described, as_of, _ = _upstream(Context(), Upstream((DESCRIPTION, None)), ASSET, latest(HISTORY.iloc[0:0]))
    assert described is None and as_of == dt.date.max  # nothing to describe yet


def test_no_endpoint_describes_no_date_and_says_why():
    described, as_of, why = _upstream(Context(), Upstream(None), ASSET, latest(HISTORY))
    assert described is None and as_of == dt.date.max and "no model metadata endpoint" in why


def test_a_description_that_cannot_be_keyed_fails_the_step():
    with pytest.raises(Failure, match="no 'symbol' field"):
        _upstream(Context(), Upstream((pd.DataFrame([{"model": "a"}]), None)), ASSET, latest(HISTORY))


def test_the_latest_day_with_rows_is_the_first_later_one_else_the_latest_up_to_the_run(tmp_path):
    """What the history the step read before gave (its rows' latest time): every earlier day, the
    run's and the first later day with rows; empty partitions count for nothing."""
    def stored(rows_by_day: dict[int, int]) -> PartitionFrames:
        paths = {}
        for n, rows in rows_by_day.items():
            on = dt.date(2025, 1, 1) + dt.timedelta(days=n)
            path = UPath(tmp_path) / f"{len(list(tmp_path.iterdir()))}" / f"{on}.parquet"
            frame = pd.DataFrame({"symbol": ["a"] * rows, "time": pd.Timestamp(on), "n_predict": 1})
            write_parquet_atomic(path, frame)
            paths[on] = path
        return PartitionFrames({f"1_A|{on}": path for on, path in paths.items()})

    day = dt.date(2025, 1, 1)
    frames = stored({0: 2, 1: 1, 2: 0, 5: 0, 6: 3, 9: 1})
    assert _latest_day_with_rows(frames, "1_A", day + dt.timedelta(days=3)) == day + dt.timedelta(days=6)
    assert _latest_day_with_rows(frames, "1_A", day + dt.timedelta(days=9)) == day + dt.timedelta(days=9)
    assert _latest_day_with_rows(frames, "1_A", day + dt.timedelta(days=30)) == day + dt.timedelta(days=9)
    frames = stored({0: 2, 1: 0, 3: 0})
    assert _latest_day_with_rows(frames, "1_A", day + dt.timedelta(days=2)) == day
    assert _latest_day_with_rows(stored({1: 0}), "1_A", day + dt.timedelta(days=2)) is None
