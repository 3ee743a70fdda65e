"""Steps on Celery workers over Redis (``NEXUS_EXECUTOR=celery``), with the shipped PostgreSQL
instance, its run queue and ``dagster-daemon``, as deployed (docs/production.md).

Real servers on loopback (PostgreSQL, Redis), real ``dagster job launch``, daemon and Celery
worker processes. The files must be those of a local in-process run, byte for byte; a worker
killed in the middle of a step must cost a re-run of that step on another worker, not the run,
and leave nothing partial.
"""

import json
import os
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import DagsterEventType

from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets_tests.defs.conftest import REPO, Pipeline, sandbox_catalog_text
from nexus_assets_tests.loopback import secret_leaks
from nexus_assets_tests.services import GATE_ENV, celery_worker, postgres_server, redis_server

# a daemon, two workers and three Dagster runs on a loaded machine: more than the suite's 300 s
pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(900)]

DEPLOY_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
CELERY_YAML = REPO / "deploy" / "celery" / "celery.yaml"
FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
SP500, WTI = "9001_SP500", "9003_WTI_Crude"
BACKFILL = (f"{SP500}|2018-01-02", f"{SP500}|2018-01-04")
DAILY = (f"{SP500}|2018-01-05", f"{WTI}|2018-01-05")  # the schedule's shape: one day, every instrument
IN_WORKER = "in celery worker"
GATED_APP = "nexus_assets_tests.gated_celery_worker"


@pytest.fixture(scope="module")
def servers():
    with postgres_server() as pg, redis_server() as redis:
        yield pg, redis


class Deployment:
    """One machine's worth of the production shape in ``folder``: the PostgreSQL instance, the
    Celery config, the catalog and data root, and the environment every process of it shares."""

    def __init__(self, folder: Path, pg, redis, celery_yaml: str):
        self.folder = folder
        home = folder / "home"
        home.mkdir(parents=True)
        shutil.copyfile(DEPLOY_YAML, home / "dagster.yaml")
        (folder / "celery.yaml").write_text(celery_yaml)
        (folder / "catalog.toml").write_text(sandbox_catalog_text(keys=(SP500, WTI)))
        self.data_dir = folder / "data"
        self.pg, self.redis = pg.new_database(), redis
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_"))}
        env.update(**self.pg.env(), **redis.env(), DAGSTER_HOME=str(home), NEXUS_EXECUTOR="celery",
                   NEXUS_CELERY_CONFIG=str(folder / "celery.yaml"), NEXUS_CATALOG=str(folder / "catalog.toml"),
                   NEXUS_DATA_DIR=str(self.data_dir), PYTHONWARNINGS="ignore",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.env = env

    def instance(self, monkeypatch) -> DagsterInstance:
        for name in ("DAGSTER_HOME", *self.pg.env()):
            monkeypatch.setenv(name, self.env[name])  # this process's view of the same instance
        return DagsterInstance.get()

    def launch(self, first: str, last: str) -> None:
        tags = json.dumps({RANGE_START_TAG: first, RANGE_END_TAG: last})
        launched = subprocess.run(["dagster", "job", "launch", "-m", "nexus_assets.definitions", "-j", MAIN_JOB,
                                   "--tags", tags], env=self.env, cwd=self.folder, capture_output=True, text=True,
                                  timeout=300)
        assert launched.returncode == 0, launched.stderr[-2000:]

    def daemon(self, stack: ExitStack) -> subprocess.Popen:
        log = stack.enter_context(open(self.folder / "daemon.log", "w"))
        process = subprocess.Popen(["dagster-daemon", "run", "-m", "nexus_assets.definitions"], env=self.env,
                                   cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(_stop, process)
        return process

    def wait(self, instance: DagsterInstance, run_ids: list[str], daemon: subprocess.Popen, *, on_poll=None) -> None:
        deadline = time.monotonic() + 600
        while not all(instance.get_run_by_id(r).status in FINISHED for r in run_ids):
            assert daemon.poll() is None, (self.folder / "daemon.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "runs not finished after 10 minutes"
            if on_poll is not None:
                on_poll()
            time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _local_reference(folder: Path, *ranges: tuple[str, str]) -> dict[str, bytes]:
    """The same runs, in the same order, in this process with the in-process executor."""
    folder.mkdir()
    pipe = Pipeline(folder, sandbox_catalog_text(keys=(SP500, WTI)))
    for first, last in ranges:
        assert pipe.run(first, last).success
    return _files(pipe.data_dir)


def _steps(instance: DagsterInstance, run_id: str, event_type: DagsterEventType) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=event_type, limit=10_000).records
    return [r.event_log_entry.step_key for r in records]


def _worker_steps(instance: DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step, worker) for every step a Celery worker began, in order."""
    out = []
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=10_000).records:
        entry = record.event_log_entry
        if IN_WORKER in (entry.dagster_event.message or ""):
            worker = entry.dagster_event.engine_event_data.metadata["Celery worker"].value
            out.append((entry.step_key, worker))
    return out


def test_a_backfill_and_the_daily_run_through_the_queue_and_celery_equal_a_local_run(tmp_path, servers,
                                                                                       monkeypatch):
    pg, redis = servers
    deploy = Deployment(tmp_path / "deploy", pg, redis, CELERY_YAML.read_text())
    # both queued before anything runs: the queue starts the backfill, and the daily run (which
    # writes the same instrument) only when the backfill is done, as in the local reference below
    deploy.launch(*BACKFILL)
    deploy.launch(*DAILY)
    instance = deploy.instance(monkeypatch)
    runs = sorted(instance.get_runs(), key=lambda r: r.tags[RANGE_START_TAG] == DAILY[0])
    assert [r.status for r in runs] == [DagsterRunStatus.QUEUED] * 2
    with ExitStack() as stack:
        stack.enter_context(celery_worker("w1", deploy.env, str(deploy.folder)))
        stack.enter_context(celery_worker("w2", deploy.env, str(deploy.folder)))
        deploy.wait(instance, [r.run_id for r in runs], deploy.daemon(stack))
    backfill, daily = (instance.get_run_by_id(r.run_id) for r in runs)
    assert backfill.status == daily.status == DagsterRunStatus.SUCCESS
    first, second = (instance.get_run_record_by_id(r.run_id) for r in runs)
    assert second.start_time >= first.end_time  # the instrument limit held the daily run back
    job_steps = set(_steps(instance, backfill.run_id, DagsterEventType.STEP_SUCCESS))
    for run in (backfill, daily):
        ran = _worker_steps(instance, run.run_id)
        # every step of the run on a Celery worker, once
        assert sorted(step for step, _ in ran) == sorted(job_steps)
        assert {worker.split("@")[0] for _, worker in ran} <= {"w1", "w2"}

    got = _files(deploy.data_dir)
    assert got == _local_reference(tmp_path / "local", BACKFILL, DAILY)
    assert any("date=2018-01-02" in name for name in got) and any(f"asset={WTI}" in name for name in got)
    ids = [backfill.run_id, daily.run_id]
    # neither the database's nor the broker's password is in any event, run record or file
    assert secret_leaks(deploy.pg.password, instance, ids, deploy.data_dir) == []
    assert secret_leaks(redis.password, instance, ids, deploy.data_dir) == []
    instance.dispose()


# The second test's Celery config: a dead worker's step goes back to the queue after 15 s (the
# shipped 7200 s suits real steps, not a test)
SHORT_VISIBILITY = "visibility_timeout: 15"


def test_a_worker_killed_mid_step_costs_that_step_not_the_run(tmp_path, servers, monkeypatch):
    pg, redis = servers
    shipped = CELERY_YAML.read_text()
    assert "visibility_timeout: 7200" in shipped
    deploy = Deployment(tmp_path / "deploy", pg, redis, shipped.replace("visibility_timeout: 7200", SHORT_VISIBILITY))
    # the first worker to store the signals (a step well into the run, so the retry resumes
    # mid-run) waits there, its files computed and none published, until it is killed
    marker = tmp_path / "gate"
    env = {**deploy.env, GATE_ENV: f"signals={marker}"}
    deploy.launch(*BACKFILL)
    instance = deploy.instance(monkeypatch)
    [run] = instance.get_runs()
    killed: list[tuple[str, str]] = []
    with ExitStack() as stack:
        workers = {w.name: w for w in (stack.enter_context(celery_worker(n, env, str(deploy.folder), app=GATED_APP))
                                       for n in ("w1", "w2"))}
        daemon = deploy.daemon(stack)

        def kill_the_worker_at_the_gate():
            if killed or not marker.exists() or not (worker := marker.read_text()):
                return
            assert "signals" not in _steps(instance, run.run_id, DagsterEventType.STEP_SUCCESS)
            workers[worker.split("@")[0]].kill()
            killed.append(("signals", worker))

        deploy.wait(instance, [run.run_id], daemon, on_poll=kill_the_worker_at_the_gate)
    assert killed, "no step started on a worker"
    [(step, dead)] = killed
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS
    ran = _worker_steps(instance, run.run_id)
    again = [worker for s, worker in ran if s == step]
    # the step began on the killed worker, then again on the other one, which completed it
    assert again[0] == dead and len(again) == 2 and again[1] != dead
    successes = _steps(instance, run.run_id, DagsterEventType.STEP_SUCCESS)
    assert sorted(successes) == sorted(set(successes))  # every step succeeded once
    got = _files(deploy.data_dir)
    # nothing partial: no staged or temporary file left, and every file is the local run's
    assert got == _local_reference(tmp_path / "local", BACKFILL)
    instance.dispose()
