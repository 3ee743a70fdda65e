"""What ``nexus-assets demo`` shows while it runs: per instrument and step, partitions done, elapsed, a rate.

Read from Dagster's own event stream: :func:`progress_logger` is a run logger (added to the job
for the demo's runs only) that receives every event the run logs anyway and keeps counters; it
queries nothing, and a materialization costs it one counter increment. A step's partitions are
its asset materializations, which Dagster emits when the step has stored them, so progress moves
step by step (a step computes all its partitions at once).

Each finished step also says the CPU time it took (user + system of the process running it, all
its threads): on a shared machine a step's wall time mostly measures the other processes, its CPU
time does not, so the demo's closing breakdown (:meth:`DemoProgress.cpu_by_step`) is in CPU seconds.

The demo runs instruments side by side (one worker process per core), so :class:`DemoProgress`
keeps one set of counters per instrument (its ``label``); a worker's events reach it through
:class:`EventQueue`. Two forms: a progress bar redrawn in place when stdout is a terminal (one
segment per running instrument), and plain lines otherwise (one per finished step, for logs and
CI).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from dagster import LoggerDefinition, logger

__all__ = ["DemoProgress", "EventQueue", "progress_logger"]

_BAR_WIDTH = 24
_REDRAW_SECONDS = 0.5


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.1f}/s" if seconds > 0 else "-"


@dataclass
class _Run:
    """One instrument's run: its counters."""

    steps: int
    partitions: int
    started: float
    steps_done: int = 0
    done: int = 0
    running: str = ""
    step_started: dict[str, float] = field(default_factory=dict)
    step_cpu_started: dict[str, float] = field(default_factory=dict)
    step_partitions: dict[str, int] = field(default_factory=dict)


class DemoProgress:
    """Counters of the instruments' runs in flight, written to ``stream`` as lines or as a bar.

    Every event method takes the instrument's ``label``; without one it means the only run in
    flight (the single-run calls of a sequential demo).
    """

    def __init__(self, stream: TextIO, *, interactive: bool, clock=time.monotonic, cpu_clock=time.process_time) -> None:
        self.stream, self.interactive, self.clock, self.cpu_clock = stream, interactive, clock, cpu_clock
        self._cpu_by_step: dict[str, float] = {}
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # -- one instrument's run -------------------------------------------------------------------

    def start(self, label: str, *, steps: int, partitions: int) -> None:
        with self._lock:
            self._runs[label] = _Run(steps=steps, partitions=partitions, started=self.clock())
        if self.interactive:
            if self._ticker is None:
                self._stop.clear()
                self._ticker = threading.Thread(target=self._tick, name="nexus-progress", daemon=True)
                self._ticker.start()
            self._draw()

    def finish(self, label: str | None = None) -> None:
        """End of a run; when no run is left the bar is cleared, so the caller's summary takes its place."""
        with self._lock:
            self._runs.pop(self._label(label), None)
            last = not self._runs
        if last and self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        if self.interactive:
            if last:
                with self._lock:
                    self.stream.write("\r\x1b[2K")
                    self.stream.flush()
            else:
                self._draw()

    def say(self, line: str) -> None:
        """A line of the caller's (a run's summary) above the bar, or among the plain lines."""
        with self._lock:
            self.stream.write(("\r\x1b[2K" if self.interactive else "") + line + "\n")
            self.stream.flush()
        if self.interactive and self._runs:
            self._draw()

    def _label(self, label: str | None) -> str:
        if label is not None:
            return label
        if len(self._runs) != 1:
            raise ValueError(f"an event without an instrument label while {len(self._runs)} runs are in flight")
        return next(iter(self._runs))

    # -- Dagster events -------------------------------------------------------------------------

    @property
    def done(self) -> int:
        """Partitions materialised by the runs in flight."""
        with self._lock:
            return sum(run.done for run in self._runs.values())

    def step_started(self, step: str, label: str | None = None, cpu: float | None = None) -> None:
        """``cpu``: the CPU clock of the process running the step (a worker's); default this process's."""
        with self._lock:
            run = self._runs[self._label(label)]
            run.step_started[step] = self.clock()
            run.step_cpu_started[step] = self.cpu_clock() if cpu is None else cpu
            run.running = step
        if self.interactive:
            self._draw()

    def materialized(self, step: str, label: str | None = None, count: int = 1) -> None:
        with self._lock:  # once per partition: a counter, nothing else
            run = self._runs[self._label(label)]
            run.step_partitions[step] = run.step_partitions.get(step, 0) + count
            run.done += count

    def step_finished(self, step: str, *, failed: bool = False, label: str | None = None,
                      cpu: float | None = None) -> None:
        now, cpu_now = self.clock(), self.cpu_clock() if cpu is None else cpu
        with self._lock:
            name = self._label(label)
            run = self._runs[name]
            run.steps_done += 1
            seconds = now - run.step_started.get(step, now)
            cpu_seconds = cpu_now - run.step_cpu_started.get(step, cpu_now)
            self._cpu_by_step[step] = self._cpu_by_step.get(step, 0.0) + cpu_seconds
            count = run.step_partitions.get(step, 0)
            line = (f"step      {name} {run.steps_done}/{run.steps} {step}: "
                    + ("FAILED" if failed else f"{count:,} partitions" if count else "done")
                    + f" in {seconds:.1f}s, {cpu_seconds:.1f}s CPU" + (f" ({_rate(count, seconds)})" if count else "")
                    + f"; {run.done:,}/{run.partitions:,} partitions, {now - run.started:.1f}s elapsed,"
                    f" {_rate(run.done, now - run.started)}")
            if run.running == step:
                run.running = ""
        if self.interactive:
            self._draw()
        else:
            with self._lock:
                self.stream.write(line + "\n")
                self.stream.flush()

    def cpu_by_step(self) -> dict[str, float]:
        """CPU seconds per step name, summed over every instrument's finished runs, in the order
        the steps first finished."""
        with self._lock:
            return dict(self._cpu_by_step)

    # -- the bar --------------------------------------------------------------------------------

    def bar(self) -> str:
        """One segment per run in flight: ``label [####----] step k/n running | done/all partitions | s | rate``."""
        with self._lock:
            now = self.clock()
            segments = []
            for label, run in self._runs.items():
                elapsed = now - run.started
                share = run.done / run.partitions if run.partitions else run.steps_done / max(run.steps, 1)
                filled = min(_BAR_WIDTH, int(share * _BAR_WIDTH))
                running = f" {run.running}" if run.running else ""
                segments.append(
                    f"{label} [{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] step {run.steps_done}/{run.steps}{running}"
                    f" | {run.done:,}/{run.partitions:,} partitions | {elapsed:.0f}s | {_rate(run.done, elapsed)}")
            return "  ||  ".join(segments)

    def _draw(self) -> None:
        text = self.bar()
        with self._lock:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(_REDRAW_SECONDS):
            self._draw()


class EventQueue:
    """A worker process's side of the progress: the same calls as :class:`DemoProgress`, put on a
    multiprocessing queue as ``(method, args, kwargs)`` for the parent to replay on its own; a
    step's start and end carry the worker's own CPU clock (the parent's would not move)."""

    def __init__(self, queue: Any, label: str, cpu_clock=time.process_time) -> None:
        self.queue, self.label, self.cpu_clock = queue, label, cpu_clock
        self._pending: tuple[str, int] | None = None  # materializations of one step, sent as one message

    def _flush(self) -> None:
        if self._pending is not None:
            step, count = self._pending
            self._pending = None
            self.queue.put(("materialized", (step,), {"label": self.label, "count": count}))

    def step_started(self, step: str) -> None:
        self._flush()
        self.queue.put(("step_started", (step,), {"label": self.label, "cpu": self.cpu_clock()}))

    def materialized(self, step: str) -> None:
        if self._pending is not None and self._pending[0] != step:
            self._flush()
        self._pending = (step, (self._pending[1] if self._pending else 0) + 1)

    def step_finished(self, step: str, *, failed: bool = False) -> None:
        self._flush()
        self.queue.put(("step_finished", (step,), {"failed": failed, "label": self.label, "cpu": self.cpu_clock()}))


class _ProgressHandler(logging.Handler):
    """Hands the Dagster events among a run's log records to a :class:`DemoProgress` (or an :class:`EventQueue`)."""

    def __init__(self, progress: DemoProgress | EventQueue) -> None:
        super().__init__(level=logging.DEBUG)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_event", None) or (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if event is None or event.step_key is None:
            return
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            self.progress.materialized(event.step_key)
        elif kind == "STEP_START":
            self.progress.step_started(event.step_key)
        elif kind == "STEP_SUCCESS":
            self.progress.step_finished(event.step_key)
        elif kind == "STEP_FAILURE":
            self.progress.step_finished(event.step_key, failed=True)


def progress_logger(progress: DemoProgress | EventQueue) -> LoggerDefinition:
    """A Dagster run logger feeding ``progress``; enable it with ``{"loggers": {"progress": {}}}``."""

    @logger(description="nexus-assets demo progress (counts the run's step and materialization events)")
    def _progress(_init_context) -> logging.Logger:
        log = logging.Logger("nexus_assets.progress", level=logging.DEBUG)
        log.addHandler(_ProgressHandler(progress))
        return log

    return _progress
