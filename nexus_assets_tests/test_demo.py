import contextlib
import datetime as dt
import os
import time

from nexus_assets import demo
from nexus_assets.core.parallel import worker_threads


class _Progress:
    def __init__(self):
        self.calls = []

    def start(self, key, **kwargs):
        self.calls.append(("start", key))

    def finish(self, key):
        self.calls.append(("finish", key))


def test_forked_workers_share_the_instruments_and_all_of_them_work(monkeypatch):
    """Two workers, four instruments that each take a while: both workers run instruments (a worker
    that found the queue busy once used to quit, and every run went through the other one)."""

    def run_one(job, instance, key, start, end, log_level):
        time.sleep(0.5)
        # the run id carries the worker's pid and its thread count for the checks below
        return demo.RunOutcome(key, f"{os.getpid()}:{worker_threads()}", True, 0.5)

    monkeypatch.setattr(demo, "_job", lambda progress: None)
    monkeypatch.setattr(demo, "_shape", lambda job, days: (1, days))
    monkeypatch.setattr(demo, "_run_one", run_one)
    monkeypatch.delenv("NEXUS_THREADS", raising=False)
    monkeypatch.setattr(demo, "usable_cores", lambda: 8)
    reported = []
    keys = ["a", "b", "c", "d"]
    outcomes = demo.run_instruments(keys, dt.date(2018, 1, 1), dt.date(2018, 1, 2), progress=_Progress(),
                                    open_instance=contextlib.nullcontext, log_level="INFO", jobs=2,
                                    report=reported.append)
    assert [outcome.key for outcome in outcomes] == keys
    assert all(outcome.success for outcome in outcomes)
    assert sorted(outcome.key for outcome in reported) == keys
    workers = {outcome.run_id.split(":")[0] for outcome in outcomes}
    assert len(workers) == 2 and str(os.getpid()) not in workers
    # eight cores shared by two workers: four threads each (this machine alone would give its own
    # count), and the demo's own process unchanged
    assert {outcome.run_id.split(":")[1] for outcome in outcomes} == {"4"}
    assert "NEXUS_THREADS" not in os.environ
