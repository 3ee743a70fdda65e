"""The project's instance (dagster.yaml): batched event storage and O(1) per-partition metadata.

Everything Dagster records for a range run (materializations with their per-partition metadata,
the asset's materialized partitions, the latest materialization of each partition, the run's
status) must be what the stock storage and the public ``add_asset_metadata`` record; only the
number of transactions changes. Each test runs the same range on a persistent instance with the
project's dagster.yaml and on one with stock storage.
"""

import datetime as dt
import shutil
import warnings
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, materialize
from dagster._core.events import DagsterEventType

from nexus_assets import instance as project_instance
from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs import metadata as metadata_module
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import asset_date_partitions
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets_tests.defs.conftest import REPO, Pipeline, sandbox_catalog_text

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

ASSET = "9001_SP500"
FIRST, LAST = dt.date(2018, 1, 1), dt.date(2018, 1, 20)
ASSETS = ("qml_models", "horizon_slices", "horizon_ensembles", "signals", "metrics")
STOCK_YAML = "telemetry:\n  enabled: false\n"


def _home(path: Path, project: bool, monkeypatch) -> DagsterInstance:
    path.mkdir()
    if project:
        shutil.copyfile(REPO / "dagster.yaml", path / "dagster.yaml")
    else:
        (path / "dagster.yaml").write_text(STOCK_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return DagsterInstance.from_config(str(path))


def _run(tmp_path: Path, name: str, project: bool, monkeypatch):
    instance = _home(tmp_path / f"{name}_home", project, monkeypatch)
    folder = tmp_path / name
    folder.mkdir()
    pipe = Pipeline(folder, sandbox_catalog_text(keys=(ASSET,)))
    job = pipe.defs.resolve_job_def(MAIN_JOB)
    result = job.execute_in_process(
        instance=instance, raise_on_error=False,
        tags={RANGE_START_TAG: f"{ASSET}|{FIRST}", RANGE_END_TAG: f"{ASSET}|{LAST}"},
    )
    return instance, result, pipe


def _recorded(instance: DagsterInstance) -> dict:
    """What the UI reads: per asset, materialized partitions and each one's latest metadata."""
    out = {}
    for name in ASSETS:
        key = AssetKey(name)
        partitions = sorted(instance.get_materialized_partitions(key))
        records = instance.fetch_materializations(key, limit=1000).records
        latest = {}
        for record in records:
            m = record.asset_materialization
            where = ("path", "page_path", "page", "root")  # where each run wrote
            latest.setdefault(m.partition, {k: v.value for k, v in m.metadata.items() if k not in where})
        [asset_record] = instance.get_asset_records([key])  # the asset's row: its latest materialization
        entry = asset_record.asset_entry
        last = entry.last_materialization.dagster_event.materialization
        out[name] = (partitions, len(records), latest, last.partition, entry.last_run_id is not None)
    return out


def test_project_instance_records_what_stock_storage_records(tmp_path, monkeypatch):
    stock, stock_result, _ = _run(tmp_path, "stock", False, monkeypatch)
    batches = []
    real = project_instance.BatchingSqliteEventLogStorage.store_event_batch

    def counting(self, events):
        batches.append(len(events))
        return real(self, events)

    monkeypatch.setattr(project_instance.BatchingSqliteEventLogStorage, "store_event_batch", counting)
    ours, our_result, pipe = _run(tmp_path, "ours", True, monkeypatch)
    assert max(batches) == (LAST - FIRST).days + 1  # a step's materializations: one batch, one transaction
    assert stock_result.success and our_result.success
    assert type(ours.event_log_storage).__name__ == "BatchingSqliteEventLogStorage"
    assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"
    got, want = _recorded(ours), _recorded(stock)
    assert got == want
    days = (LAST - FIRST).days + 1
    assert all(len(got[name][0]) == days and got[name][1] == days for name in ASSETS)
    assert got["horizon_slices"][2][f"{ASSET}|2018-01-19"]["rows"] > 0  # per-partition facts kept (a Friday)
    # the daily run on top reads the recorded hashes back (restatement check) and stays quiet
    for inst in (stock, ours):
        planned = inst.get_records_for_run(our_result.run_id if inst is ours else stock_result.run_id,
                                           of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
        assert planned  # one per asset and run (the partition subset), not one per partition
    ours_planned = ours.get_records_for_run(our_result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    every_asset = pipe.defs.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys  # the main job's assets
    assert len(ours_planned) == len(every_asset)


def test_a_failed_run_shows_its_partitions_missing_and_the_run_failed(tmp_path, monkeypatch):
    """The documented trade-off of one planned event per asset: failed partitions show as missing."""
    instance = _home(tmp_path / "home", True, monkeypatch)
    folder = tmp_path / "run"
    folder.mkdir()
    pipe = Pipeline(folder, sandbox_catalog_text(keys=(ASSET,)))
    job = pipe.defs.resolve_job_def(MAIN_JOB)
    monkeypatch.setattr("nexus_assets.defs.ensembles.ensembles_with_combinations",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    result = job.execute_in_process(instance=instance, raise_on_error=False,
                                    tags={RANGE_START_TAG: f"{ASSET}|{FIRST}", RANGE_END_TAG: f"{ASSET}|{LAST}"})
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.FAILURE
    assert not instance.get_materialized_partitions(AssetKey("horizon_ensembles"))
    assert len(instance.get_materialized_partitions(AssetKey("horizon_slices"))) == (LAST - FIRST).days + 1


def test_on_another_dagster_version_batches_are_stored_one_by_one(tmp_path, monkeypatch):
    assert project_instance.batch_writes_supported()  # the installed version is the pinned one
    assert not project_instance.batch_writes_supported("1.14.0")
    stock, _, _ = _run(tmp_path, "stock", False, monkeypatch)
    monkeypatch.setattr(project_instance, "batch_writes_supported", lambda version=None: False)
    monkeypatch.setattr(metadata_module, "batch_writes_supported", lambda version=None: False)
    monkeypatch.setattr(project_instance.BatchingSqliteEventLogStorage, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, result, _ = _run(tmp_path, "ours", True, monkeypatch)
    assert result.success
    assert any("stored one event at a time" in str(w.message) for w in caught)
    assert _recorded(ours) == _recorded(stock)


def test_environment_defaults_yield_to_the_operator(monkeypatch):
    import importlib

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    monkeypatch.delenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", raising=False)
    importlib.reload(project_instance)
    import os

    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"
    assert os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == "1"


# -- attach_partition_metadata against the public call -------------------------------------------

def _tiny_asset(use_bulk: bool):
    from nexus_assets.catalog import load_catalog

    partitions = asset_date_partitions(load_catalog())

    @asset(partitions_def=partitions, name="tiny")
    def tiny(context) -> None:
        facts = {pk: {"n": i, "key": pk} for i, pk in enumerate(sorted(context.partition_keys))}
        if use_bulk:
            attach_partition_metadata(context, facts)
        else:
            for pk, meta in facts.items():
                context.add_asset_metadata(meta, partition_key=pk)
        context.add_asset_metadata({"run_wide": True})

    return tiny


@pytest.mark.parametrize("supported", [True, False])
def test_bulk_metadata_equals_the_public_per_partition_call(monkeypatch, supported):
    monkeypatch.setattr(metadata_module, "batch_writes_supported", lambda version=None: supported)
    recorded = []
    for bulk in (True, False):
        instance = DagsterInstance.ephemeral()
        tags = {RANGE_START_TAG: f"{ASSET}|2018-01-01", RANGE_END_TAG: f"{ASSET}|2018-01-09"}
        assert materialize([_tiny_asset(bulk)], instance=instance, tags=tags).success
        records = instance.fetch_materializations(AssetKey("tiny"), limit=100).records
        recorded.append(sorted((r.asset_materialization.partition,
                                sorted((k, v.value) for k, v in r.asset_materialization.metadata.items()))
                               for r in records))
    assert recorded[0] == recorded[1]
    assert len(recorded[0]) == 9 and dict(recorded[0][0][1])["run_wide"] is True


def test_bulk_metadata_refuses_a_partition_the_run_does_not_target():
    from nexus_assets.catalog import load_catalog

    partitions = asset_date_partitions(load_catalog())

    @asset(partitions_def=partitions, name="stray")
    def stray(context) -> None:
        attach_partition_metadata(context, {f"{ASSET}|2019-05-05": {"n": 1}})

    tags = {RANGE_START_TAG: f"{ASSET}|2018-01-01", RANGE_END_TAG: f"{ASSET}|2018-01-02"}
    result = materialize([stray], instance=DagsterInstance.ephemeral(), tags=tags, raise_on_error=False)
    assert not result.success


@pytest.mark.parametrize("supported", [True, False])
def test_an_io_manager_attaches_metadata_to_each_partition_on_both_paths(monkeypatch, supported):
    """From ``handle_output`` too, the fast path and the public per-partition call record the same."""
    from dagster import IOManager, io_manager

    from nexus_assets.catalog import load_catalog

    monkeypatch.setattr(metadata_module, "batch_writes_supported", lambda version=None: supported)

    class Sizes(IOManager):
        def handle_output(self, context, obj):
            attach_partition_metadata(context, {k: {"size": len(k) + obj[k]} for k in context.asset_partition_keys})

        def load_input(self, context):
            raise NotImplementedError

    @asset(partitions_def=asset_date_partitions(load_catalog()), name="sized", io_manager_key="sizes")
    def sized(context):
        return {k: i for i, k in enumerate(sorted(context.partition_keys))}

    instance = DagsterInstance.ephemeral()
    tags = {RANGE_START_TAG: f"{ASSET}|2018-01-01", RANGE_END_TAG: f"{ASSET}|2018-01-03"}
    assert materialize([sized], instance=instance, tags=tags, resources={"sizes": io_manager(lambda _: Sizes())}).success
    records = instance.fetch_materializations(AssetKey("sized"), limit=10).records
    got = {r.asset_materialization.partition: r.asset_materialization.metadata["size"].value for r in records}
    assert got == {f"{ASSET}|2018-01-0{d}": len(ASSET) + 11 + d - 1 for d in (1, 2, 3)}


def test_without_dagster_home_the_project_folder_keeps_one_instance(tmp_path):
    """Dagster's CLI without DAGSTER_HOME makes a temporary instance folder configured by ./dagster.yaml;
    the project's instance class stores everything in ./.dagster_home instead (and $DAGSTER_HOME stays as it is)."""
    from dagster._cli import utils as cli_utils
    from dagster._core.instance.ref import InstanceRef

    project = project_instance
    assert project.TMP_DAGSTER_HOME_PREFIX == cli_utils.TMP_DAGSTER_HOME_PREFIX
    shutil.copyfile(Path(__file__).resolve().parents[2] / "dagster.yaml", tmp_path / "dagster.yaml")
    temporary = tmp_path / f"{project.TMP_DAGSTER_HOME_PREFIX}abc"
    temporary.mkdir()
    ref = InstanceRef.from_dir(str(temporary), config_dir=str(tmp_path))
    home = tmp_path / ".dagster_home"
    assert home.is_dir() and ref.local_artifact_storage_data.config_dict["base_dir"] == str(home)
    assert ref.storage_data.config_dict["base_dir"] == str(home)
    assert ref.compute_logs_data.config_dict["base_dir"].startswith(str(home))
    explicit = tmp_path / "elsewhere"
    explicit.mkdir()
    assert InstanceRef.from_dir(str(explicit), config_dir=str(tmp_path)).storage_data.config_dict["base_dir"] == str(explicit)
