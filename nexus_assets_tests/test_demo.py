import contextlib
import datetime as dt
import os
import time
from pathlib import Path

import pytest

from nexus_assets import demo
from nexus_assets.core.parallel import worker_threads

REPO = Path(__file__).resolve().parents[1]


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


def test_the_summary_lists_every_asset_it_is_given_and_the_registry(tmp_path):
    from upath import UPath

    for relative in ("qml_models/asset=A/date=2018-03-01.parquet", "qml_models/asset=B/date=2018-03-01.parquet",
                     "metrics/statistics/asset=A/date=2018-03-01.parquet", "metrics/daily/asset=A/date=2018-03-01.parquet",
                     "dashboard/asset=A/date=2018-03-01.html", "dashboard/asset=A/date=2018-03-01.json",
                     "dashboard/asset=A/index.html", "qml_models/asset=A/.date=2018-03-02.parquet.tmp",
                     "ml_registry/A/trained-2018-02-26-h1/manifest.json", "ml_registry/A/trained-2018-02-26-h1/model.onnx",
                     "ml_registry/A/trained-2018-02-26-h5/manifest.json"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    data = UPath(str(tmp_path))
    assert demo.stored_lines([["qml_models"], ["ml_signals"], ["metrics"], ["dashboard"]], data) == [
        f"stored    qml_models: 2 files under {tmp_path / 'qml_models'}",
        f"stored    ml_signals: 0 files under {tmp_path / 'ml_signals'}",
        f"stored    metrics: 2 files under {tmp_path / 'metrics'}",
        f"stored    dashboard: 2 files under {tmp_path / 'dashboard'}",
        f"stored    ml_registry: 2 models under {tmp_path / 'ml_registry'}",
    ]


def _dagster_dev_instance(command: str, monkeypatch):
    """The instance ``dagster dev`` opens when ``command`` (``cd F && [cp dagster.yaml H/ && ][DAGSTER_HOME=H ]
    dagster dev ...``) is typed in a shell, as Dagster's own CLI finds it."""
    import shlex
    import shutil

    from dagster._cli.utils import get_possibly_temporary_instance_for_cli

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for part in command.split(" && "):
        words = shlex.split(part)
        if words[0] == "cd":
            monkeypatch.chdir(words[1])
        elif words[0] == "cp":
            shutil.copy(words[1], words[2])
        else:
            assert words[-4:] == ["dagster", "dev", "-m", "nexus_assets.definitions"], part
            for assignment in words[:-4]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, value)
    return get_possibly_temporary_instance_for_cli("dagster dev")


@pytest.mark.parametrize("config, dagster_home", [
    ("project", False),  # the project folder: ./dagster.yaml, ./.dagster_home
    (None, False),  # any other folder: ./.dagster_home with Dagster's defaults
    ("project", True),  # DAGSTER_HOME set: its own instance, whatever the folder holds
    ("other", False),  # a folder whose dagster.yaml is not the project's
])
def test_the_closing_command_opens_the_demos_instance_from_any_folder(tmp_path, monkeypatch, config, dagster_home):
    """The demo's last line, typed in another folder, opens the instance the demo recorded its runs in,
    configured the same way (the line used to say `dagster dev` "from this folder", wherever that was)."""
    from nexus_assets import cli

    ran_in, elsewhere = tmp_path / "ran here", tmp_path / "elsewhere"
    ran_in.mkdir()
    elsewhere.mkdir()
    if config == "project":
        (ran_in / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    elif config == "other":
        (ran_in / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    if dagster_home:
        (tmp_path / "home").mkdir()
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(ran_in)
    with cli._instance() as instance:
        home, kind = str(Path(instance.root_directory).resolve()), type(instance)
        command = demo.ui_command(str(ran_in), home, dagster_home_set=dagster_home,
                                  config_in_folder=config is not None, project_instance=kind.__name__ == "NexusInstance")
    monkeypatch.chdir(elsewhere)
    with _dagster_dev_instance(command, monkeypatch) as opened:
        assert (str(Path(opened.root_directory).resolve()), type(opened)) == (home, kind)
    assert kind.__name__ == ("NexusInstance" if config == "project" and not dagster_home else "DagsterInstance")
