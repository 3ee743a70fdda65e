"""The commands a data engineer types: dagster's CLI on our definitions, and `nexus-assets demo`."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nexus_assets_tests.defs.conftest import sandbox_catalog_text

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

REPO = Path(__file__).resolve().parents[1]
DAGSTER = [sys.executable, "-m", "dagster"]


def env_for(tmp_path: Path, catalog_text: str) -> dict[str, str]:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(catalog_text)
    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_HOME"))}
    env.update(NEXUS_CATALOG=str(catalog), NEXUS_DATA_DIR=str(tmp_path / "data"), PYTHONWARNINGS="ignore")
    return env


def test_definitions_validate():
    result = subprocess.run(DAGSTER + ["definitions", "validate", "-m", "nexus_assets.definitions"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_asset_materialize_partition_range(tmp_path):
    env = env_for(tmp_path, sandbox_catalog_text(keys=("9002_NASDAQ",)))
    result = subprocess.run(
        DAGSTER + ["asset", "materialize", "-m", "nexus_assets.definitions", "--select", "qml_models,horizon_slices",
                   "--partition-range", "9002_NASDAQ|2018-01-02...9002_NASDAQ|2018-01-04"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for day in ("2018-01-02", "2018-01-03", "2018-01-04"):
        slices = pd.read_parquet(tmp_path / "data" / "horizon_slices" / "asset=9002_NASDAQ" / f"date={day}.parquet")
        assert len(slices) > 300 and slices["date"].eq(pd.Timestamp(day)).all()


def test_demo_command(tmp_path):
    env = env_for(tmp_path, sandbox_catalog_text(keys=("9004_VIX",)))
    result = subprocess.run(
        [sys.executable, "-m", "nexus_assets.cli", "demo", "--start", "2018-03-01", "--end", "2018-03-05", "--log-level", "ERROR"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "9004_VIX" in result.stdout and "success" in result.stdout and "horizon_slices: 5 files" in result.stdout
    assert "metrics: 25 files" in result.stdout  # 5 tables (the record's 3, ml_accuracy, ml_calibration) x 5 days
    # every asset of the job, in pipeline order, and the ML registry's models
    stored = [line.split(":")[0].split()[-1] for line in result.stdout.splitlines() if line.startswith("stored    ")]
    assert len(stored) == 13 and stored[0] == "qml_models" and stored[-2:] == ["dashboard", "ml_registry"]
    assert set(stored) >= {"features", "ml_models", "ml_predictions", "ml_signals", "qml_model_metadata"}
    for step in ("features", "ml_models", "ml_predictions", "ml_signals", "qml_model_metadata"):
        assert f"stored    {step}: 5 files under {tmp_path / 'data' / step}" in result.stdout
    models = len(list((tmp_path / "data" / "ml_registry").glob("*/*/manifest.json")))
    assert models and f"stored    ml_registry: {models} models under {tmp_path / 'data' / 'ml_registry'}" in result.stdout
    # progress as it goes, in plain lines (stdout is no terminal here): one per finished step
    steps = [line for line in result.stdout.splitlines() if line.startswith("step      ")]
    assert len(steps) == 13 and steps[0].startswith("step      9004_VIX 1/13 qml_models: 5 partitions in ")
    assert steps[-1].startswith("step      9004_VIX 13/13 dashboard: 5 partitions in ") and "60/60 partitions, " in steps[-1]
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    # the closing CPU breakdown names every step that computed partitions
    cpu = next(line for line in result.stdout.splitlines() if line.startswith("cpu       "))
    assert "s in all; steps: " in cpu and all(f"{step} " in cpu for step in ("qml_models", "metrics", "dashboard"))
    index = tmp_path / "data" / "dashboard" / "index.html"
    assert f"site      {index.resolve()}" in result.stdout and index.is_file()
    assert f"instance  {(tmp_path / '.dagster_home').resolve()}" in result.stdout
    assert not (tmp_path / ".dagster_home" / "dagster.yaml").exists()  # configured by ./dagster.yaml, never a copy
    # the way to the UI names the folder and the instance, so it works from any shell
    home = (tmp_path / ".dagster_home").resolve()
    assert result.stdout.rstrip().splitlines()[-1] == (
        f"next      cd {tmp_path.resolve()} && dagster dev -m nexus_assets.definitions   "
        f"# the runs and the partition grid, in the demo's instance {home}")

    # The README's backfill command, run from the same folder without DAGSTER_HOME, records its run
    # in the same instance (not in a temporary one that `dagster dev` would never show).
    backfill = subprocess.run(
        DAGSTER + ["asset", "materialize", "-m", "nexus_assets.definitions", "--select", "qml_models",
                   "--partition-range", "9004_VIX|2018-03-06...9004_VIX|2018-03-07"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    assert "will not be used" not in backfill.stderr + result.stderr
    assert not list(tmp_path.glob(".tmp_dagster_home_*"))
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    ref = InstanceRef.from_dir(str(tmp_path / ".dagster_home"), config_dir=str(tmp_path))
    with DagsterInstance.from_ref(ref) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and {run.job_name for run in runs} == {"nexus_main", "__ASSET_JOB"}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_side_by_side_writes_the_same_files_as_one_after_another(tmp_path):
    """Two instruments in two forked workers, then the same demo in one process: every stored file,
    pages and site index included, is the same byte for byte, and both record one run per instrument."""
    files, runs = {}, {}
    for jobs in ("2", "1"):
        folder = tmp_path / f"jobs{jobs}"
        folder.mkdir()
        env = env_for(folder, sandbox_catalog_text(keys=("9001_SP500", "9004_VIX")))
        result = subprocess.run(
            [sys.executable, "-m", "nexus_assets.cli", "demo", "--start", "2018-03-01", "--end", "2018-03-06",
             "--log-level", "ERROR", "--jobs", jobs],
            capture_output=True, text=True, cwd=folder, env=env, timeout=600,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"workers   {jobs} " in result.stdout
        for key in ("9001_SP500", "9004_VIX"):  # each instrument's steps and its run line, whatever the interleaving
            lines = [line for line in result.stdout.splitlines() if line.startswith(f"step      {key} ")]
            steps = len(lines)  # every step of the main job, whatever their number
            assert steps >= 8 and lines[-1].startswith(f"step      {key} {steps}/{steps} dashboard: 6 partitions in ")
            assert sum(line.startswith(f"run       {key}: ") and line.split()[3] == "success"
                       for line in result.stdout.splitlines()) == 1
        files[jobs] = _files(folder / "data")
        from dagster import DagsterInstance
        from dagster._core.instance.ref import InstanceRef

        with DagsterInstance.from_ref(InstanceRef.from_dir(str(folder / ".dagster_home"), config_dir=str(folder))) as instance:
            runs[jobs] = sorted(run.tags["dagster/asset_partition_range_start"] for run in instance.get_runs())
    assert len(files["2"]) > 100 and any(name.endswith("index.html") for name in files["2"])
    assert files["2"].keys() == files["1"].keys()
    assert [name for name in files["2"] if files["2"][name] != files["1"][name]] == []
    assert runs["2"] == runs["1"] == ["9001_SP500|2018-03-01", "9004_VIX|2018-03-01"]


def test_demo_refuses_a_bad_date_and_a_reversed_range_in_one_line(tmp_path):
    env = env_for(tmp_path, sandbox_catalog_text(keys=("9004_VIX",)))
    for args, wanted in ((["--start", "2018-13-01"], "not a date (YYYY-MM-DD): '2018-13-01'"),
                         (["--start", "2018-03-05", "--end", "2018-03-01"], "the range is reversed")):
        result = subprocess.run([sys.executable, "-m", "nexus_assets.cli", "demo", *args],
                                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        assert wanted in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "data").exists() and not (tmp_path / ".dagster_home" / "history").exists()  # nothing run


def test_a_bad_catalog_or_setting_is_one_line_not_a_traceback(tmp_path):
    good = sandbox_catalog_text(keys=("9004_VIX",))
    cases = (
        (good.replace("[[assets]]", "[[assets]]\nbogus_field = 1", 1), {}, "field 'bogus_field': unknown field"),
        ("not = [valid", {}, "not valid TOML"),
        (good, {"NEXUS_QML_PULL_DEADLINE_SECONDS": "-5"}, "NEXUS_QML_PULL_DEADLINE_SECONDS must be a positive number"),
    )
    for text, extra, wanted in cases:
        env = {**env_for(tmp_path, text), **extra}
        result = subprocess.run([sys.executable, "-m", "nexus_assets.cli", "demo"],
                                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        assert wanted in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "data").exists()  # nothing run


def test_site_serves_the_dashboard_and_links_point_there(tmp_path):
    """`nexus-assets site` serves the pages; with NEXUS_SITE_URL the dashboard metadata links there."""
    import urllib.error
    import urllib.request

    from dagster import AssetKey, DagsterInstance

    from nexus_assets.definitions import MAIN_JOB, build_definitions
    from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
    from nexus_assets.settings import Settings

    catalog = tmp_path / "catalog.toml"
    catalog.write_text(sandbox_catalog_text(keys=("9004_VIX",)))
    settings = Settings.from_env({"NEXUS_CATALOG": str(catalog), "NEXUS_DATA_DIR": str(tmp_path / "data"),
                                  "NEXUS_SITE_URL": "http://127.0.0.1:8787/"})
    instance = DagsterInstance.ephemeral()
    result = build_definitions(settings).resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance, tags={RANGE_START_TAG: "9004_VIX|2018-03-01", RANGE_END_TAG: "9004_VIX|2018-03-02"})
    assert result.success
    [record] = instance.fetch_materializations(AssetKey("dashboard"), limit=1).records
    assert record.asset_materialization.metadata["page"].value.startswith("http://127.0.0.1:8787/asset=9004_VIX/date=")

    env = env_for(tmp_path, sandbox_catalog_text(keys=("9004_VIX",)))
    proc = subprocess.Popen([sys.executable, "-m", "nexus_assets.cli", "site", "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(url + "asset=9004_VIX/date=2018-03-02.html", timeout=10).read().decode()
        assert 'data-panel="signal"' in page
        assert b"9004_VIX" in urllib.request.urlopen(url + "index.html", timeout=10).read()
        from nexus_assets.core.dashboard.site import plotly_js_path

        shared = urllib.request.urlopen(url + plotly_js_path(), timeout=10)  # the shared plotly.js
        assert shared.status == 200 and "frame-ancestors 'none'" in shared.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "assets/", timeout=10)  # a folder is never listed
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=45) == 0


def test_loading_the_code_prints_no_beta_warning_blocks(tmp_path):
    """The beta APIs the project uses on purpose are silenced once (nexus_assets/defs/__init__.py)."""
    env = env_for(tmp_path, sandbox_catalog_text(keys=("9004_VIX",)))
    env.pop("PYTHONWARNINGS")
    code = "import warnings; warnings.simplefilter('default'); import nexus_assets.definitions"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BetaWarning" not in result.stderr, result.stderr[-2000:]


def _every_command_and_option(parser):
    """(command path, option strings, help) for every option of every (sub)command of the parser."""
    import argparse

    stack = [((), parser)]
    while stack:
        path, node = stack.pop()
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {choice.dest for choice in action._choices_actions}
                assert listed == set(action.choices), f"{path}: commands without a help line: {set(action.choices) - listed}"
                stack += [((*path, name), sub) for name, sub in action.choices.items()]
            elif not isinstance(action, argparse._HelpAction):
                yield path, action.option_strings, action.help


def test_help_lists_every_command_and_every_option_has_a_help_text():
    from nexus_assets.cli import build_parser

    parser = build_parser()
    options = list(_every_command_and_option(parser))
    assert {path for path, _, _ in options} >= {("demo",), ("qml-server",), ("site",)}
    missing = [f"{' '.join(path)} {'/'.join(flags)}" for path, flags, text in options if not (text and text.strip())]
    assert not missing, f"options without a help text: {missing}"
    top = subprocess.run([sys.executable, "-m", "nexus_assets.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0
    for name in parser._subparsers._group_actions[0].choices:
        assert f"    {name}" in top.stdout, top.stdout


@pytest.mark.parametrize("command", ["site", "qml-server"])
def test_a_busy_port_is_one_line_not_a_traceback(tmp_path, command):
    import socket

    env = env_for(tmp_path, sandbox_catalog_text(keys=("9004_VIX",)))
    env["QML_API_KEY"] = "local-key"
    (tmp_path / "data" / "dashboard").mkdir(parents=True)
    (tmp_path / "data" / "dashboard" / "index.html").write_text("<html></html>")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "nexus_assets.cli", command, "--port", str(port)],
                                capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (f"{command}: port {port} on 127.0.0.1 is already in use (is another server still "
                                     "running?): stop it, or choose another port with --port (0 picks a free one)")


def test_site_on_an_object_store_says_it_serves_folders_only(tmp_path):
    """With NEXUS_DATA_DIR=s3://..., `site` has no folder to serve: one line and exit status 2."""
    env = env_for(tmp_path, sandbox_catalog_text(keys=("9004_VIX",)))
    env["NEXUS_DATA_DIR"] = "s3://nexus-bucket/prod"
    result = subprocess.run([sys.executable, "-m", "nexus_assets.cli", "site", "--port", "0"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "s3://nexus-bucket/prod" in result.stderr and "serves a local folder" in result.stderr
