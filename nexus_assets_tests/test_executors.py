"""NEXUS_EXECUTOR: the executor the definitions use, and the Celery config both sides read."""

import pytest
from dagster import in_process_executor, multiprocess_executor

from nexus_assets.executors import DEFAULT_CELERY_CONFIG, celery_app_args, executor_from_env


def test_the_default_and_the_local_executors():
    assert executor_from_env({}) is in_process_executor
    assert executor_from_env({"NEXUS_EXECUTOR": " "}) is in_process_executor
    assert executor_from_env({"NEXUS_EXECUTOR": "multiprocess"}) is multiprocess_executor


def test_an_unknown_executor_names_the_choices():
    with pytest.raises(ValueError, match=r"NEXUS_EXECUTOR must be one of \['celery', 'in_process', 'multiprocess'\]"):
        executor_from_env({"NEXUS_EXECUTOR": "dask"})


def test_celery_without_its_config_file_says_where_it_looked(tmp_path):
    pytest.importorskip("dagster_celery")
    with pytest.raises(ValueError, match="NEXUS_CELERY_CONFIG: no Celery executor config at .*nowhere.yaml"):
        executor_from_env({"NEXUS_EXECUTOR": "celery", "NEXUS_CELERY_CONFIG": str(tmp_path / "nowhere.yaml")})


def test_the_shipped_celery_config_reaches_the_executor_by_variable_name_and_the_workers_resolved(monkeypatch):
    pytest.importorskip("dagster_celery")
    monkeypatch.delenv("NEXUS_CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("NEXUS_CELERY_BACKEND_URL", raising=False)
    # the definitions load without the broker's URL (webserver, daemon); a run resolves it
    executor = executor_from_env({"NEXUS_EXECUTOR": "celery"})
    assert executor.name == "celery"
    assert not executor.config_schema.resolve_config({}).success
    monkeypatch.setenv("NEXUS_CELERY_BROKER_URL", "redis://:s3cret@10.0.0.5:6379/0")
    monkeypatch.setenv("NEXUS_CELERY_BACKEND_URL", "redis://:s3cret@10.0.0.5:6379/1")
    assert executor.config_schema.resolve_config({}).value["config"]["broker"] == "redis://:s3cret@10.0.0.5:6379/0"
    args = celery_app_args({})
    assert args["broker"] == "redis://:s3cret@10.0.0.5:6379/0" and args["backend"].endswith("/1")
    settings = args["config_source"]
    # the settings that make a dead worker's step come back (docs in the yaml)
    assert settings.task_acks_late and settings.task_reject_on_worker_lost
    assert settings.broker_transport_options["visibility_timeout"] == 7200
    assert DEFAULT_CELERY_CONFIG.is_file()
