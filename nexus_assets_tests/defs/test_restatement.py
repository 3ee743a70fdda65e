"""Restatement: upstream changing a day already materialised is recorded, never silent.

Three runs over the same days against the real server: a first materialisation (not a restatement),
an unchanged re-run (same data versions, check passes), and a run after upstream republished one
day differently (new data version for that day, a WARN check saying what changed, a warning in the
run log, the new rows stored). Only the changed day's old file is read.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.core.contract import QML_KEY
from nexus_assets.core.restatement import rows_sha256
from nexus_assets.qml.server import QMLServer
from nexus_assets.qml.synthetic import SyntheticProject
from nexus_assets_tests.loopback import API_KEY, COIN, ApiPipeline, api_catalog_text, secret_leaks

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

DAY = pd.Timestamp("2025-01-04")
FIRST, LAST = f"{COIN.key}|2025-01-03", f"{COIN.key}|2025-01-06"


def _project(cls=SyntheticProject):
    return cls(COIN.project_id, horizons=COIN.horizons, models_per_horizon=COIN.models_per_horizon, seed=COIN.seed,
               start=COIN.start_date, end=COIN.end_date)


class _Republished(SyntheticProject):
    """Upstream republishing day 4: one price changed, one row dropped, one model added."""

    def rows(self, start, end):
        rows = super().rows(start, end)
        on_day = rows.index[rows["time"] == DAY]
        if len(on_day) < 3:
            return rows
        rows.loc[on_day[0], "close_predict"] += 1.0
        added = rows.loc[[on_day[1]]].assign(symbol="5001.0_199999")
        rows = pd.concat([rows.drop(index=on_day[2]), added])
        return rows.sort_values(["time", "n_predict", "symbol"], kind="stable").reset_index(drop=True)


def _materialisations(result) -> dict[str, object]:
    return {
        str(e.step_materialization_data.materialization.partition): e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "qml_models"
    }


def _check(result):
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "qml_restatement"]
    return check


@pytest.fixture
def runs(tmp_path, monkeypatch):
    pipe = ApiPipeline(tmp_path, api_catalog_text(COIN))
    monkeypatch.setenv("QML_API_KEY", API_KEY)

    def run(project, first=FIRST, last=LAST, before=None):
        with QMLServer({COIN.project_id: (project, COIN.start_date)}, API_KEY) as server:
            monkeypatch.setenv("QML_API_BASE_URL", server.url)
            if before:
                before(pipe)
            result = pipe.run(first, last)
        assert result.success
        assert not secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir)
        return result

    return pipe, run


def test_first_materialisation_and_unchanged_rerun_are_not_restatements(runs):
    pipe, run = runs
    first = run(_project())
    check = _check(first)
    assert check.passed and check.metadata["partitions_compared"].value == 0
    second = run(_project())
    check = _check(second)
    assert check.passed and check.metadata["partitions_compared"].value == 4
    assert check.metadata["restated_partitions"].value == 0
    before, after = _materialisations(first), _materialisations(second)
    assert {k: m.tags["dagster/data_version"] for k, m in before.items()} == {k: m.tags["dagster/data_version"] for k, m in after.items()}
    assert not any(m.metadata["restated"].value for m in after.values())


def test_one_partition_run_has_its_payload_hash_as_data_version(runs):
    pipe, run = runs
    [materialisation] = _materialisations(run(_project(), FIRST, FIRST)).values()
    assert materialisation.tags["dagster/data_version"] == materialisation.metadata["payload_sha256"].value


def test_republished_day_gets_a_new_data_version_and_a_warning_saying_what_changed(runs):
    pipe, run = runs
    first = run(_project())
    old_file = pipe.file("qml_models", f"{COIN.key}|2025-01-04").read_bytes()

    def corrupt_unchanged_day(pipe):  # an unchanged day's file is never read: garbage there is harmless
        pipe.file("qml_models", f"{COIN.key}|2025-01-05").write_bytes(b"not parquet")

    restated = run(_project(_Republished), before=corrupt_unchanged_day)

    check = _check(restated)
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["restated_partitions"].value == 1 and check.metadata["partitions_compared"].value == 4
    assert (check.metadata["rows_added"].value, check.metadata["rows_removed"].value, check.metadata["rows_changed"].value) == (1, 1, 1)
    key = f"{COIN.key}|2025-01-04"
    detail = check.metadata["restatements"].value[key]
    old_sha = _materialisations(first)[key].metadata["payload_sha256"].value
    new_rows = pd.read_parquet(pipe.file("qml_models", key))
    assert detail["old_payload_sha256"] == old_sha and detail["new_payload_sha256"] == rows_sha256(new_rows) != old_sha
    changed = next(e for e in detail["examples"] if e["change"] == "changed")
    assert changed["fields"]["close_predict"]["new"] == pytest.approx(changed["fields"]["close_predict"]["old"] + 1.0)
    assert next(e for e in detail["examples"] if e["change"] == "added")["symbol"] == "5001.0_199999"
    assert key in check.description and "rows +1 -1 ~1" in check.description

    before, after = _materialisations(first), _materialisations(restated)
    assert after[key].tags["dagster/data_version"] != before[key].tags["dagster/data_version"]
    assert [k for k, m in after.items() if m.metadata["restated"].value] == [key]
    assert any(f"{key}: upstream restated this day" in m for m in pipe.log_messages(restated))
    assert pipe.file("qml_models", key).read_bytes() != old_file  # the new truth is stored
    assert "5001.0_199999" in set(new_rows["symbol"]) and not new_rows.duplicated(QML_KEY).any()

    again = run(_project(_Republished))  # compared with the restated version now: nothing new
    assert _check(again).passed


def test_empty_day_that_gains_rows_is_a_restatement(runs):
    """A day first published empty (a holiday), then filled in: rows added, recorded."""
    pipe, run = runs

    class Late(SyntheticProject):
        def rows(self, start, end):
            rows = super().rows(start, end)
            return rows[rows["time"] != DAY].reset_index(drop=True)

    run(_project(Late))
    assert pd.read_parquet(pipe.file("qml_models", f"{COIN.key}|2025-01-04")).empty
    filled = _check(run(_project()))
    assert not filled.passed
    detail = filled.metadata["restatements"].value[f"{COIN.key}|2025-01-04"]
    assert detail["rows_added"] == detail["new_rows"] == len(_project().rows(dt.date(2025, 1, 4), dt.date(2025, 1, 4)))
    assert detail["old_rows"] == 0 and detail["rows_removed"] == detail["rows_changed"] == 0


def test_restated_day_whose_stored_file_is_unreadable_is_still_recorded(runs):
    pipe, run = runs
    run(_project())
    key = f"{COIN.key}|2025-01-04"

    def corrupt_changed_day(pipe):
        pipe.file("qml_models", key).write_bytes(b"not parquet")

    check = _check(run(_project(_Republished), before=corrupt_changed_day))
    detail = check.metadata["restatements"].value[key]
    assert not check.passed and detail["old_rows"] is None and "missing or unreadable" in check.description
    assert len(pd.read_parquet(pipe.file("qml_models", key))) == detail["new_rows"]
