"""Which instruments a run writes (its ``nexus/instrument/<asset>`` tags), and the queue limit the
project's instance derives from them, on the default SQLite instance (no server needed)."""

import shutil

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.instance import INSTRUMENT_TAG_PREFIX, instrument_tags
from nexus_assets_tests.defs.conftest import REPO, Pipeline, sandbox_catalog_text

ORDER = ("9001_SP500", "9002_NASDAQ", "9003_WTI_Crude", "9004_VIX")  # the grid's asset order (catalog order)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return Pipeline(tmp_path_factory.mktemp("defs"), sandbox_catalog_text(keys=ORDER)).defs.resolve_job_def(MAIN_JOB)


def _names(tags: dict[str, str]) -> list[str]:
    assert set(tags.values()) <= {"write"}
    return sorted(key[len(INSTRUMENT_TAG_PREFIX):] for key in tags)


def test_a_range_covers_every_instrument_between_its_ends(job):
    graph = job.asset_layer.asset_graph
    one = {RANGE_START_TAG: "9002_NASDAQ|2018-01-01", RANGE_END_TAG: "9002_NASDAQ|2018-12-31"}
    assert _names(instrument_tags(one, graph)) == ["9002_NASDAQ"]
    # asset first in the key order: from SP500's day to WTI's day spans NASDAQ's whole grid too
    daily = {RANGE_START_TAG: "9001_SP500|2018-03-02", RANGE_END_TAG: "9003_WTI_Crude|2018-03-02"}
    assert _names(instrument_tags(daily, graph)) == ["9001_SP500", "9002_NASDAQ", "9003_WTI_Crude"]
    assert _names(instrument_tags({"dagster/partition": "9004_VIX|2018-03-02"}, graph)) == ["9004_VIX"]


def test_a_run_without_partitions_or_outside_the_grid_is_tagged_safely(job):
    graph = job.asset_layer.asset_graph
    assert instrument_tags({}, graph) == {}
    assert instrument_tags({"dagster/partition": "2018-03-02"}, graph) == {}  # not an asset x date key
    # instruments the grid does not know: the two named ones, never none
    odd = {RANGE_START_TAG: "7_Other|2018-01-01", RANGE_END_TAG: "9001_SP500|2018-01-02"}
    assert _names(instrument_tags(odd, graph)) == ["7_Other", "9001_SP500"]


def test_the_default_instance_tags_runs_and_limits_one_run_per_instrument(tmp_path, monkeypatch, job):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.from_config(str(home))
    before = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert not any(limit["key"].startswith(INSTRUMENT_TAG_PREFIX) for limit in before)
    run = instance.create_run_for_job(job, status=DagsterRunStatus.NOT_STARTED,
                                      tags={RANGE_START_TAG: "9003_WTI_Crude|2018-01-01",
                                            RANGE_END_TAG: "9004_VIX|2018-01-01"})
    assert _names({k: v for k, v in instance.get_run_by_id(run.run_id).tags.items()
                   if k.startswith(INSTRUMENT_TAG_PREFIX)}) == ["9003_WTI_Crude", "9004_VIX"]
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert sorted(limit["key"] for limit in limits if limit["key"].startswith(INSTRUMENT_TAG_PREFIX)) == [
        f"{INSTRUMENT_TAG_PREFIX}9003_WTI_Crude", f"{INSTRUMENT_TAG_PREFIX}9004_VIX"]
    assert all(limit["limit"] == 1 for limit in limits if limit["key"].startswith(INSTRUMENT_TAG_PREFIX))
    instance.dispose()
