"""``qml_model_metadata`` in real Dagster runs, against the project's own server with its metadata
endpoint and against a server without it (today's quantum_ml): the table, the churn counts on a
history where models retire and appear, what a past date may claim, and the WARN check."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from contextlib import contextmanager

import pandas as pd
import pytest

from nexus_assets.catalog import CatalogAsset
from nexus_assets.qml.server import QMLServer
from nexus_assets.qml.synthetic import CLEAN_TRAITS, SyntheticProject
from nexus_assets_tests.defs.test_ingest import metadata_by_partition
from nexus_assets_tests.loopback import API_KEY, ApiPipeline, api_catalog_text, secret_leaks

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

START = dt.date(2025, 1, 1)
END = dt.date(2025, 1, 10)
RETIRE = dt.date(2025, 1, 5)  # five of horizon 1's eight models publish for the last time on the 4th
APPEAR = dt.date(2025, 1, 7)  # two models of horizon 2 publish for the first time
ASSET = CatalogAsset(
    key="4401_Churn", project_id=4401, name="Churn", display_name="Churn", category="Crypto", calendar="crypto",
    start_date=START, end_date=END, source="api",
)


class Scripted:
    """A synthetic project whose model set, watermark and model descriptions the test decides."""

    def __init__(self, watermark: dt.date, versions: dict[str, str] | None = None) -> None:
        self.base = SyntheticProject(ASSET.project_id, horizons=(1, 2), models_per_horizon=8, seed=11, start=START,
                                     end=END, traits=dataclasses.replace(CLEAN_TRAITS, dropout=0.0))
        self.until = watermark
        self.versions = versions or {}
        symbols = {h: sorted(self.base.models().query("horizon == @h")["symbol"]) for h in (1, 2)}
        self.retiring, self.appearing = symbols[1][:5], symbols[2][-2:]

    def rows(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        rows = self.base.rows(start, min(end, self.until))
        day = rows["time"].dt.date
        gone = rows["symbol"].isin(self.retiring) & (day >= RETIRE)
        early = rows["symbol"].isin(self.appearing) & (day < APPEAR)
        return rows[~gone & ~early].reset_index(drop=True)

    def models(self) -> pd.DataFrame:
        models = self.base.models()
        models["code_version"] = models["symbol"].map(self.versions).fillna(models["code_version"])
        return models

    def watermark(self) -> pd.Timestamp:
        return pd.Timestamp(self.until)


@contextmanager
def serving(project: Scripted, monkeypatch, **options):
    server = QMLServer({ASSET.project_id: (project, START)}, API_KEY, **options)
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("QML_API_BASE_URL", server.url)
    monkeypatch.setenv("QML_API_KEY", API_KEY)
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)


def key(day: dt.date) -> str:
    return f"{ASSET.key}|{day.isoformat()}"


def table(pipe: ApiPipeline, day: dt.date) -> pd.DataFrame:
    return pd.read_parquet(pipe.file("qml_model_metadata", key(day)))


def churn_check(result):
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "qml_model_churn"]
    return check


def run(pipe: ApiPipeline, first: dt.date, last: dt.date):
    result = pipe.run(key(first), key(last), through="qml_model_metadata")
    assert result.success
    assert not secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir)
    return result


def test_with_the_endpoint_the_watermark_day_is_described_and_churn_is_counted(tmp_path, monkeypatch):
    project = Scripted(END)
    pipe = ApiPipeline(tmp_path, api_catalog_text(ASSET))
    with serving(project, monkeypatch):
        result = run(pipe, START, END)
    meta = metadata_by_partition(result, "qml_model_metadata")

    last = table(pipe, END)
    assert (last["metadata_source"] == "upstream").all() and len(last) == 16
    described = project.models().set_index("symbol")
    assert last["algorithm"].tolist() == described.loc[last["symbol"], "algorithm"].tolist()
    assert (last["code_version"] == "synthetic-2").all()
    assert meta[key(END)]["metadata_source"] == "upstream"
    # upstream describes its models as of its watermark: an earlier date does not claim that
    for day in (START, RETIRE, dt.date(2025, 1, 9)):
        earlier = table(pipe, day)
        assert (earlier["metadata_source"] == "qml_models").all() and earlier["algorithm"].isna().all()
        assert meta[key(day)]["metadata_source"] == (
            "qml_models (upstream's metadata describes 2025-01-10, after this date; none recorded)")

    by_symbol = last.set_index("symbol")
    assert (by_symbol.loc[project.retiring, "last_seen"] == pd.Timestamp(RETIRE - dt.timedelta(days=1))).all()
    assert not by_symbol.loc[project.retiring, "live"].any()
    assert (by_symbol.loc[project.appearing, "first_seen"] == pd.Timestamp(APPEAR)).all()
    counts = {day: (m["models_added"], m["models_retired"], m["models"]) for day, m in meta.items()}
    assert counts[key(START)] == (14, 0, 14)  # the first day adds what publishes
    assert counts[key(RETIRE)] == (0, 5, 9)
    assert counts[key(APPEAR)] == (2, 0, 11)
    quiet = [d for d in counts if d not in (key(START), key(RETIRE), key(APPEAR))]
    assert all(counts[d][:2] == (0, 0) for d in quiet)

    check = churn_check(result)
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["partitions_warned"].value == 1
    assert f"{key(RETIRE)}: horizon 1 lost 5 of 8 live models (62% > 25%)" in check.description


def test_a_code_version_change_in_the_daily_run_warns_and_a_recorded_day_keeps_its_description(tmp_path, monkeypatch):
    day9 = END - dt.timedelta(days=1)
    pipe = ApiPipeline(tmp_path, api_catalog_text(ASSET))
    with serving(Scripted(day9), monkeypatch):  # the backfill up to the 9th, upstream's latest day then
        run(pipe, START, day9)
    recorded = pipe.file("qml_model_metadata", key(day9)).read_bytes()
    assert (table(pipe, day9)["metadata_source"] == "upstream").all()

    project = Scripted(END)
    changed = sorted(project.models()["symbol"])[3]
    project.versions = {changed: "synthetic-3"}
    with serving(project, monkeypatch):  # the next day's run: upstream has deployed new code for one model
        result = run(pipe, END, END)
        meta = metadata_by_partition(result, "qml_model_metadata")[key(END)]
        assert meta["models_changed"] == 1 and meta["code_version_changes"] == 1
        check = churn_check(result)
        assert not check.passed
        assert f"{changed} (h" in check.description and "code_version synthetic-2 -> synthetic-3" in check.description
        # re-running the 9th now that upstream describes the 10th keeps what was recorded on the 9th
        again = run(pipe, day9, day9)
    assert pipe.file("qml_model_metadata", key(day9)).read_bytes() == recorded
    assert metadata_by_partition(again, "qml_model_metadata")[key(day9)]["metadata_source"].startswith(
        "upstream (recorded")
    assert churn_check(again).passed


def test_without_the_endpoint_the_table_is_derived_from_qml_models_and_says_so(tmp_path, monkeypatch):
    project = Scripted(END)
    pipe = ApiPipeline(tmp_path, api_catalog_text(ASSET))
    with serving(project, monkeypatch, models_only=True):
        result = run(pipe, START, END)
    meta = metadata_by_partition(result, "qml_model_metadata")
    for day in (START, END):
        derived = table(pipe, day)
        assert (derived["metadata_source"] == "qml_models").all()
        assert derived[["algorithm", "training_window", "code_version", "upstream_fields"]].isna().all().all()
        assert meta[key(day)]["metadata_source"] == "qml_models (upstream offers no model metadata endpoint)"
    assert meta[key(RETIRE)]["models_retired"] == 5 and meta[key(APPEAR)]["models_added"] == 2
    assert len(table(pipe, END)) == 16
    check = churn_check(result)
    assert not check.passed and "horizon 1 lost 5 of 8" in check.description


def test_the_same_upstream_gives_the_same_bytes_however_the_dates_are_grouped(tmp_path, monkeypatch):
    project = Scripted(END)
    (tmp_path / "range").mkdir()
    (tmp_path / "split").mkdir()
    ranged = ApiPipeline(tmp_path / "range", api_catalog_text(ASSET))
    split = ApiPipeline(tmp_path / "split", api_catalog_text(ASSET))
    with serving(project, monkeypatch):
        run(ranged, START, END)
        run(split, START, APPEAR)
        run(split, APPEAR + dt.timedelta(days=1), END)
    assert split.files("qml_model_metadata") == ranged.files("qml_model_metadata")
