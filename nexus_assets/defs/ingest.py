"""Ingestion assets: ``qml_models`` (the day's raw QML rows) and ``horizon_slices`` (golden engine).

Both are asset x date partitioned and run as single-run backfills: a run may hold many dates of
one asset or one date of many assets, and each catalog asset in it is pulled from QML exactly once.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.
import datetime as dt
import hashlib
import warnings

import pandas as pd
from dagster import (
    AssetCheckResult,
    BetaWarning,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
    RetryRequested,
    asset,
)

from nexus_assets.catalog import Catalog
from nexus_assets.core.contract import (
    CONTRACT_VERSION,
    HORIZON_SLICES,
    ContractReport,
    ContractViolation,
    Problem,
    empty_qml_rows,
    validate_qml_rows,
)
from nexus_assets.core.freshness import DayStatus, classify_day
from nexus_assets.core.slicing import slice_horizons
from nexus_assets.defs.partitions import days_by_asset, partition_key
from nexus_assets.defs.resources import QMLResource
from nexus_assets.qml.client import QMLRequestError, QMLTransientError
from nexus_assets.settings import Settings

__all__ = ["QML_MODELS", "HORIZON_SLICES_ASSET", "CONTRACT_CHECK", "build_ingest_assets", "rows_sha256"]

QML_MODELS = "qml_models"
HORIZON_SLICES_ASSET = "horizon_slices"
CONTRACT_CHECK = "qml_contract"
GROUP = "nexus"
# Single-run backfills are the design (one pull per asset and run); Dagster marks the parameter
# beta and would warn on every code load.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")
# Daily data: warn when nothing new for a day and a bit, fail after two days.
DAILY_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=48), warn_window=dt.timedelta(hours=26))


def rows_sha256(rows: pd.DataFrame) -> str:
    """A content hash of a day's rows (order and values), stable across runs and machines."""
    if rows.empty:
        return hashlib.sha256(b"").hexdigest()
    hashed = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def _check_metadata(reports: dict[str, ContractReport]) -> dict:
    counts = {f"{asset}:{rule}": n for asset, r in reports.items() for rule, n in r.failure_counts.items()}
    return {
        "rows_checked": sum(r.rows for r in reports.values()),
        "assets_checked": len(reports),
        "failures": sum(counts.values()),
        "failure_counts": MetadataValue.json(counts),
        "contract_version": CONTRACT_VERSION,
    }


def build_ingest_assets(catalog: Catalog, partitions_def, settings: Settings) -> list:
    """The two ingestion assets for ``catalog`` on ``partitions_def``."""

    @asset(
        name=QML_MODELS,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        pool="qml_api",
        io_manager_key="parquet_io_manager",
        kinds={"python", "parquet"},
        freshness_policy=DAILY_FRESHNESS,
        check_specs=[
            AssetCheckSpec(
                CONTRACT_CHECK,
                asset=QML_MODELS,
                blocking=True,
                description="pandera: the pulled rows satisfy the QML contract (types, values, uniqueness, "
                "one target_var_price per day); failure counts per asset and rule",
            )
        ],
        description=(
            "The day's raw QML rows for one catalog asset (every child model and horizon), typed to the "
            "QML contract. Metadata per partition: rows, models, horizons, upstream watermark, payload "
            "hash, contract version, and the day's status (published, no session, holiday, outside history)."
        ),
    )
    def qml_models(context: AssetExecutionContext, qml: QMLResource):
        outputs: dict[str, pd.DataFrame] = {}
        reports: dict[str, ContractReport] = {}
        unpublished: list[str] = []
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            covered = [d for d in days if entry.covers(d)]
            pull = None
            if covered:
                try:
                    pull = qml.pull(entry, covered, log=context.log)
                except ContractViolation as exc:
                    reports[key] = ContractReport(0, exc.problems or (Problem("<payload>", str(exc), 1),))
                    continue
                except QMLRequestError as exc:
                    raise Failure(description=f"{key}: {exc}", allow_retries=False) from None
                except QMLTransientError as exc:
                    context.log.warning(f"{key}: QML still failing after the client's retries: {exc}")
                    raise RetryRequested(settings.unpublished_retries, settings.unpublished_retry_seconds) from None
                reports[key] = validate_qml_rows(pull.rows)
            pulled = pull.by_day() if pull is not None else {}
            for day in days:
                rows = pulled.get(day, empty_qml_rows())
                status = classify_day(entry, day, len(rows), pull.watermark if pull else None)
                if status is DayStatus.UNPUBLISHED:
                    unpublished.append(partition_key(key, day))
                outputs[partition_key(key, day)] = rows
                context.add_asset_metadata(_day_metadata(rows, status, pull), partition_key=partition_key(key, day))

        if any(not r.passed for r in reports.values()):
            # Report the failed check (the UI shows counts per rule), then fail: nothing is written.
            message = "\n".join(r.message(k) for k, r in reports.items() if not r.passed)
            yield AssetCheckResult(
                check_name=CONTRACT_CHECK,
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                metadata=_check_metadata(reports),
                description=message[:2000],
            )
            raise Failure(description=message, allow_retries=False)
        if unpublished:
            context.log.warning(
                f"upstream has not published {len(unpublished)} requested day(s) yet "
                f"({', '.join(unpublished[:5])}{'...' if len(unpublished) > 5 else ''}); "
                f"retrying in {settings.unpublished_retry_seconds}s"
            )
            raise RetryRequested(settings.unpublished_retries, settings.unpublished_retry_seconds)
        yield Output(outputs)
        yield AssetCheckResult(check_name=CONTRACT_CHECK, passed=True, metadata=_check_metadata(reports))

    @asset(
        name=HORIZON_SLICES_ASSET,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        kinds={"python", "parquet"},
        freshness_policy=DAILY_FRESHNESS,
        ins={"qml_models": AssetIn(key=QML_MODELS)},
        description=(
            "Golden engine (Nexus v2 section 2) as a long table per asset and date: date, horizon, "
            "symbol, forecast (close_predict), price (the day's first target_var_price for that horizon). "
            "Rows before the catalog's start_date are dropped."
        ),
    )
    def horizon_slices(context: AssetExecutionContext, qml_models: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        outputs = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            # One slicing and one validation per catalog asset and run, then split by day.
            rows = pd.concat([qml_models[partition_key(key, d)] for d in days], ignore_index=True)
            slices = HORIZON_SLICES.validate(slice_horizons(rows, entry.start_date))
            by_day = {stamp.date(): frame.reset_index(drop=True) for stamp, frame in slices.groupby("date", sort=True)}
            for day in days:
                day_slices = by_day.get(day, slices.iloc[0:0])
                per_horizon = day_slices.groupby("horizon")["symbol"].nunique()
                context.add_asset_metadata(
                    {
                        "rows": len(day_slices),
                        "horizons": MetadataValue.json([int(h) for h in per_horizon.index]),
                        "models_per_horizon": MetadataValue.json({str(h): int(n) for h, n in per_horizon.items()}),
                        "price": float(day_slices["price"].iloc[0]) if len(day_slices) else None,
                    },
                    partition_key=partition_key(key, day),
                )
                outputs[partition_key(key, day)] = day_slices
        return outputs

    return [qml_models, horizon_slices]


def _day_metadata(rows: pd.DataFrame, status: DayStatus, pull) -> dict:
    return {
        "status": status.value,
        "rows": len(rows),
        "models": int(rows["symbol"].nunique()),
        "horizons": MetadataValue.json(sorted(int(h) for h in rows["n_predict"].unique())),
        "upstream_watermark": pull.watermark.date().isoformat() if pull is not None and pull.watermark is not None else None,
        "payload_sha256": rows_sha256(rows),
        "contract_version": pull.contract_version if pull is not None else CONTRACT_VERSION,
        "source": pull.source if pull is not None else None,
    }
