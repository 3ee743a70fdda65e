"""The demo's progress: plain lines per finished step, or a bar on a terminal, from counted events."""

import io
import logging

from nexus_assets.progress import DemoProgress, _ProgressHandler


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def _progress(out, clock, *, interactive=False, cpu=None):
    return DemoProgress(out, interactive=interactive, clock=clock, cpu_clock=cpu or Clock(10.0))


def _run(progress, clock, cpu=None):
    cpu = cpu or Clock()
    progress.start("9001_SP500", steps=3, partitions=4)
    progress.step_started("qml_models")
    clock.now += 2.0
    cpu.now += 1.5
    for _ in range(2):
        progress.materialized("qml_models")
    progress.step_finished("qml_models")
    progress.step_started("qml_models_freshness")
    clock.now += 0.5
    cpu.now += 0.25
    progress.step_finished("qml_models_freshness")
    progress.step_started("horizon_slices")
    clock.now += 1.5
    progress.materialized("horizon_slices")
    progress.step_finished("horizon_slices", failed=True)
    progress.finish()


def test_plain_lines_say_per_step_what_was_done_how_long_and_how_fast():
    clock, cpu, out = Clock(), Clock(10.0), io.StringIO()
    progress = _progress(out, clock, cpu=cpu)
    _run(progress, clock, cpu)
    assert out.getvalue().splitlines() == [
        "step      9001_SP500 1/3 qml_models: 2 partitions in 2.0s, 1.5s CPU (1.0/s); 2/4 partitions, 2.0s elapsed, 1.0/s",
        "step      9001_SP500 2/3 qml_models_freshness: done in 0.5s, 0.2s CPU; 2/4 partitions, 2.5s elapsed, 0.8/s",
        "step      9001_SP500 3/3 horizon_slices: FAILED in 1.5s, 0.0s CPU (0.7/s); 3/4 partitions, 4.0s elapsed, 0.8/s",
    ]
    assert progress.cpu_by_step() == {"qml_models": 1.5, "qml_models_freshness": 0.25, "horizon_slices": 0.0}


def test_a_steps_cpu_time_is_summed_over_instruments_and_taken_from_the_worker_clock_when_given():
    clock, out = Clock(), io.StringIO()
    progress = _progress(out, clock, cpu=Clock(500.0))  # the parent's clock: never read below
    for label, (begin, end) in (("A", (3.0, 5.5)), ("B", (40.0, 41.0))):
        progress.start(label, steps=1, partitions=1)
        progress.step_started("metrics", label=label, cpu=begin)
        progress.step_finished("metrics", label=label, cpu=end)
        progress.finish(label)
    assert progress.cpu_by_step() == {"metrics": 3.5}
    assert [line.split(": ")[1].split(";")[0] for line in out.getvalue().splitlines()] == [
        "done in 0.0s, 2.5s CPU", "done in 0.0s, 1.0s CPU"]


def test_on_a_terminal_a_bar_is_redrawn_in_place_and_cleared_at_the_end():
    clock, out = Clock(), io.StringIO()
    progress = _progress(out, clock, interactive=True)
    _run(progress, clock)
    text = out.getvalue()
    assert "\n" not in text and text.endswith("\r\x1b[2K")
    assert "9001_SP500 [############------------] step 1/3 | 2/4 partitions | 2s | 1.0/s" in text


def test_the_logger_counts_dagster_events_and_ignores_other_records():
    class Event:
        def __init__(self, kind, step):
            self.event_type_value, self.step_key = kind, step

    clock, out = Clock(), io.StringIO()
    progress = _progress(out, clock)
    progress.start("A", steps=1, partitions=2)
    handler = _ProgressHandler(progress)
    record = lambda event: logging.makeLogRecord({"dagster_event": event})  # noqa: E731
    handler.emit(logging.makeLogRecord({"msg": "a plain log line"}))
    for kind in ("STEP_START", "ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION", "STEP_SUCCESS"):
        handler.emit(record(Event(kind, "metrics")))
    assert progress.done == 2 and out.getvalue().startswith("step      A 1/1 metrics: 2 partitions in 0.0s")


def test_runs_side_by_side_keep_their_own_counters_and_lines():
    clock, out = Clock(), io.StringIO()
    progress = _progress(out, clock)
    progress.start("A", steps=2, partitions=4)
    progress.start("B", steps=2, partitions=4)
    progress.step_started("qml_models", label="A")
    progress.step_started("qml_models", label="B")
    clock.now += 1.0
    progress.materialized("qml_models", label="B", count=2)
    progress.step_finished("qml_models", label="B")
    progress.materialized("qml_models", label="A")
    progress.step_finished("qml_models", label="A")
    progress.finish("B")
    progress.say("run       B: done")
    progress.finish("A")
    assert out.getvalue().splitlines() == [
        "step      B 1/2 qml_models: 2 partitions in 1.0s, 0.0s CPU (2.0/s); 2/4 partitions, 1.0s elapsed, 2.0/s",
        "step      A 1/2 qml_models: 1 partitions in 1.0s, 0.0s CPU (1.0/s); 1/4 partitions, 1.0s elapsed, 1.0/s",
        "run       B: done",
    ]


def test_an_event_without_a_label_is_refused_while_two_runs_are_in_flight():
    import pytest

    progress = DemoProgress(io.StringIO(), interactive=False, clock=Clock())
    progress.start("A", steps=1, partitions=1)
    progress.start("B", steps=1, partitions=1)
    with pytest.raises(ValueError, match="2 runs are in flight"):
        progress.step_started("metrics")


def test_on_a_terminal_two_runs_share_the_bar_and_a_summary_line_goes_above_it():
    clock, out = Clock(), io.StringIO()
    progress = _progress(out, clock, interactive=True)
    progress.start("A", steps=2, partitions=4)
    progress.start("B", steps=2, partitions=4)
    progress.materialized("qml_models", label="A", count=2)
    assert progress.bar().startswith("A [############------------] step 0/2 | 2/4 partitions")
    assert "  ||  B [------------------------] step 0/2 | 0/4 partitions" in progress.bar()
    progress.finish("A")
    progress.say("run       A: done")
    progress.finish("B")
    text = out.getvalue()
    assert "\r\x1b[2Krun       A: done\n" in text and text.endswith("\r\x1b[2K")


def test_a_worker_queue_replays_the_same_calls_with_its_label_and_one_message_per_step():
    import queue

    from nexus_assets.progress import EventQueue

    events = queue.Queue()
    sink = EventQueue(events, "A", cpu_clock=Clock(7.0))
    sink.step_started("qml_models")
    for _ in range(3):
        sink.materialized("qml_models")
    sink.step_finished("qml_models")
    messages = [events.get_nowait() for _ in range(events.qsize())]
    assert messages == [
        ("step_started", ("qml_models",), {"label": "A", "cpu": 7.0}),
        ("materialized", ("qml_models",), {"label": "A", "count": 3}),
        ("step_finished", ("qml_models",), {"failed": False, "label": "A", "cpu": 7.0}),
    ]
    clock, out = Clock(), io.StringIO()
    progress = _progress(out, clock)
    progress.start("A", steps=1, partitions=3)
    for method, args, kwargs in messages:
        getattr(progress, method)(*args, **kwargs)
    assert out.getvalue().startswith("step      A 1/1 qml_models: 3 partitions in 0.0s")
