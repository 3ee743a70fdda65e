import contextlib
import datetime as dt
import os
import time

from nexus_assets import demo


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
        return demo.RunOutcome(key, str(os.getpid()), True, 0.5)

    monkeypatch.setattr(demo, "_job", lambda progress: None)
    monkeypatch.setattr(demo, "_shape", lambda job, days: (1, days))
    monkeypatch.setattr(demo, "_run_one", run_one)
    reported = []
    keys = ["a", "b", "c", "d"]
    outcomes = demo.run_instruments(keys, dt.date(2018, 1, 1), dt.date(2018, 1, 2), progress=_Progress(),
                                    open_instance=contextlib.nullcontext, log_level="INFO", jobs=2,
                                    report=reported.append)
    assert [outcome.key for outcome in outcomes] == keys
    assert all(outcome.success for outcome in outcomes)
    assert sorted(outcome.key for outcome in reported) == keys
    workers = {outcome.run_id for outcome in outcomes}
    assert len(workers) == 2 and str(os.getpid()) not in workers
