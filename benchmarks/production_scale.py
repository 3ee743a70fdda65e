"""QDT's 16 projects in the production shape: PostgreSQL instance, run queue, dagster-daemon,
Celery workers over Redis. Measured side by side in one invocation:

  1. a backfill of every project over `--days` days (one run per project, all queued at once, as
     the UI's backfill of a year does), through every step of the main job, the dashboard
     included, with 1 and then with 2 Celery workers: wall time, CPU time, peak RSS (the whole
     deployment, the largest single process, and per step);
  2. then the daily run of all 16 projects (one run, the schedule's shape) on top of it;
  3. events per second that the PostgreSQL and the SQLite instance store, side by side (the same
     materialization events, one at a time and in batches of 1,000, straight into each
     instance's event log storage);
  4. bytes stored per project over the backfill, and extrapolated to a project-year (labelled).

    python benchmarks/production_scale.py --scale 0.02 --days 20     # what fits a shared 2-core machine
    python benchmarks/production_scale.py --scale 1 --days 365       # the real thing (hours)
    python benchmarks/production_scale.py --scale 1 --days 365 --workers 2 \
        --backfill-executor in_process --rows-per-run 3000000         # full scale in ~65 min, 7.5 GB

`--backfill-executor in_process` runs the backfill's steps in each run's own process (no Celery
until the daily run, which always goes through the workers); `--rows-per-run` cuts each
project's range into runs of at most that many model rows, queued in date order (the queue runs one
run of a project at a time, in order): how docs/production.md tells operators to backfill the
largest projects.

`--scale` multiplies every project's model count (benchmarks/catalogs/qdt_scale.toml: Crude_Oil
10,000 models x 10 horizons at scale 1); horizons, calendars and the number of projects stay. The
servers are real and on loopback (nexus_assets_tests/services.py: Debian's PostgreSQL and
redis-server, installed by `.ci/run`), each side on a fresh database, Redis database, data folder
and DAGSTER_HOME. The backfills of the two sides must store the same bytes; the script says if not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from nexus_assets_tests.services import celery_worker, postgres_server, redis_server  # noqa: E402

CATALOG = REPO / "benchmarks" / "catalogs" / "qdt_scale.toml"
PG_YAML = REPO / "deploy" / "postgres" / "dagster.yaml"
CELERY_YAML = REPO / "deploy" / "celery" / "celery.yaml"
MAIN_JOB = "nexus_main"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
FIRST_DAY = dt.date(2025, 1, 1)


def scaled_catalog(scale: float, path: Path) -> list[str]:
    """The 16-project catalog with every model count multiplied by ``scale``; its keys, in order."""
    text = CATALOG.read_text()
    text = re.sub(r"models_per_horizon = (\d+)",
                  lambda m: f"models_per_horizon = {max(1, round(int(m.group(1)) * scale))}", text)
    path.write_text(text)
    return [a["key"] for a in tomllib.loads(text)["assets"]]


class Sampler:
    """Every 0.5 s: RSS of each watched process tree and of every single process in it, and the
    CPU time (user + sys) last seen of every process (exited ones keep their last reading)."""

    def __init__(self):
        self.roots: dict[str, psutil.Process] = {}
        self.samples: list[tuple[float, str, int]] = []  # (time, root name, tree RSS)
        self.peak_total = self.peak_process = 0
        self.peak_process_name = ""
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.roots[name] = psutil.Process(pid)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            now, total = time.time(), 0
            for name, root in list(self.roots.items()):
                tree = 0
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for proc in procs:
                    try:
                        rss = proc.memory_info().rss
                        cpu = proc.cpu_times()
                        self._cpu[proc.pid] = cpu.user + cpu.system
                    except psutil.NoSuchProcess:
                        continue
                    tree += rss
                    if rss > self.peak_process:
                        self.peak_process = rss
                        try:
                            self.peak_process_name = " ".join(proc.cmdline()[:6])[:90]
                        except psutil.NoSuchProcess:
                            pass
                self.samples.append((now, name, tree))
                total += tree
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(0.5)


def _launch(env: dict, cwd: Path, first: str, last: str) -> None:
    tags = json.dumps({RANGE_START: first, RANGE_END: last})
    done = subprocess.run(["dagster", "job", "launch", "-m", "nexus_assets.definitions", "-j", MAIN_JOB,
                           "--tags", tags], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"dagster job launch failed: {done.stderr[-2000:]}")


def _wait(instance, run_ids: list[str], daemon: subprocess.Popen, log: Path, limit: float) -> None:
    from dagster import DagsterRunStatus

    finished = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    deadline = time.monotonic() + limit
    while True:
        statuses = [instance.get_run_by_id(r).status for r in run_ids]
        if all(s in finished for s in statuses):
            bad = [r for r, s in zip(run_ids, statuses, strict=True) if s != DagsterRunStatus.SUCCESS]
            if bad:
                raise RuntimeError(f"runs did not succeed: {bad}; see {log}")
            return
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not finished after {limit:.0f} s")
        time.sleep(2)


def _step_peaks(instance, run_ids: list[str], sampler: Sampler) -> dict[str, float]:
    """Peak RSS (MB) of the worker running each step, while it ran it: the step's start is the
    worker's "Executing steps ... in celery worker" event, its end the step's success."""
    from dagster._core.events import DagsterEventType

    peaks: dict[str, float] = {}
    for run_id in run_ids:
        starts, ends = {}, {}
        for record in instance.get_records_for_run(run_id, of_type={DagsterEventType.ENGINE_EVENT,
                                                                     DagsterEventType.STEP_SUCCESS},
                                                    limit=100_000).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event.event_type == DagsterEventType.STEP_SUCCESS:
                ends[entry.step_key] = entry.timestamp
            elif "in celery worker" in (event.message or ""):
                worker = event.engine_event_data.metadata["Celery worker"].value.split("@")[0]
                starts[entry.step_key] = (entry.timestamp, worker)
        for step, (start, worker) in starts.items():
            end = ends.get(step, start)
            window = [rss for t, name, rss in sampler.samples if name == worker and start <= t <= end + 0.5]
            if window:
                peaks[step] = max(peaks.get(step, 0.0), max(window) / 2**20)
    return peaks


def _digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(root)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _bytes_per_project(root: Path, keys: list[str]) -> dict[str, int]:
    sizes = dict.fromkeys(keys, 0)
    for path in root.rglob("*"):
        if path.is_file():
            for key in keys:
                if key in path.parts or any(part == f"asset={key}" for part in path.parts) or key in path.name:
                    sizes[key] += path.stat().st_size
                    break
    return sizes


def run_side(workers: int, args, keys: list[str], catalog: Path, pg, redis, folder: Path) -> dict:
    from dagster import DagsterInstance

    folder.mkdir()
    home = folder / "home"
    home.mkdir()
    shutil.copyfile(PG_YAML, home / "dagster.yaml")
    db = pg.new_database()
    redis_db = 2 * workers  # a fresh pair of Redis databases per side
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_"))}
    env.update(**db.env(), DAGSTER_HOME=str(home), NEXUS_EXECUTOR="celery", NEXUS_CATALOG=str(catalog),
               NEXUS_CELERY_CONFIG=str(CELERY_YAML), NEXUS_DATA_DIR=str(folder / "data"),
               NEXUS_CELERY_BROKER_URL=redis.url(redis_db), NEXUS_CELERY_BACKEND_URL=redis.url(redis_db + 1),
               PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    last = FIRST_DAY + dt.timedelta(days=args.days - 1)
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", *db.env())})
    instance = DagsterInstance.get()  # creates the tables once, before launches in parallel
    # the backfill's steps on Celery, or in each run's own process (--backfill-executor in_process:
    # no workers until the daily run, which always goes through Celery)
    in_process = args.backfill_executor == "in_process"
    backfill_env = {**env, "NEXUS_EXECUTOR": "in_process"} if in_process else env
    rounds = backfill_rounds(catalog, keys, args.days, args.rows_per_run)
    print(f"[{workers} worker(s)] queueing {sum(map(len, rounds))} backfill runs of {args.days} days "
          f"({len(rounds)} round(s) in date order; steps {args.backfill_executor}) ...", flush=True)
    with ThreadPoolExecutor(4) as pool:  # queueing is not measured: nothing runs before the daemon starts
        for chunk in rounds:  # a project's runs are queued in date order, and the queue keeps it
            list(pool.map(lambda c: _launch(backfill_env, folder, f"{c[0]}|{c[1]}", f"{c[0]}|{c[2]}"), chunk))
    backfill = [r.run_id for r in instance.get_runs()]
    sampler = Sampler()
    result: dict = {"workers": workers, "backfill_executor": args.backfill_executor,
                    "backfill_runs": len(backfill), "backfill_rounds": len(rounds)}
    with ExitStack() as stack:
        load_before = os.getloadavg()[0]
        started = time.time()

        def start_workers():
            for i in range(workers):
                worker = stack.enter_context(celery_worker(f"w{i + 1}", env, str(folder)))
                sampler.watch(worker.name, worker.process.pid)

        if not in_process:
            start_workers()
        daemon = _daemon(stack, backfill_env, folder, "daemon.log")
        sampler.watch("daemon", daemon.pid)
        sampler.start()
        stack.callback(sampler.stop)
        _wait(instance, backfill, daemon, folder / "daemon.log", args.limit)
        result["backfill_wall_s"] = time.time() - started
        records = [instance.get_run_record_by_id(r) for r in backfill]
        result["backfill_runs_span_s"] = max(r.end_time for r in records) - min(r.start_time for r in records)
        result["backfill_cpu_s"] = sampler.cpu_seconds
        result["backfill_peak_total_mb"] = sampler.peak_total / 2**20
        result["backfill_peak_process_mb"] = sampler.peak_process / 2**20
        result["backfill_peak_process"] = sampler.peak_process_name
        result["load_during_backfill"] = (load_before, os.getloadavg()[0])
        result["step_peak_mb"] = _step_peaks(instance, backfill, sampler)
        result["data_digest"] = _digest(folder / "data")
        result["bytes_per_project"] = _bytes_per_project(folder / "data", keys)
        result["bytes_total"] = sum(p.stat().st_size for p in (folder / "data").rglob("*") if p.is_file())
        with db_connection(db) as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            result["instance_db_bytes"] = cursor.fetchone()[0]
        # the daily run of every project, the schedule's shape, on top of the backfill
        day = last + dt.timedelta(days=1)
        daemon_log = "daemon.log"
        if in_process:  # the daily run through Celery: a daemon with the Celery executor, and workers
            daemon.terminate()
            daemon.wait(timeout=120)
            start_workers()
            daemon_log = "daemon-daily.log"
            daemon = _daemon(stack, env, folder, daemon_log)
            sampler.watch("daemon", daemon.pid)
        cpu_before = sampler.cpu_seconds
        _launch(env, folder, f"{keys[0]}|{day}", f"{keys[-1]}|{day}")
        [daily] = [r.run_id for r in instance.get_runs() if r.run_id not in backfill]
        _wait(instance, [daily], daemon, folder / daemon_log, args.limit)
        record = instance.get_run_record_by_id(daily)
        result["daily_run_s"] = record.end_time - record.start_time
        result["daily_queue_to_end_s"] = record.end_time - record.create_timestamp.timestamp()
        result["daily_cpu_s"] = sampler.cpu_seconds - cpu_before
        result["load_after"] = os.getloadavg()[0]
    instance.dispose()
    return result


def _daemon(stack: ExitStack, env: dict, folder: Path, log_name: str) -> subprocess.Popen:
    log = stack.enter_context(open(folder / log_name, "w"))
    daemon = subprocess.Popen(["dagster-daemon", "run", "-m", "nexus_assets.definitions"], env=env, cwd=folder,
                              stdout=log, stderr=subprocess.STDOUT)
    stack.callback(lambda: (daemon.terminate(), daemon.wait(timeout=120)))
    return daemon


def backfill_rounds(catalog: Path, keys: list[str], days: int, rows_per_run: int) -> list[list[tuple[str, dt.date, dt.date]]]:
    """The backfill's runs as ``(project, first day, last day)``, in rounds: round ``i`` holds
    every project's ``i``-th run. With ``rows_per_run`` (0: one run per project) a project's
    range is cut into runs of at most that many model rows a day times days (at least a day),
    the way docs/production.md tells operators to backfill the largest projects."""
    assets = {a["key"]: a for a in tomllib.loads(catalog.read_text())["assets"]}
    runs: dict[str, list[tuple[str, dt.date, dt.date]]] = {}
    for key in keys:
        per_day = assets[key]["models_per_horizon"] * len(assets[key]["horizons"])
        length = days if rows_per_run <= 0 else max(1, min(days, rows_per_run // per_day))
        runs[key] = [(key, FIRST_DAY + dt.timedelta(days=start),
                      FIRST_DAY + dt.timedelta(days=min(days, start + length) - 1))
                     for start in range(0, days, length)]
    depth = max(map(len, runs.values()))
    return [[chunks[i] for chunks in runs.values() if i < len(chunks)] for i in range(depth)]


class db_connection:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        import psycopg2

        self.connection = psycopg2.connect(host=self.db.host, port=self.db.port, user=self.db.user,
                                           password=self.db.password, dbname=self.db.db)
        return self.connection.cursor()

    def __exit__(self, *exc):
        self.connection.close()


def events_per_second(pg, folder: Path, count: int) -> dict[str, dict[str, float]]:
    """The same materialization events into the PostgreSQL and the SQLite instance's event log
    storage (each as shipped: deploy/postgres/dagster.yaml, the repository's dagster.yaml), one at
    a time (a tenth of ``count``) and in batches of 1,000, side by side (alternating, median of 3)."""
    from dagster import AssetKey, AssetMaterialization, DagsterInstance
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    def events(run_id: str) -> list[EventLogEntry]:
        out = []
        for i in range(count):
            materialization = AssetMaterialization(AssetKey("horizon_slices"),
                                                   partition=f"1866_Crude_Oil|{FIRST_DAY + dt.timedelta(days=i)}")
            event = DagsterEvent(DagsterEventType.ASSET_MATERIALIZATION.value, job_name=MAIN_JOB,
                                 event_specific_data=StepMaterializationData(materialization),
                                 step_key="horizon_slices")
            out.append(EventLogEntry(user_message="", level=20, job_name=MAIN_JOB, run_id=run_id,
                                     error_info=None, timestamp=time.time(), step_key="horizon_slices",
                                     dagster_event=event))
        return out

    homes = {}
    for name, yaml in (("postgres", PG_YAML), ("sqlite", REPO / "dagster.yaml")):
        home = folder / f"events-{name}"
        home.mkdir()
        shutil.copyfile(yaml, home / "dagster.yaml")
        homes[name] = home
    os.environ.update(pg.new_database().env())
    instances = {name: DagsterInstance.from_config(str(home)) for name, home in homes.items()}
    rates: dict[str, dict[str, list[float]]] = {n: {"single": [], "batch": []} for n in instances}
    for repeat in range(3):
        for name, instance in instances.items():
            storage = instance.event_log_storage
            singles = events(f"single-{name}-{repeat}")[: max(1, count // 10)]  # a tenth: 10x slower
            started = time.perf_counter()
            for entry in singles:
                storage.store_event(entry)
            rates[name]["single"].append(len(singles) / (time.perf_counter() - started))
            batch = events(f"batch-{name}-{repeat}")
            started = time.perf_counter()
            for i in range(0, count, 1000):
                storage.store_event_batch(batch[i:i + 1000])
            rates[name]["batch"].append(count / (time.perf_counter() - started))
    for instance in instances.values():
        instance.dispose()
    return {name: {kind: statistics.median(values) for kind, values in kinds.items()}
            for name, kinds in rates.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.02, help="multiplies every project's model count (1 = QDT)")
    parser.add_argument("--days", type=int, default=20, help="days of the backfill (365 = a year)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Celery worker counts to compare")
    parser.add_argument("--events", type=int, default=5000, help="events per instance in the events/s test")
    parser.add_argument("--limit", type=float, default=4 * 3600, help="seconds to wait for a side's runs")
    parser.add_argument("--skip-runs", action="store_true", help="only the events/s comparison")
    parser.add_argument("--backfill-executor", choices=["celery", "in_process"], default="celery",
                        help="where the backfill's steps run (the daily run always uses the Celery workers)")
    parser.add_argument("--rows-per-run", type=int, default=0,
                        help="cut each project's backfill into runs of at most this many model rows "
                             "(daily rows x days; 0: one run per project)")
    args = parser.parse_args()
    if not 1 <= args.days <= 365:
        parser.error("--days must be within 1..365 (the catalog's year)")
    print(f"scale {args.scale}, {args.days} days, workers {args.workers}; load average {os.getloadavg()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="nexus-prod-scale-") as tmp, postgres_server() as pg, \
            redis_server() as redis:
        tmp = Path(tmp)
        catalog = tmp / "catalog.toml"
        keys = scaled_catalog(args.scale, catalog)
        load = os.getloadavg()
        rates = events_per_second(pg, tmp, args.events)
        print(f"events/s (load average before {load[0]:.2f}):", json.dumps(rates), flush=True)
        if not args.skip_runs:
            for workers in args.workers:
                result = run_side(workers, args, keys, catalog, pg, redis, tmp / f"side-{workers}")
                print(json.dumps(result, default=str), flush=True)
                results.append(result)
    report(args, rates, results, keys)
    return 0


def report(args, rates, results, keys) -> None:
    print("\n== events stored per second, side by side (median of 3) ==")
    for name, kinds in rates.items():
        print(f"  {name:9s} one at a time {kinds['single']:9.0f}/s   batches of 1,000 {kinds['batch']:9.0f}/s")
    for r in results:
        print(f"\n== {r['workers']} Celery worker(s): {len(keys)} projects x {args.days} days, scale {args.scale}; "
              f"backfill: {r['backfill_runs']} runs in {r['backfill_rounds']} round(s), steps {r['backfill_executor']} ==")
        print(f"  backfill: wall {r['backfill_wall_s']:.0f} s (runs' span {r['backfill_runs_span_s']:.0f} s), "
              f"CPU {r['backfill_cpu_s']:.0f} s, peak RSS {r['backfill_peak_total_mb']:.0f} MB "
              f"(largest process {r['backfill_peak_process_mb']:.0f} MB: {r['backfill_peak_process']}), "
              f"load average {r['load_during_backfill'][0]:.1f} -> {r['load_during_backfill'][1]:.1f}")
        print(f"  daily run (16 projects): {r['daily_run_s']:.0f} s running, {r['daily_queue_to_end_s']:.0f} s "
              f"from queueing, CPU {r['daily_cpu_s']:.0f} s, load average {r['load_after']:.1f}")
        print("  peak RSS of the worker per step (MB): "
              + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["step_peak_mb"].items(), key=lambda kv: -kv[1])))
        per_year = 365 / args.days
        sizes = r["bytes_per_project"]
        print(f"  stored: {r['bytes_total'] / 2**20:.1f} MB of files, instance database {r['instance_db_bytes'] / 2**20:.1f} MB")
        print(f"  bytes per project over {args.days} days (x{per_year:.1f} = a project-year, EXTRAPOLATED linearly):")
        for key in keys:
            print(f"    {key:22s} {sizes[key] / 2**20:9.2f} MB  -> {sizes[key] * per_year / 2**20:9.1f} MB/year")
    if len({r["data_digest"] for r in results}) > 1:
        print("\n!! the sides stored different bytes")
    elif len(results) > 1:
        print("\nevery side stored the same bytes (sha256 of every file and its path)")


if __name__ == "__main__":
    sys.exit(main())
