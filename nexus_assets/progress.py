"""What ``nexus-assets demo`` shows while it runs: per instrument and step, partitions done, elapsed, a rate.

Read from Dagster's own event stream: :func:`progress_logger` is a run logger (added to the job
for the demo's runs only) that receives every event the run logs anyway and keeps counters; it
queries nothing, and a materialization costs it one counter increment. A step's partitions are
its asset materializations, which Dagster emits when the step has stored them, so progress moves
step by step (a step computes all its partitions at once).

Two forms: a progress bar redrawn in place when stdout is a terminal, and plain lines otherwise
(one per finished step, for logs and CI), both from :class:`DemoProgress`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

from dagster import LoggerDefinition, logger

__all__ = ["DemoProgress", "progress_logger"]

_BAR_WIDTH = 24
_REDRAW_SECONDS = 0.5


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.1f}/s" if seconds > 0 else "-"


class DemoProgress:
    """Counters of one instrument's run at a time, written to ``stream`` as lines or as a bar."""

    def __init__(self, stream: TextIO, *, interactive: bool, clock=time.monotonic) -> None:
        self.stream, self.interactive, self.clock = stream, interactive, clock
        self._lock = threading.Lock()
        self._label = ""
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # -- one instrument's run -------------------------------------------------------------------

    def start(self, label: str, *, steps: int, partitions: int) -> None:
        with self._lock:
            self._label, self.steps, self.partitions = label, steps, partitions
            self.started = self.clock()
            self.steps_done = self.done = 0
            self._step_started: dict[str, float] = {}
            self._step_partitions: dict[str, int] = {}
            self._running = ""
        if self.interactive:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="nexus-progress", daemon=True)
            self._ticker.start()
            self._draw()

    def finish(self) -> None:
        """End of the run: the bar is cleared, so the caller's summary line takes its place."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        if self.interactive:
            with self._lock:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()

    # -- Dagster events -------------------------------------------------------------------------

    def step_started(self, step: str) -> None:
        with self._lock:
            self._step_started[step] = self.clock()
            self._running = step
        if self.interactive:
            self._draw()

    def materialized(self, step: str) -> None:
        with self._lock:  # once per partition: a counter, nothing else
            self._step_partitions[step] = self._step_partitions.get(step, 0) + 1
            self.done += 1

    def step_finished(self, step: str, *, failed: bool = False) -> None:
        now = self.clock()
        with self._lock:
            self.steps_done += 1
            seconds = now - self._step_started.get(step, now)
            count = self._step_partitions.get(step, 0)
            line = (f"step      {self._label} {self.steps_done}/{self.steps} {step}: "
                    + ("FAILED" if failed else f"{count:,} partitions" if count else "done")
                    + f" in {seconds:.1f}s" + (f" ({_rate(count, seconds)})" if count else "")
                    + f"; {self.done:,}/{self.partitions:,} partitions, {now - self.started:.1f}s elapsed,"
                    f" {_rate(self.done, now - self.started)}")
            if self._running == step:
                self._running = ""
        if self.interactive:
            self._draw()
        else:
            with self._lock:
                self.stream.write(line + "\n")
                self.stream.flush()

    # -- the bar --------------------------------------------------------------------------------

    def bar(self) -> str:
        with self._lock:
            elapsed = self.clock() - self.started
            share = self.done / self.partitions if self.partitions else self.steps_done / max(self.steps, 1)
            filled = min(_BAR_WIDTH, int(share * _BAR_WIDTH))
            running = f" {self._running}" if self._running else ""
            return (f"{self._label} [{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] step {self.steps_done}/{self.steps}{running}"
                    f" | {self.done:,}/{self.partitions:,} partitions | {elapsed:.0f}s | {_rate(self.done, elapsed)}")

    def _draw(self) -> None:
        text = self.bar()
        with self._lock:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(_REDRAW_SECONDS):
            self._draw()


class _ProgressHandler(logging.Handler):
    """Hands the Dagster events among a run's log records to a :class:`DemoProgress`."""

    def __init__(self, progress: DemoProgress) -> None:
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


def progress_logger(progress: DemoProgress) -> LoggerDefinition:
    """A Dagster run logger feeding ``progress``; enable it with ``{"loggers": {"progress": {}}}``."""

    @logger(description="nexus-assets demo progress (counts the run's step and materialization events)")
    def _progress(_init_context) -> logging.Logger:
        log = logging.Logger("nexus_assets.progress", level=logging.DEBUG)
        log.addHandler(_ProgressHandler(progress))
        return log

    return _progress
