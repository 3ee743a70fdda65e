"""The shipped PostgreSQL instance (``deploy/postgres/dagster.yaml``) on a real PostgreSQL server.

A range run through that instance must record what the project's default SQLite instance records
(runs, materializations, per-partition metadata) and store the same files byte for byte; every
run names the instruments it writes, and the run queue never starts two runs that write one
instrument (checked with the queue daemon's own selection, without starting the daemon); and the
deployment's commands work end to end: `dagster job launch` queues, `dagster-daemon` starts the run.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import DagsterEventType
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.instance import INSTRUMENT_TAG_PREFIX, NexusInstance
from nexus_assets_tests.defs.conftest import REPO, Pipeline, sandbox_catalog_text
from nexus_assets_tests.defs.test_instance import ASSETS, FIRST, LAST, _recorded
from nexus_assets_tests.loopback import secret_leaks
from nexus_assets_tests.services import postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.services]

DEPLOY_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
SP500, WTI = "9001_SP500", "9003_WTI_Crude"


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


def _postgres_instance(home: Path, pg, monkeypatch) -> DagsterInstance:
    home.mkdir()
    shutil.copyfile(DEPLOY_YAML, home / "dagster.yaml")
    for name, value in pg.new_database().env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return DagsterInstance.from_config(str(home))


def _sqlite_instance(home: Path, monkeypatch) -> DagsterInstance:
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return DagsterInstance.from_config(str(home))


def _range_run(instance: DagsterInstance, folder: Path):
    folder.mkdir()
    pipe = Pipeline(folder, sandbox_catalog_text(keys=(SP500,)))
    result = pipe.defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance, raise_on_error=False,
        tags={RANGE_START_TAG: f"{SP500}|{FIRST}", RANGE_END_TAG: f"{SP500}|{LAST}"},
    )
    return result, pipe


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_range_run_on_postgres_records_and_stores_what_the_sqlite_instance_does(tmp_path, pg, monkeypatch):
    sqlite = _sqlite_instance(tmp_path / "sqlite_home", monkeypatch)
    want_result, want_pipe = _range_run(sqlite, tmp_path / "sqlite_run")
    instance = _postgres_instance(tmp_path / "pg_home", pg, monkeypatch)
    assert isinstance(instance, NexusInstance)  # the project's class, with the postgres storage block
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    batches = []
    storage_class = type(instance.event_log_storage)
    real = storage_class.store_event_batch
    monkeypatch.setattr(storage_class, "store_event_batch", lambda self, events: (batches.append(len(events)),
                                                                                  real(self, events))[1])
    result, pipe = _range_run(instance, tmp_path / "pg_run")

    assert want_result.success and result.success
    run = instance.get_run_by_id(result.run_id)
    assert run.status == DagsterRunStatus.SUCCESS
    assert run.tags[f"{INSTRUMENT_TAG_PREFIX}{SP500}"] == "write"
    days = (LAST - FIRST).days + 1
    assert max(batches) == days  # a step's materializations reach PostgreSQL as one batch
    got = _recorded(instance)
    assert got == _recorded(sqlite)
    assert all(len(got[name][0]) == days and got[name][1] == days for name in ASSETS)
    materialized = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION,
                                                limit=10_000).records
    every_asset = pipe.defs.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys  # the main job's assets
    assert len(materialized) == len(every_asset) * days
    assert _files(pipe.data_dir) == _files(want_pipe.data_dir)
    assert len(_files(pipe.data_dir)) >= len(ASSETS) * days
    # the connection's password is in no event, run record or snapshot
    assert secret_leaks(pg.password, instance, [result.run_id]) == []
    # a second process sees the same history (nothing lives in this process's memory)
    again = DagsterInstance.from_config(str(tmp_path / "pg_home"))
    assert again.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS
    again.dispose()
    instance.dispose()
    sqlite.dispose()


def _job_and_queue(tmp_path, pg, monkeypatch):
    instance = _postgres_instance(tmp_path / "home", pg, monkeypatch)
    folder = tmp_path / "defs"
    folder.mkdir()
    pipe = Pipeline(folder, sandbox_catalog_text(keys=(SP500, "9002_NASDAQ", WTI)))
    return instance, pipe.defs.resolve_job_def(MAIN_JOB)


# Where a queued run's code lives (required of a queued run; nothing loads it here).
ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("nexus_assets"), "__repository__"),
    job_name=MAIN_JOB,
)


def _run(instance, job, first: str, last: str, status: DagsterRunStatus):
    return instance.create_run_for_job(job, status=status, tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
                                       remote_job_origin=ORIGIN)


def test_runs_are_tagged_with_every_instrument_of_their_range(tmp_path, pg, monkeypatch):
    instance, job = _job_and_queue(tmp_path, pg, monkeypatch)
    daily = _run(instance, job, f"{SP500}|2018-01-05", f"{WTI}|2018-01-05", DagsterRunStatus.QUEUED)
    one = _run(instance, job, f"{WTI}|2018-01-01", f"{WTI}|2018-01-31", DagsterRunStatus.QUEUED)
    mine = {k for k in instance.get_run_by_id(daily.run_id).tags if k.startswith(INSTRUMENT_TAG_PREFIX)}
    assert mine == {f"{INSTRUMENT_TAG_PREFIX}{a}" for a in (SP500, "9002_NASDAQ", WTI)}  # NASDAQ lies between
    assert {k for k in instance.get_run_by_id(one.run_id).tags if k.startswith(INSTRUMENT_TAG_PREFIX)} == {
        f"{INSTRUMENT_TAG_PREFIX}{WTI}"}
    instance.dispose()


def test_the_queue_never_starts_two_runs_that_write_one_instrument(tmp_path, pg, monkeypatch):
    instance, job = _job_and_queue(tmp_path, pg, monkeypatch)
    _run(instance, job, f"{SP500}|2018-01-01", f"{SP500}|2018-01-31", DagsterRunStatus.STARTED)  # a backfill, going
    other = _run(instance, job, f"{WTI}|2018-01-01", f"{WTI}|2018-01-31", DagsterRunStatus.QUEUED)
    same = _run(instance, job, f"{SP500}|2018-02-01", f"{SP500}|2018-02-28", DagsterRunStatus.QUEUED)
    daily = _run(instance, job, f"{SP500}|2018-01-05", f"{WTI}|2018-01-05", DagsterRunStatus.QUEUED)
    # pools are another limit (one qml_api step at a time, which also holds queued runs back): lift it
    instance.event_log_storage.set_concurrency_slots("qml_api", 10)
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

    def dequeued(config) -> set[str]:
        return {run.run_id for run in daemon._get_runs_to_dequeue(instance, config, None)}

    # the daemon's own choice with the instance's limits: only the run on another instrument starts
    assert dequeued(instance.get_concurrency_config()) == {other.run_id}
    # with the configured limits alone (stock Dagster), all three would start next to the backfill
    assert dequeued(DagsterInstance.get_concurrency_config(instance)) == {other.run_id, same.run_id, daily.run_id}
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 4
    assert {"key": f"{INSTRUMENT_TAG_PREFIX}{SP500}", "limit": 1} in queue.tag_concurrency_limits
    instance.dispose()


def test_dagster_daemon_starts_a_queued_run_on_postgres(tmp_path, pg, monkeypatch):
    """The deployment's own commands: `dagster job launch` queues a run, `dagster-daemon run`
    (started here, stopped after at most five minutes) starts it, and it succeeds."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(DEPLOY_YAML, home / "dagster.yaml")
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(sandbox_catalog_text(keys=(SP500,)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_"))}
    env.update(pg.new_database().env(), DAGSTER_HOME=str(home), NEXUS_CATALOG=str(catalog),
               NEXUS_DATA_DIR=str(tmp_path / "data"), PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    tags = json.dumps({RANGE_START_TAG: f"{SP500}|2018-01-02", RANGE_END_TAG: f"{SP500}|2018-01-04"})
    launched = subprocess.run(["dagster", "job", "launch", "-m", "nexus_assets.definitions", "-j", MAIN_JOB,
                               "--tags", tags], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-2000:]
    for name in ("DAGSTER_HOME", *pg.env()):
        monkeypatch.setenv(name, env[name])  # this process's view of the same instance
    instance = DagsterInstance.get()
    [run] = instance.get_runs()
    assert run.status == DagsterRunStatus.QUEUED and run.tags[f"{INSTRUMENT_TAG_PREFIX}{SP500}"] == "write"
    with open(tmp_path / "daemon.log", "w") as log:
        daemon = subprocess.Popen(["dagster-daemon", "run", "-m", "nexus_assets.definitions"], env=env,
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while instance.get_run_by_id(run.run_id).status not in FINISHED and time.monotonic() < deadline:
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
                time.sleep(2)
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS
    assert len(list((tmp_path / "data" / "horizon_slices").rglob("date=*.parquet"))) == 3
    instance.dispose()
