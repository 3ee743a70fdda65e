"""qml_models and horizon_slices through Dagster: range runs, metadata, checks, idempotence, sources."""

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.core.contract import HORIZON_SLICES, validate_qml_rows
from nexus_assets.qml.server import QMLServer
from nexus_assets.qml.synthetic import SyntheticProject
from nexus_assets_tests.defs.conftest import sandbox_catalog_text

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

FIRST, LAST = "9001_SP500|2018-01-01", "9003_WTI_Crude|2018-01-10"


def metadata_by_partition(result, asset_key):
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key.to_user_string() == asset_key:
            out[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return out


@pytest.fixture(scope="module")
def sandbox_run(tmp_path_factory):
    from nexus_assets_tests.defs.conftest import Pipeline

    pipe = Pipeline(tmp_path_factory.mktemp("sandbox"), sandbox_catalog_text())
    result = pipe.run(FIRST, LAST)
    return pipe, result


def test_range_run_materialises_every_key_in_one_run(sandbox_run):
    pipe, result = sandbox_run
    assert result.success
    for asset_key in ("qml_models", "horizon_slices"):
        meta = metadata_by_partition(result, asset_key)
        assert len(meta) == 20  # 2 assets x 10 days, one run
        assert len(pipe.files(asset_key)) == 20


def test_qml_models_partition_content_and_metadata(sandbox_run):
    pipe, result = sandbox_run
    meta = metadata_by_partition(result, "qml_models")
    tuesday = meta["9001_SP500|2018-01-02"]
    # each horizon has its own child models (own parent ids), as in real QML output
    assert tuesday["status"] == "published" and tuesday["rows"] == tuesday["models"]
    assert tuesday["models"] >= 5 * 60 and tuesday["horizons"] == [1, 3, 5, 8, 13]
    assert tuesday["upstream_watermark"] == "2018-12-31" and tuesday["contract_version"] == "1"
    assert len(tuesday["payload_sha256"]) == 64
    assert meta["9001_SP500|2018-01-06"]["status"] == "no_session" and meta["9001_SP500|2018-01-06"]["rows"] == 0
    assert meta["9001_SP500|2018-01-01"]["status"] == "holiday"  # New Year: a weekday with no session
    rows = pd.read_parquet(pipe.file("qml_models", "9001_SP500|2018-01-02"))
    assert validate_qml_rows(rows).passed and (rows["time"] == pd.Timestamp("2018-01-02")).all()
    assert pd.read_parquet(pipe.file("qml_models", "9001_SP500|2018-01-06")).empty


def test_each_partition_of_a_range_run_carries_the_size_of_its_own_file(sandbox_run):
    """Not the run's totals on every partition (what the IO manager's output metadata gave)."""
    pipe, result = sandbox_run
    for asset_key in ("qml_models", "horizon_slices"):
        meta = metadata_by_partition(result, asset_key)
        sizes = {key: pipe.file(asset_key, key).stat().st_size for key in meta}
        assert {key: m["bytes_written"] for key, m in meta.items()} == sizes
        assert {m["files_written"] for m in meta.values()} == {1}
        assert len(set(sizes.values())) > 1  # the days differ, so would a run-wide figure
        assert {m["root"] for m in meta.values()} == {str(pipe.data_dir / asset_key)}


def test_a_multi_table_partition_counts_its_own_tables(sandbox_run):
    pipe, result = sandbox_run
    meta = metadata_by_partition(result, "signals")
    key = "9001_SP500|2018-01-02"
    files = [pipe.data_dir / "signals" / t / "asset=9001_SP500" / "date=2018-01-02.parquet" for t in ("signals", "slopes")]
    assert meta[key]["files_written"] == 2 and meta[key]["bytes_written"] == sum(f.stat().st_size for f in files)


def test_horizon_slices_content(sandbox_run):
    pipe, _ = sandbox_run
    key = "9003_WTI_Crude|2018-01-03"
    slices = HORIZON_SLICES.validate(pd.read_parquet(pipe.file("horizon_slices", key)))
    rows = pd.read_parquet(pipe.file("qml_models", key))
    assert len(slices) == len(rows)
    assert (slices["price"] == rows["target_var_price"].iloc[0]).all()


def test_contract_check_passed(sandbox_run):
    _, result = sandbox_run
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["qml_contract"].passed
    assert evaluations["qml_contract"].metadata["failures"].value == 0


def test_rerun_of_one_partition_is_byte_identical(sandbox_run, tmp_path):
    pipe, _ = sandbox_run
    before = {k: pipe.files(k) for k in ("qml_models", "horizon_slices")}
    again = pipe.run("9003_WTI_Crude|2018-01-03", "9003_WTI_Crude|2018-01-03")
    assert again.success
    assert {k: pipe.files(k) for k in before} == before


def test_api_source_against_qml_server_gives_the_same_files(sandbox_run, pipeline, monkeypatch):
    from nexus_assets.catalog import load_catalog
    from nexus_assets.qml.server import projects_from_catalogs

    sandbox, _ = sandbox_run
    projects = projects_from_catalogs([load_catalog(sandbox.catalog_path)])
    with QMLServer(projects, "test-key-0001") as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        monkeypatch.setenv("QML_API_KEY", "test-key-0001")
        api = pipeline(sandbox_catalog_text(source="api"))
        result = api.run(FIRST, LAST)
        assert result.success
        # per catalog asset, one pull for the whole range and one model-metadata request
        assert server.data_requests == 4
    for asset_key in ("qml_models", "horizon_slices"):
        assert api.files(asset_key) == sandbox.files(asset_key)
    meta = metadata_by_partition(result, "qml_models")
    assert meta["9001_SP500|2018-01-02"]["source"] == "api"
    assert "test-key-0001" not in repr(meta)


class _BrokenProject(SyntheticProject):
    """Upstream that publishes a duplicate row and a negative price."""

    def rows(self, start, end):
        rows = super().rows(start, end)
        rows.loc[rows.index[0], "close_predict"] = -1.0
        return pd.concat([rows, rows.iloc[[1]]], ignore_index=True)


API_ASSET = """
[[assets]]
key = "1860_Bitcoin"
project_id = 1860
name = "Bitcoin"
display_name = "Bitcoin"
category = "Crypto"
calendar = "crypto"
start_date = 2025-01-01
source = "api"
"""


def test_contract_violation_fails_blocking_check_and_keeps_stored_files(pipeline, monkeypatch):
    good = SyntheticProject(1860, horizons=(1, 2), models_per_horizon=5, start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 20))
    bad = _BrokenProject(1860, horizons=(1, 2), models_per_horizon=5, start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 20))
    monkeypatch.setenv("QML_API_KEY", "k")
    monkeypatch.setenv("QML_API_BASE_URL", "http://127.0.0.1:1")  # set before the definitions load
    pipe = pipeline(API_ASSET)
    with QMLServer({1860: (good, dt.date(2025, 1, 1))}, "k") as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        assert pipe.run("1860_Bitcoin|2025-01-02", "1860_Bitcoin|2025-01-03").success
    stored = pipe.files("qml_models")
    with QMLServer({1860: (bad, dt.date(2025, 1, 1))}, "k") as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        result = pipe.run("1860_Bitcoin|2025-01-01", "1860_Bitcoin|2025-01-03")
    assert not result.success
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "qml_contract"]
    assert not check.passed and check.metadata["failures"].value >= 2
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "close_predict" in message and "greater_than(0)" in message and "unique" in message
    assert "symbol=" in message  # offending rows are shown
    assert pipe.files("qml_models") == stored  # nothing overwritten, nothing added
    assert not any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)


def test_unpublished_day_is_a_retryable_failure(pipeline, monkeypatch):
    late = SyntheticProject(1860, horizons=(1,), models_per_horizon=3, start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 5))
    monkeypatch.setenv("QML_API_KEY", "k")
    monkeypatch.setenv("QML_API_BASE_URL", "http://127.0.0.1:1")
    pipe = pipeline(API_ASSET, unpublished_retries=1, unpublished_retry_seconds=0)
    with QMLServer({1860: (late, dt.date(2025, 1, 1))}, "k") as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        result = pipe.run("1860_Bitcoin|2025-01-05", "1860_Bitcoin|2025-01-07")
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert kinds.count("STEP_UP_FOR_RETRY") == 1 and "STEP_RESTARTED" in kinds  # retried once, then gave up
    assert server.data_requests == 2
    assert not pipe.files("qml_models")
