"""Run a command as a child process and report its wall time and peak RSS.

Peak RSS is sampled (every 20 ms) over the child's whole process tree with psutil. wait4's
ru_maxrss would be wrong here: Linux carries the parent's high-water mark into a forked child
across exec, so a large benchmark parent would inflate every child's figure.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class Measurement:
    label: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(label: str, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Measurement:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watched = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_rss(watched))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return Measurement(label, seconds, peak / 2**20, proc.returncode, out)


@dataclass
class Row:
    """One benchmark row measured over several rounds (medians)."""

    label: str
    runs: list = field(default_factory=list)  # (Measurement, cpu seconds, load before, load after)

    def add(self, measurement, cpu: float, before: float, after: float) -> None:
        self.runs.append((measurement, cpu, before, after))

    @property
    def seconds(self) -> float:
        return statistics.median(m.seconds for m, *_ in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(c for _, c, *_ in self.runs)


def logged(command: list[str]) -> list[str]:
    """``command`` run by bash with its output in ``run.log`` (in the working folder), the log's last
    40 lines shown only when it fails."""
    quoted = " ".join(f"'{part}'" for part in command)
    return ["bash", "-c", f"{quoted} > run.log 2>&1 || {{ tail -40 run.log; exit 1; }}"]


def timed(label: str, argv: list[str], env: dict, cwd) -> tuple[Measurement, float, float, float]:
    """``measure`` plus the child's CPU seconds (user + sys, all its threads and children) and the
    1-minute load average before and after."""
    before = os.getloadavg()[0]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = measure(label, argv, env, str(cwd))
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (now.ru_utime - used.ru_utime) + (now.ru_stime - used.ru_stime)
    return m, cpu, before, os.getloadavg()[0]


def table(rows: list[Measurement]) -> str:
    lines = [f"{'what':62s} {'wall s':>8s} {'peak RSS MB':>12s}"]
    lines += [f"{m.label:62s} {m.seconds:8.1f} {m.peak_rss_mb:12.0f}" for m in rows]
    return "\n".join(lines)
