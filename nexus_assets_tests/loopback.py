"""Test support for the fault, crash, concurrency and restatement tests: a tiny synthetic project
served by the real ``QMLServer`` on loopback, a pipeline whose QML resource retries fast, and a
scan for the API key in everything a run leaves behind.

Nothing here fakes HTTP: misbehaviour comes from the server's own scripted faults.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance, Definitions, EnvVar, serialize_value

from nexus_assets.catalog import CatalogAsset
from nexus_assets.defs.resources import QMLResource
from nexus_assets.qml.faults import Fault
from nexus_assets.qml.server import QMLServer
from nexus_assets.qml.sources import embedded_project
from nexus_assets_tests.defs.conftest import Pipeline

API_KEY = "qml-k3y-5ecret-2f9c0d7e-never-log-me"
# Three attempts, back-off of hundredths of a second, a one-second read timeout: retries show in
# the log without slowing tests.
FAST_QML = {"max_attempts": 3, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "read_timeout_seconds": 1.0}

COIN = CatalogAsset(
    key="4301_Fault_Coin", project_id=4301, name="Fault_Coin", display_name="Fault coin", category="Crypto",
    calendar="crypto", start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 1, 20), source="synthetic",
    horizons=(1, 2), models_per_horizon=4, seed=7,
)


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def api_catalog_text(*assets: CatalogAsset) -> str:
    """The catalog a pipeline reads the ``assets`` with over HTTP (``source = "api"``)."""
    blocks = []
    for a in assets:
        end = f"end_date = {a.end_date.isoformat()}\n" if a.end_date else ""
        blocks.append(
            f'[[assets]]\nkey = "{a.key}"\nproject_id = {a.project_id}\nname = "{a.name}"\n'
            f'display_name = "{a.display_name}"\ncategory = "{a.category}"\ncalendar = "{a.calendar}"\n'
            f'start_date = {a.start_date.isoformat()}\n{end}source = "api"\n'
        )
    return "\n".join(blocks)


@contextmanager
def serve(*assets: CatalogAsset, faults: list[Fault] | tuple[Fault, ...] = (), api_key: str = API_KEY,
          **server_options) -> Iterator[QMLServer]:
    """A running ``QMLServer`` for the synthetic ``assets``, polling fast so that stopping is quick
    (``server_options``: ``max_threads``, ``request_timeout``)."""
    server = QMLServer({a.project_id: (embedded_project(a), a.start_date) for a in assets}, api_key, faults=faults,
                       **server_options)
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)


class CollectingLog:
    """A ``log`` for ``QMLClient`` that keeps every message, to assert on retries and leaks."""

    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        self.infos.append(msg)

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    @property
    def messages(self) -> list[str]:
        return self.infos + self.warnings


class ApiPipeline(Pipeline):
    """``Pipeline`` on an ``api`` catalog whose QML resource retries fast (still bound to the
    ``QML_API_BASE_URL`` / ``QML_API_KEY`` environment variables, as in production); ``qml``
    overrides resource fields (e.g. ``prefer_parquet``), the settings' pull limits apply."""

    def __init__(self, tmp_path: Path, catalog_text: str, qml: dict | None = None, **settings) -> None:
        super().__init__(tmp_path, catalog_text, **settings)
        built = self.defs
        qml = QMLResource(
            base_url=EnvVar("QML_API_BASE_URL"), api_key=EnvVar("QML_API_KEY"),
            pull_deadline_seconds=self.settings.qml_pull_deadline_seconds,
            max_response_bytes=self.settings.qml_max_response_bytes,
            **{**FAST_QML, **(qml or {})},
        )
        self.defs = Definitions(
            assets=built.assets,
            asset_checks=built.asset_checks,
            jobs=built.jobs,
            schedules=built.schedules,
            sensors=built.sensors,
            resources={**built.resources, "qml": qml},
            executor=built.executor,
        )

    def log_messages(self, result) -> list[str]:
        """Every user-facing line of the run's log (the client's retries among them)."""
        return [entry.user_message for entry in self.instance.all_logs(result.run_id)]

    def all_files(self) -> dict[str, bytes]:
        """Every file under the data dir, hidden ones included, by relative path."""
        if not self.data_dir.exists():
            return {}
        return {str(p.relative_to(self.data_dir)): p.read_bytes() for p in sorted(self.data_dir.rglob("*")) if p.is_file()}


def key_fragments(secret: str, width: int = 16) -> list[str]:
    """``secret`` and every run of ``width`` of its characters: a message that quotes a window of
    upstream text (a parser's error context) can cut the key short and still give most of it away."""
    return [secret] + [secret[i:i + width] for i in range(len(secret) - width + 1)] if len(secret) > width else [secret]


def leaks_in(text: str | bytes, secret: str) -> bool:
    """Whether ``text`` holds ``secret`` or a fragment of it (see :func:`key_fragments`)."""
    fragments = key_fragments(secret)
    if isinstance(text, bytes):
        return any(f.encode() in text for f in fragments)
    return any(f in text for f in fragments)


def secret_leaks(secret: str, instance: DagsterInstance, run_ids: list[str], data_dir: Path | None = None) -> list[str]:
    """Where ``secret`` (or a 16-character fragment of it) appears: any event of the runs (log
    lines, metadata, check results, errors and their stack traces), the run records and their job
    and plan snapshots, any stored file."""
    found = []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            if leaks_in(serialize_value(entry), secret):
                found.append(f"event {entry.dagster_event_type or 'log'}: {entry.user_message[:80]!r}")
        run = instance.get_run_by_id(run_id)
        if leaks_in(serialize_value(run), secret):
            found.append(f"run record {run_id}")
        if run.job_snapshot_id and leaks_in(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)), secret):
            found.append(f"job snapshot of {run_id}")
        if run.execution_plan_snapshot_id and leaks_in(
            serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)), secret
        ):
            found.append(f"execution plan snapshot of {run_id}")
    if data_dir is not None and data_dir.exists():
        found += [str(p) for p in data_dir.rglob("*") if p.is_file() and leaks_in(p.read_bytes(), secret)]
    return found


# Materialisations in child processes, as `dagster asset materialize` runs them: the production
# definitions (no test resources), a persistent instance (DAGSTER_HOME), one range run each. One
# process imports Dagster and the project once, then forks a fresh process per run, so a test can
# start (and SIGKILL) many runs without paying for the imports each time. One line per message:
# in "<id> <dagster home> <catalog> <data dir> <first key> <last key>"; out "<id> pid <pid>",
# "<id> start <time>", "<id> end <time> <success>", "<id> exit <code>" (once reaped), or "ready".
_RUN_FORKER = """
import os, sys, threading, time
from dagster import DagsterInstance
from nexus_assets.definitions import MAIN_JOB, build_definitions
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.settings import Settings


def say(line):
    os.write(1, (line + "\\n").encode())


def run(run_id, home, catalog, data_dir, first, last):
    os.environ["DAGSTER_HOME"] = home
    job = build_definitions(Settings(catalog_path=catalog, data_dir=data_dir)).resolve_job_def(MAIN_JOB)
    with DagsterInstance.get() as instance:
        say(f"{run_id} start {time.time()}")
        result = job.execute_in_process(instance=instance, tags={RANGE_START_TAG: first, RANGE_END_TAG: last}, raise_on_error=False)
        say(f"{run_id} end {time.time()} {result.success}")


def reap(run_id, pid):
    _, status = os.waitpid(pid, 0)
    say(f"{run_id} exit {os.waitstatus_to_exitcode(status)}")


say("ready")
for line in sys.stdin:
    run_id, *args = line.split()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            run(run_id, *args)
            code = 0
        finally:
            os._exit(code)
    say(f"{run_id} pid {pid}")
    threading.Thread(target=reap, args=(run_id, pid), daemon=True).start()
"""


class ChildRun:
    """One forked run: its pid and what it has said."""

    def __init__(self, farm: RunForker, run_id: str) -> None:
        self.farm, self.id = farm, run_id
        self.pid = int(self.farm.said(run_id, "pid")[0])

    def started(self, timeout: float = 60) -> float:
        return float(self.farm.said(self.id, "start", timeout)[0])

    def finished(self, timeout: float = 120) -> tuple[float, bool]:
        """(end time, success); fails if the process ended without finishing its run."""
        code = int(self.farm.said(self.id, "exit", timeout)[0])
        end = self.farm.lines.get((self.id, "end"))
        assert code == 0 and end is not None, f"run {self.id} exited {code} without finishing (see the children's log)"
        return float(end[0]), end[1] == "True"

    def kill(self) -> None:
        """SIGKILL the run's process, and wait until it is reaped."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.farm.said(self.id, "exit", 30)

    @property
    def running(self) -> bool:
        return (self.id, "exit") not in self.farm.lines


class RunForker:
    """The forking process (see ``_RUN_FORKER``); start runs with :meth:`start`."""

    def __init__(self, server_url: str, stderr, api_key: str = API_KEY) -> None:
        repo = str(Path(__file__).resolve().parents[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_"))}
        env.update(
            QML_API_BASE_URL=server_url,
            QML_API_KEY=api_key,
            PYTHONPATH=os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")])),
            PYTHONWARNINGS="ignore",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUN_FORKER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, text=True,
        )
        self.lines: dict[tuple[str, str], list[str]] = {}
        self._changed = threading.Condition()
        self._count = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.said("", "ready", 60)

    def _read(self) -> None:
        for line in self.process.stdout:
            words = line.split()
            key = ("", "ready") if words == ["ready"] else (words[0], words[1])
            with self._changed:
                self.lines[key] = words[2:]
                self._changed.notify_all()

    def said(self, run_id: str, what: str, timeout: float = 60) -> list[str]:
        with self._changed:
            if not self._changed.wait_for(lambda: (run_id, what) in self.lines or self.process.poll() is not None, timeout):
                raise AssertionError(f"run {run_id or '(forker)'} did not say {what!r} within {timeout}s")
            if (run_id, what) not in self.lines:
                raise AssertionError(f"the forking process exited ({self.process.returncode}) before run {run_id} said {what!r}")
            return self.lines[(run_id, what)]

    def start(self, dagster_home: Path, catalog: Path, data_dir: Path, first: str, last: str) -> ChildRun:
        """Fork a run of the main job over ``first``..``last``; ``dagster_home`` must exist (see :func:`instance_home`)."""
        self._count += 1
        run_id = f"r{self._count}"
        self.process.stdin.write(f"{run_id} {dagster_home} {catalog} {data_dir} {first} {last}\n")
        self.process.stdin.flush()
        return ChildRun(self, run_id)

    def close(self) -> None:
        """Kill every run still going, then the forking process."""
        for (run_id, what), words in list(self.lines.items()):
            if what == "pid" and (run_id, "exit") not in self.lines:
                try:
                    os.kill(int(words[0]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.kill()
        self.process.wait()


@contextmanager
def run_forker(server_url: str, stderr) -> Iterator[RunForker]:
    forker = RunForker(server_url, stderr)
    try:
        yield forker
    finally:
        forker.close()


def instance_home(path: Path, dagster_yaml: Path | None = None) -> Path:
    """A Dagster home at ``path``, its SQLite storage created now (two processes creating a fresh
    instance at once collide on its schema)."""
    path.mkdir(parents=True, exist_ok=True)
    if dagster_yaml is not None:
        shutil.copyfile(dagster_yaml, path / "dagster.yaml")
    DagsterInstance.from_config(str(path)).dispose()
    return path


def visible_files(root: Path) -> dict[str, bytes]:
    """Every file a reader would see (no hidden temporaries), by path relative to ``root``."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def hidden_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.is_file())
