"""``qml_model_metadata``: the child models known as of each date, for monitoring.

Per asset and date: every model ``qml_models`` had up to the date (``first_seen``, ``last_seen``,
``live``), with upstream's description of it (algorithm, training window, code version, anything
else) where upstream's metadata endpoint offers one *for that date*. Upstream describes its models
as they are now, as of its watermark; a date before that watermark cannot honestly carry today's
description, so it keeps the description recorded when it was itself the latest day (read back
from its stored partition), or none: ``metadata_source = "qml_models"``, derived from
``qml_models`` alone. An upstream without the endpoint (today's quantum_ml) is not an error: every
date is derived from ``qml_models`` alone, and its metadata says so. See ``docs/model-metadata.md``.

Per partition: models added, retired and changed since the day before; the ``qml_model_churn``
check (WARN) flags a horizon that loses more than the catalog's ``model_loss_warn_share`` of its
live models in one day, and any change of a model's ``code_version``.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.
import datetime as dt
import functools
import itertools
from collections.abc import Callable, Iterator

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
)

from nexus_assets.catalog import Catalog
from nexus_assets.core.model_metadata import (
    DESCRIBED,
    churn_alerts,
    churns,
    iter_rosters,
    metadata_tables,
    normalise_upstream,
)
from nexus_assets.defs.ingest import QML_MODELS
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import days_by_asset, partition_key
from nexus_assets.defs.resources import QMLResource
from nexus_assets.defs.steps import step_asset_args, upstream_errors
from nexus_assets.defs.storage import ParquetPartitionIOManager, PartitionFrames

__all__ = ["QML_MODEL_METADATA", "CHURN_CHECK", "build_model_metadata_assets"]

QML_MODEL_METADATA = "qml_model_metadata"
CHURN_CHECK = "qml_model_churn"
_ROW_COLUMNS = ["symbol", "time", "n_predict"]
_BATCH_DATES = 16  # dates whose tables are made together (typing them at once is cheaper)
_SHOWN = 20


def build_model_metadata_assets(catalog: Catalog, partitions_def) -> list:
    calls_upstream = any(a.source == "api" for a in catalog.assets)

    @asset(
        name=QML_MODEL_METADATA,
        **step_asset_args(partitions_def),
        **({"pool": "qml_api"} if calls_upstream else {}),
        ins={"qml_models": AssetIn(key=QML_MODELS)},
        check_specs=[
            AssetCheckSpec(
                CHURN_CHECK,
                asset=QML_MODEL_METADATA,
                description="warns when a horizon loses more than the catalog's model_loss_warn_share of its live "
                "child models from one day to the next, or a model's code_version changes",
            )
        ],
        description=(
            "The child models known as of the date, one row per horizon and symbol: first_seen and last_seen "
            "(from qml_models, up to the date), live (published on the horizon's latest day with rows), and "
            "upstream's description (algorithm, training_window, code_version, other fields as JSON) where "
            "upstream's metadata endpoint describes the date; metadata_source says which. Metadata per partition: "
            "models added, retired and changed since the day before."
        ),
    )
    def qml_model_metadata(
        context: AssetExecutionContext,
        qml: QMLResource,
        parquet_io_manager: ResourceParam[ParquetPartitionIOManager],
        qml_models: PartitionFrames,
    ):
        outputs: dict[str, pd.DataFrame] = {}
        metadata: dict[str, dict] = {}
        alerts: dict[str, list[str]] = {}
        key_path = list(context.asset_key.path)
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            # every date of the run and the day before each (churn compares a date with the day before)
            dates = sorted({*days, *(day - dt.timedelta(days=1) for day in days)})
            run_days = set(days)
            latest = functools.partial(_latest_day_with_rows, qml_models, key, dates[-1])
            described_now, as_of, why = _upstream(context, qml, entry, latest)
            # first_seen needs every earlier day: the history is read a few days at a time and folded
            # into the models' first and last days, and the tables are made a few dates at a time
            rosters = iter_rosters(qml_models.iter_days(key, through=dates[-1], columns=_ROW_COLUMNS), dates)
            before = None  # the table of the date before the batch's first
            for batch in _batches(rosters, _BATCH_DATES):
                described, sources = {}, {}
                for day in batch:
                    if described_now is not None and day >= as_of:
                        described[day], sources[day] = described_now, "upstream"
                    else:
                        described[day] = _recorded(parquet_io_manager, key_path, partition_key(key, day))
                        sources[day] = ("upstream (recorded when the date was upstream's latest)"
                                        if described[day] is not None else why)
                tables = metadata_tables(batch, described)
                # in date order each date of the run follows the day before it
                changes = dict(zip(batch, churns([before, *tables.values()])))
                before = list(tables.values())[-1]
                for day in batch:
                    if day not in run_days:
                        continue
                    table, source, change = tables[day], sources[day], changes[day]
                    pk = partition_key(key, day)
                    outputs[pk] = table
                    found = churn_alerts(change, entry.model_loss_warn_share)
                    if found:
                        alerts[pk] = found
                    metadata[pk] = {
                        "metadata_source": source,
                        "models": int(table["live"].sum()),
                        "models_known": len(table),
                        "models_added": change.count("added"),
                        "models_retired": change.count("retired"),
                        "models_changed": change.count("changed"),
                        "code_version_changes": change.code_version_change_count(),
                        "per_horizon": MetadataValue.json(change.per_horizon_records()),
                        "changes": MetadataValue.json(change.change_records(_SHOWN)),
                    }
        attach_partition_metadata(context, metadata)
        yield Output(outputs)
        yield _churn_result(len(outputs), alerts)

    return [qml_model_metadata]


def _batches(pairs: Iterator[tuple[dt.date, pd.DataFrame]], size: int) -> Iterator[dict[dt.date, pd.DataFrame]]:
    while batch := dict(itertools.islice(pairs, size)):
        yield batch


def _latest_day_with_rows(qml_models: PartitionFrames, key: str, through: dt.date) -> dt.date | None:
    """The latest day with rows the step knows of: the first stored day after ``through`` that has
    rows (whether a later day has any is all that matters), else the latest on or before it."""
    stored = qml_models.stored_days(key)  # one listing, in date order
    later = [day for day in stored if day > through]
    earlier = [day for day in reversed(stored) if day <= through]
    for day in (*later, *earlier):
        if len(qml_models.read_stored(stored[day], columns=["time"])):
            return day
    return None


def _upstream(context, qml: QMLResource, entry,
              latest_day: Callable[[], dt.date | None]) -> tuple[pd.DataFrame | None, dt.date, str]:
    """Upstream's description now, the first date it may describe, and what a date it does not
    describe says about its source (``latest_day``: the latest day with rows, asked only when
    upstream does not say which day it describes)."""
    with upstream_errors(context, entry.key, "/get_qml_model_metadata", "upstream's model metadata"):
        snapshot = qml.model_metadata(entry, log=context.log)
    if snapshot is None:
        return None, dt.date.max, "qml_models (upstream offers no model metadata endpoint)"
    raw, watermark = snapshot
    try:
        described = normalise_upstream(raw)
    except ValueError as exc:
        raise Failure(description=f"{entry.key}: {exc}", allow_retries=False) from None
    if watermark is None:  # upstream did not say: it describes at least the latest day with rows
        as_of = latest_day()
        if as_of is None:
            return None, dt.date.max, "qml_models (no day with rows yet for upstream's description to describe)"
        return described, as_of, "qml_models (upstream's metadata describes today, and later days have rows; none recorded)"
    as_of = watermark.date()
    return described, as_of, f"qml_models (upstream's metadata describes {as_of}, after this date; none recorded)"


def _recorded(io: ParquetPartitionIOManager, key_path: list[str], partition: str) -> pd.DataFrame | None:
    """The upstream description a stored partition recorded, or None."""
    stored = io.stored(key_path, partition)
    if stored is None or "metadata_source" not in stored.columns:
        return None
    described = stored[stored["metadata_source"] == "upstream"]
    if described.empty:
        return None
    return described[["horizon", "symbol", *DESCRIBED]].assign(horizon=described["horizon"].astype("Int64"))


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if pd.isna(v) else (int(v) if k == "horizon" else v)) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _churn_result(checked: int, alerts: dict[str, list[str]]) -> AssetCheckResult:
    shown = dict(sorted(alerts.items())[:_SHOWN])
    if alerts:
        description = f"model churn in {len(alerts)} of {checked} partition(s): " + "; ".join(
            f"{key}: {', '.join(lines[:5])}{' ...' if len(lines) > 5 else ''}" for key, lines in shown.items())
    else:
        description = f"no horizon lost more than its share of models and no code_version changed in {checked} partition(s)"
    return AssetCheckResult(
        check_name=CHURN_CHECK,
        passed=not alerts,
        severity=AssetCheckSeverity.WARN,
        description=description[:2000],
        metadata={"partitions_checked": checked, "partitions_warned": len(alerts),
                  "alerts": MetadataValue.json({k: v[:_SHOWN] for k, v in shown.items()})},
    )
