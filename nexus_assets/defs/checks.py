"""Freshness checks: one per catalog asset, comparing the upstream watermark and the latest
materialised day of ``qml_models`` with what the asset's calendar expects by today.

(Dagster's own ``build_time_partition_freshness_checks`` does not execute on an asset x date
grid, and freshness policies judge a whole asset: one fresh asset would hide a stale one.)
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.
import datetime as dt

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetRecordsFilter,
    multi_asset_check,
)

from nexus_assets.catalog import Catalog
from nexus_assets.core.freshness import freshness_status
from nexus_assets.defs.ingest import QML_MODELS
from nexus_assets.defs.partitions import partition_key, split_key

__all__ = ["freshness_check_name", "build_freshness_checks"]


def freshness_check_name(asset: str) -> str:
    return f"fresh_{asset}"


def build_freshness_checks(catalog: Catalog):
    specs = [
        AssetCheckSpec(
            freshness_check_name(entry.key),
            asset=QML_MODELS,
            description=f"{entry.display_name}: upstream watermark and latest materialised day are at least "
            f"the last {entry.calendar} session before today",
        )
        for entry in catalog.assets
    ]

    @multi_asset_check(specs=specs, name="qml_models_freshness")
    def qml_models_freshness(context: AssetCheckExecutionContext):
        instance = context.instance
        key = AssetKey(QML_MODELS)
        latest: dict[str, dt.date] = {}
        for materialised in instance.get_materialized_partitions(key):
            asset, day = split_key(materialised)
            latest[asset] = max(latest.get(asset, day), day)
        today = dt.datetime.now(dt.UTC).date()
        for entry in catalog.assets:
            last_day = latest.get(entry.key)
            watermark = None
            if last_day is not None:
                records = instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=key, asset_partitions=[partition_key(entry.key, last_day)]), limit=1
                ).records
                value = records[0].asset_materialization.metadata.get("upstream_watermark") if records else None
                watermark = dt.date.fromisoformat(value.value) if value is not None and value.value else None
            status = freshness_status(entry, today, last_day, watermark)
            yield AssetCheckResult(
                asset_key=key,
                check_name=freshness_check_name(entry.key),
                passed=status.fresh,
                severity=AssetCheckSeverity.WARN,
                description=status.describe(),
                metadata={
                    "expected_day": status.expected.isoformat() if status.expected else None,
                    "latest_materialised_day": last_day.isoformat() if last_day else None,
                    "upstream_watermark": watermark.isoformat() if watermark else None,
                    "lag_days": status.lag_days,
                    "upstream_late": status.upstream_late,
                    "pipeline_late": status.pipeline_late,
                },
            )

    return [qml_models_freshness]
