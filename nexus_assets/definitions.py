"""Assembles the Dagster definitions; nothing else happens here."""

from __future__ import annotations

import gc
import os

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job

from nexus_assets.defs.checks import build_freshness_checks
from nexus_assets.defs.dashboard import build_dashboard_assets
from nexus_assets.defs.ensembles import build_ensemble_assets
from nexus_assets.defs.ingest import build_ingest_assets
from nexus_assets.defs.metrics import build_metric_assets
from nexus_assets.defs.ml import build_ml_assets
from nexus_assets.defs.ml_signals import build_ml_signal_assets
from nexus_assets.defs.model_metadata import build_model_metadata_assets
from nexus_assets.defs.partitions import asset_date_partitions
from nexus_assets.defs.resources import QMLResource
from nexus_assets.defs.schedules import build_daily_schedule
from nexus_assets.defs.search import build_search_assets
from nexus_assets.defs.signals import build_signal_assets
from nexus_assets.defs.steps import GROUP
from nexus_assets.defs.storage import ParquetPartitionIOManager
from nexus_assets.executors import executor_from_env
from nexus_assets.settings import Settings

__all__ = ["MAIN_JOB", "build_definitions", "defs"]

MAIN_JOB = "nexus_main"


def _env(name: str):
    # An EnvVar shows its name, never its value, in the UI; unset means "not configured".
    return EnvVar(name) if os.environ.get(name) else None


def build_definitions(settings: Settings) -> Definitions:
    catalog = settings.catalog()
    partitions = asset_date_partitions(catalog)
    assets = (
        build_ingest_assets(catalog, partitions, settings)
        + build_model_metadata_assets(catalog, partitions)
        + build_ml_assets(catalog, partitions)
        + build_ml_signal_assets(catalog, partitions)
        + build_ensemble_assets(catalog, partitions)
        + build_search_assets(catalog, partitions)
        + build_signal_assets(catalog, partitions)
        + build_metric_assets(catalog, partitions)
        + build_dashboard_assets(catalog, partitions, settings)
    )
    main_job = define_asset_job(
        MAIN_JOB,
        selection=AssetSelection.groups(GROUP),
        partitions_def=partitions,
        description="Every Nexus asset for a partition range (asset x date).",
    )
    return Definitions(
        assets=assets,
        asset_checks=build_freshness_checks(catalog),
        jobs=[main_job],
        schedules=[build_daily_schedule(catalog, main_job)],
        resources={
            "qml": QMLResource(
                base_url=_env("QML_API_BASE_URL"),
                api_key=_env("QML_API_KEY"),
                pull_deadline_seconds=settings.qml_pull_deadline_seconds,
                max_response_bytes=settings.qml_max_response_bytes,
            ),
            "parquet_io_manager": ParquetPartitionIOManager(base_dir=settings.data_dir),
        },
        executor=executor_from_env(),  # NEXUS_EXECUTOR (nexus_assets/executors.py)
    )


defs = build_definitions(Settings.from_env())

# What is loaded by now (Dagster, pandas, the definitions: ~290k objects) lives as long as the
# process, so it leaves the garbage collector's generations: full collections during a run, and
# the one at exit (~1 s of CPU), no longer walk it again.
gc.freeze()
