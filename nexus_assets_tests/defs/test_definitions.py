"""The Dagster layer: definitions load, names are stable, partitions and schedule are right."""

import datetime as dt

from dagster import AssetKey, build_schedule_context

from nexus_assets.definitions import MAIN_JOB, build_definitions
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.settings import Settings

# in pipeline order; a rename is a decision
ASSET_KEYS = ["qml_models", "features", "horizon_slices", "qml_model_metadata", "horizon_ensembles", "ml_models",
              "horizon_search", "ml_predictions", "ml_signals", "signals", "metrics", "dashboard"]


def test_module_definitions_load_with_bundled_catalog():
    import nexus_assets.definitions as module

    repo = module.defs.get_repository_def()
    assert sorted(k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()) == sorted(ASSET_KEYS)


def test_asset_and_check_names_are_a_decision(pipeline):
    defs = pipeline().defs
    graph = defs.get_repository_def().asset_graph
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(ASSET_KEYS)
    checks = sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys)
    assert checks == [
        "qml_model_metadata:qml_model_churn",
        "qml_models:fresh_9001_SP500",
        "qml_models:fresh_9003_WTI_Crude",
        "qml_models:qml_contract",
        "qml_models:qml_restatement",
    ]
    order = [k.to_user_string() for k in graph.toposorted_asset_keys]
    assert order == ASSET_KEYS
    node = graph.get(AssetKey("qml_models"))
    assert node.group_name == "nexus" and not node.pools  # the sandbox calls no upstream: no pool to share


def test_every_asset_that_calls_upstream_holds_the_qml_api_pool_when_the_catalog_has_an_api_asset(pipeline):
    from nexus_assets_tests.defs.conftest import sandbox_catalog_text

    graph = pipeline(sandbox_catalog_text(source="api")).defs.get_repository_def().asset_graph
    pooled = sorted(k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).pools == {"qml_api"})
    assert pooled == ["qml_model_metadata", "qml_models"]  # horizon_ensembles too with ensemble_source = upstream


def test_partitions_are_asset_by_date(pipeline):
    defs = pipeline().defs
    partitions = defs.resolve_job_def(MAIN_JOB).partitions_def
    assert [d.name for d in partitions.partitions_defs] == ["asset", "date"]
    keys = partitions.get_partition_keys()
    assert keys[0] == "9001_SP500|2018-01-01"
    assert "9003_WTI_Crude|2018-12-31" in keys and "9003_WTI_Crude|2019-01-01" not in keys
    assert len(keys) == 2 * 365


def test_daily_schedule_is_one_run_for_every_asset(pipeline):
    defs = pipeline().defs
    schedule = defs.resolve_schedule_def("nexus_daily")
    assert schedule.default_status.value == "STOPPED"
    context = build_schedule_context(scheduled_execution_time=dt.datetime(2018, 6, 5, 6, 30, tzinfo=dt.UTC))
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.tags[RANGE_START_TAG] == "9001_SP500|2018-06-04"
    assert request.tags[RANGE_END_TAG] == "9003_WTI_Crude|2018-06-04"
    later = build_schedule_context(scheduled_execution_time=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    [request] = schedule.evaluate_tick(later).run_requests
    assert request.tags[RANGE_START_TAG].endswith("2018-12-31")  # a closed history keeps its last day


def test_api_credentials_come_from_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("QML_API_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("QML_API_KEY", "k-123-secret")
    defs = build_definitions(Settings.from_env())
    resource = defs.resources["qml"]
    assert type(resource.api_key).__name__ == "EnvVar" and resource.api_key.env_var_name == "QML_API_KEY"


def test_every_table_the_io_manager_stores_has_a_schema():
    """A new stored table comes with its contract (core/contract.py STORED_TABLES)."""
    import nexus_assets.definitions as module
    from nexus_assets.core.contract import STORED_TABLES
    from nexus_assets.defs.storage import TABLES_METADATA

    stored = []
    for spec in module.defs.get_repository_def().asset_graph.asset_nodes:
        node = spec
        if node.io_manager_key != "parquet_io_manager" or node.key.to_user_string() == "dashboard":
            continue  # the dashboard writes its pages itself and hands the IO manager nothing
        tables = (node.metadata or {}).get(TABLES_METADATA)
        tables = getattr(tables, "value", tables)
        stored += list(tables) if tables else [node.key.path[-1]]
    assert sorted(stored) == sorted(STORED_TABLES)
