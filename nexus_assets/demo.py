"""The runs of ``nexus-assets demo``: one Dagster run per catalog asset, run side by side over the cores.

Each instrument's run is independent of the others (its own partitions, its own inputs), so the
demo hands the instruments to ``jobs`` worker processes (default: one per usable core, at most
one per instrument) that take the next instrument when they finish one. Workers are forked
from the demo's process after the definitions are loaded, so they start at once and share the
imports; each opens the project's instance itself (SQLite handles several writing processes)
and sends its progress events and its result back on a queue. ``jobs=1`` runs everything in
the demo's own process, one instrument after another.

Outputs do not depend on ``jobs`` or on the order the instruments finish: every stored file of
an instrument is a function of that instrument's partitions, and the only file that spans
instruments, the dashboard's site index, is rebuilt once more after the last run (a run that
finished while another was still writing pages would otherwise leave an index without them).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import queue as queue_module
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nexus_assets.core.parallel import usable_cores

__all__ = ["RunOutcome", "default_jobs", "run_instruments", "stored_lines", "ui_command"]


@dataclass(frozen=True)
class RunOutcome:
    """What one instrument's run came to."""

    key: str
    run_id: str | None
    success: bool
    seconds: float
    errors: tuple[str, ...] = ()


def default_jobs(instruments: int) -> int:
    """One worker per usable core, at most one per instrument (``NEXUS_DEMO_JOBS`` overrides)."""
    configured = os.environ.get("NEXUS_DEMO_JOBS", "").strip()
    jobs = int(configured) if configured else usable_cores()
    return max(1, min(jobs, instruments))


def _job(progress):
    from nexus_assets.definitions import MAIN_JOB, defs
    from nexus_assets.progress import progress_logger

    job = defs.resolve_job_def(MAIN_JOB)
    return job.with_logger_defs({**job.loggers, "progress": progress_logger(progress)})


def _run_one(job, instance, key: str, start: dt.date, end: dt.date, log_level: str) -> RunOutcome:
    from nexus_assets.defs.partitions import partition_key
    from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG

    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: partition_key(key, start), RANGE_END_TAG: partition_key(key, end)},
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}, "progress": {}}},
    )
    errors = tuple(event.step_failure_data.error.message for event in result.all_events
                   if event.is_step_failure and event.step_failure_data.error)
    return RunOutcome(key, result.run_id, result.success, time.monotonic() - started, errors)


def _shape(job, days: int) -> tuple[int, int]:
    """(steps, asset partitions) of one instrument's run over ``days``."""
    return len(job.nodes), len(job.asset_layer.executable_asset_keys) * days


def run_instruments(keys: Sequence[str], start: dt.date, end: dt.date, *, progress, open_instance: Callable[[], Any],
                    log_level: str, jobs: int, report: Callable[[RunOutcome], None]) -> list[RunOutcome]:
    """Run the main job for each of ``keys`` over ``start .. end``; ``report`` is called as each run ends.

    Outcomes come back in the order of ``keys``, whatever order the runs ended in.
    """
    days = (end - start).days + 1
    if jobs <= 1 or len(keys) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        job = _job(progress)
        steps, partitions = _shape(job, days)
        outcomes = []
        with open_instance() as instance:
            for key in keys:
                progress.start(key, steps=steps, partitions=partitions)
                try:
                    outcome = _run_one(job, instance, key, start, end, log_level)
                finally:
                    progress.finish(key)
                report(outcome)
                outcomes.append(outcome)
        return outcomes
    return _run_forked(keys, start, end, progress=progress, open_instance=open_instance, log_level=log_level,
                       jobs=jobs, report=report)


def _worker(todo, events, open_instance, start: dt.date, end: dt.date, log_level: str, jobs: int) -> None:
    """A forked worker: takes instruments from ``todo`` until it is empty, reports on ``events``."""
    from nexus_assets.progress import EventQueue

    sink = EventQueue(events, "")
    # The workers share the cores: a worker's own threads (Parquet in the IO manager, the
    # ensembles' horizons) would only contend with the other workers for them (measured: 4% more
    # CPU over a 4-instrument run). NEXUS_THREADS, when set, still decides.
    os.environ.setdefault("NEXUS_THREADS", str(max(1, usable_cores() // jobs)))
    try:
        job = _job(sink)
        steps, partitions = _shape(job, (end - start).days + 1)
        with open_instance() as instance:
            while (key := todo.get()) is not None:  # one None per worker ends the list
                sink.label = key
                events.put(("start", (key,), {"steps": steps, "partitions": partitions}))
                started = time.monotonic()
                try:
                    outcome = _run_one(job, instance, key, start, end, log_level)
                except BaseException:  # outside Dagster's own error handling: still an outcome
                    outcome = RunOutcome(key, None, False, time.monotonic() - started, (traceback.format_exc(),))
                events.put(("outcome", (outcome,), {}))
    finally:
        events.put(("exit", (), {}))
        events.close()
        events.join_thread()


def _run_forked(keys, start, end, *, progress, open_instance, log_level, jobs, report) -> list[RunOutcome]:
    context = multiprocessing.get_context("fork")
    todo, events = context.Queue(), context.Queue()
    # Blocking gets and one end marker per worker: ``get_nowait`` raises Empty while another worker
    # holds the queue's read lock, and the worker that saw it would quit (the runs then went one
    # after another on a single core).
    for key in [*keys, *([None] * jobs)]:
        todo.put(key)
    # The definitions are loaded before the fork, so every worker has them already.
    _job(progress)
    with open_instance():  # the instance's storage exists before two processes open it
        pass
    workers = [context.Process(target=_worker, args=(todo, events, open_instance, start, end, log_level, jobs),
                               name=f"nexus-demo-{i + 1}", daemon=True) for i in range(jobs)]
    for worker in workers:
        worker.start()
    outcomes: dict[str, RunOutcome] = {}
    running = len(workers)
    try:
        while running:
            try:
                kind, args, kwargs = events.get(timeout=1.0)
            except queue_module.Empty:
                if not any(worker.is_alive() for worker in workers):
                    break  # a worker died without saying so (killed): what it held is failed below
                continue
            if kind == "exit":
                running -= 1
            elif kind == "start":
                progress.start(*args, **kwargs)
            elif kind == "outcome":
                outcome = args[0]
                progress.finish(outcome.key)
                outcomes[outcome.key] = outcome
                report(outcome)
            else:
                getattr(progress, kind)(*args, **kwargs)
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    for key in keys:
        if key not in outcomes:
            progress.finish(key)
            outcomes[key] = RunOutcome(key, None, False, 0.0, ("the worker running it exited without a result",))
            report(outcomes[key])
    return [outcomes[key] for key in keys]


def stored_lines(asset_paths: Sequence[Sequence[str]], data) -> list[str]:
    """What is stored under ``data`` (a folder or an object-store root, as a ``UPath``): one line per
    asset (``asset_paths``: the job's asset keys, in pipeline order) with its partition files, then
    the models of the ML registry (files the ML steps write beside the assets)."""
    from nexus_assets.ml_registry import MANIFEST_FILE, REGISTRY_FOLDER

    lines = []
    for path in asset_paths:
        root = data.joinpath(*path)
        files = list(root.glob("**/asset=*/date=*")) if root.is_dir() else []
        lines.append(f"stored    {'/'.join(path)}: {len(files)} files under {root}")
    registry = data / REGISTRY_FOLDER
    models = list(registry.glob(f"*/*/{MANIFEST_FILE}")) if registry.is_dir() else []
    lines.append(f"stored    {REGISTRY_FOLDER}: {len(models)} models under {registry}")
    return lines


def ui_command(folder: str, home: str, *, dagster_home_set: bool, config_in_folder: bool, project_instance: bool) -> str:
    """The shell command that opens the demo's instance (``home``, configured as the demo found it) in
    ``dagster dev``, whatever folder it is typed in.

    ``folder``: where the demo ran (its ``.env`` and relative settings apply there, so the command
    starts there). Without ``DAGSTER_HOME``, ``dagster dev`` reads the folder's ``dagster.yaml`` in
    place and, when its instance class is the project's (``project_instance``), keeps everything in
    the folder's ``.dagster_home``: the demo's instance. Otherwise ``dagster dev`` is pointed at
    ``home`` with ``DAGSTER_HOME``, and reads the configuration there (``home/dagster.yaml``, as the
    demo did when the folder had none; a folder's ``dagster.yaml`` of another class is copied there
    first)."""
    code = "dagster dev -m nexus_assets.definitions"
    here, there = shlex.quote(folder), shlex.quote(home)
    if not dagster_home_set and config_in_folder:
        if project_instance:
            return f"cd {here} && {code}"
        return f"cd {here} && cp dagster.yaml {there}/ && DAGSTER_HOME={there} {code}"
    return f"cd {here} && DAGSTER_HOME={there} {code}"
