"""Where a run's steps execute, chosen by ``NEXUS_EXECUTOR``.

- ``in_process`` (default): every step in the run's own process (a multiprocess step re-imports
  the code location, ~1.5 s a step, and a range run's steps are sequential anyway);
- ``multiprocess``: independent steps of one run side by side, each in its own process;
- ``celery``: each step is a task on Redis, executed by any Celery worker that listens
  (``celery -A nexus_assets.celery_worker worker``), on this machine or another. Configured by the
  file ``NEXUS_CELERY_CONFIG`` (default: the repository's ``deploy/celery/celery.yaml``), which
  names the broker and result store by environment variable (``NEXUS_CELERY_BROKER_URL``,
  ``NEXUS_CELERY_BACKEND_URL``); the run worker and the Celery workers read the same file.
  Needs the ``deploy`` extra (dagster-celery) and a persistent instance (docs/production.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

__all__ = ["DEFAULT_CELERY_CONFIG", "EXECUTOR_NAMES", "celery_app_args", "celery_config_path", "executor_from_env"]

EXECUTOR_NAMES = ("celery", "in_process", "multiprocess")
DEFAULT_CELERY_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "celery" / "celery.yaml"


def celery_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    path = Path(env.get("NEXUS_CELERY_CONFIG") or DEFAULT_CELERY_CONFIG)
    if not path.is_file():
        raise ValueError(f"NEXUS_CELERY_CONFIG: no Celery executor config at {path} (see deploy/celery/celery.yaml)")
    return path


def _celery_executor(env: Mapping[str, str]) -> ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
        from dagster_celery.cli import get_config_value_from_yaml
    except ImportError as exc:
        raise ValueError("NEXUS_EXECUTOR=celery needs dagster-celery: pip install -e '.[deploy]'") from exc
    # The file's `{env: ...}` references stay unresolved here: Dagster resolves them where the run
    # executes, and the UI and run records show the variables' names, never the broker's password.
    return celery_executor.configured(dict(get_config_value_from_yaml(str(celery_config_path(env)))),
                                      name="celery")


def executor_from_env(env: Mapping[str, str] | None = None) -> ExecutorDefinition:
    env = os.environ if env is None else env
    name = env.get("NEXUS_EXECUTOR", "in_process").strip() or "in_process"
    if name not in EXECUTOR_NAMES:
        raise ValueError(f"NEXUS_EXECUTOR must be one of {list(EXECUTOR_NAMES)}, got {name!r}")
    if name == "celery":
        return _celery_executor(env)
    return {"in_process": in_process_executor, "multiprocess": multiprocess_executor}[name]


def celery_app_args(env: Mapping[str, str] | None = None) -> dict:
    """The Celery app's arguments for a worker: the same file as the executor's, with the
    environment's values resolved in this process (so the broker URL is written nowhere)."""
    from dagster_celery.cli import get_validated_config
    from dagster_celery.executor import CeleryExecutor

    config = get_validated_config(str(celery_config_path(env)))
    return CeleryExecutor.for_cli(**{k: config.get(k) for k in ("broker", "backend", "include", "config_source")}).app_args()
