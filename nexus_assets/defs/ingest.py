"""Ingestion assets: ``qml_models`` (the day's raw QML rows) and ``horizon_slices`` (golden engine).

Both are asset x date partitioned and run as single-run backfills: a run may hold many dates of
one asset or one date of many assets, and each catalog asset in it is pulled from QML exactly once.

Restatements are recorded, never silent: each ``qml_models`` partition's payload hash is compared
with the one recorded at its latest materialisation; a day that changed upstream gets a new data
version and a warning (the ``qml_restatement`` check) saying what changed.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.
import hashlib
from typing import NamedTuple

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    Config,
    DagsterEventType,
    DagsterInstance,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    RetryRequested,
    asset,
)
from pydantic import Field

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
from nexus_assets.core.parallel import ordered_map
from nexus_assets.core.restatement import Restatement, day_hashes, diff_rows, rows_sha256
from nexus_assets.core.slicing import slice_horizons
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import days_by_asset, partition_key
from nexus_assets.defs.resources import QMLResource
from nexus_assets.defs.steps import step_asset_args
from nexus_assets.defs.storage import ParquetPartitionIOManager, PartitionFrames
from nexus_assets.qml.client import QMLLimitError, QMLRequestError, QMLTransientError
from nexus_assets.settings import Settings

__all__ = [
    "QML_MODELS",
    "HORIZON_SLICES_ASSET",
    "CONTRACT_CHECK",
    "RESTATEMENT_CHECK",
    "QMLModelsConfig",
    "build_ingest_assets",
]

QML_MODELS = "qml_models"
HORIZON_SLICES_ASSET = "horizon_slices"
CONTRACT_CHECK = "qml_contract"
RESTATEMENT_CHECK = "qml_restatement"
_RESTATEMENTS_SHOWN = 20


class QMLModelsConfig(Config):
    """Run config of ``qml_models``: ``ops: {qml_models: {config: {accept_empty_restatements: true}}}``."""

    accept_empty_restatements: bool = Field(
        default=False,
        description="Store a pulled empty day over a stored non-empty one, as a restatement (upstream withdrew "
        "that day's rows). Off by default: a pull that would empty a stored day fails and writes nothing.",
    )


def _check_metadata(reports: dict[str, ContractReport]) -> dict:
    counts = {f"{asset}:{rule}": n for asset, r in reports.items() for rule, n in r.failure_counts.items()}
    return {
        "rows_checked": sum(r.rows for r in reports.values()),
        "assets_checked": len(reports),
        "failures": sum(counts.values()),
        "failure_counts": MetadataValue.json(counts),
        "contract_version": CONTRACT_VERSION,
    }


def _recorded_hashes(instance: DagsterInstance, partitions: list[str]) -> dict[str, str]:
    """``payload_sha256`` of each partition's latest ``qml_models`` materialisation (two queries)."""
    key = AssetKey(QML_MODELS)
    latest = instance.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION, set(partitions))
    if not latest:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    hashes = {}
    for record in records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("payload_sha256") if materialization else None
        if value is not None:
            hashes[str(materialization.partition)] = value.value
    return hashes


def _data_version(hashes: dict[str, str]) -> DataVersion:
    """Dagster 1.13 gives every partition of one output the same data version, so a range run's is a
    digest of its partitions' payload hashes (a one-partition run's is that partition's hash): an
    unchanged re-run keeps its version, a restated day changes it."""
    if len(hashes) == 1:
        return DataVersion(next(iter(hashes.values())))
    lines = "".join(f"{key}={sha}\n" for key, sha in sorted(hashes.items()))
    return DataVersion(hashlib.sha256(lines.encode()).hexdigest())


def _restatement_result(compared: int, restated: dict[str, Restatement]) -> AssetCheckResult:
    shown = dict(sorted(restated.items())[:_RESTATEMENTS_SHOWN])
    if restated:
        description = f"upstream restated {len(restated)} of {compared} previously materialised partition(s): " + "; ".join(
            f"{key}: {r.summary()}" for key, r in shown.items()
        )
    else:
        description = f"no restatement: {compared} previously materialised partition(s) unchanged upstream"
    return AssetCheckResult(
        check_name=RESTATEMENT_CHECK,
        passed=not restated,
        severity=AssetCheckSeverity.WARN,
        description=description[:2000],
        metadata={
            "partitions_compared": compared,
            "restated_partitions": len(restated),
            "rows_added": sum(r.rows_added for r in restated.values()),
            "rows_removed": sum(r.rows_removed for r in restated.values()),
            "rows_changed": sum(r.rows_changed for r in restated.values()),
            "restatements": MetadataValue.json({key: r.as_metadata() for key, r in shown.items()}),
        },
    )


def build_ingest_assets(catalog: Catalog, partitions_def, settings: Settings) -> list:
    """The two ingestion assets for ``catalog`` on ``partitions_def``."""
    # The pool protects the real upstream API (one pull at a time across runs). The embedded
    # sources (sandbox, synthetic) compute in-process: with none of the catalog's assets on the
    # API the pool would only serialise independent runs' pulls (the demo's workers) for nothing.
    calls_upstream = any(a.source == "api" for a in catalog.assets)

    @asset(
        name=QML_MODELS,
        **step_asset_args(partitions_def),
        **({"pool": "qml_api"} if calls_upstream else {}),
        check_specs=[
            AssetCheckSpec(
                CONTRACT_CHECK,
                asset=QML_MODELS,
                blocking=True,
                description="pandera: the pulled rows satisfy the QML contract (types, values, uniqueness, "
                "one target_var_price per day); failure counts per asset and rule",
            ),
            AssetCheckSpec(
                RESTATEMENT_CHECK,
                asset=QML_MODELS,
                description="warns when upstream changed a day already materialised (payload hash differs from the "
                "one recorded): rows added, removed and changed per partition, with examples and both hashes",
            ),
        ],
        description=(
            "The day's raw QML rows for one catalog asset (every child model and horizon), typed to the "
            "QML contract. Metadata per partition: rows, models, horizons, upstream watermark, payload "
            "hash, contract version, the day's status (published, no session, holiday, outside history) and "
            "whether upstream restated it. Data version: the payload hash (see the qml_restatement check)."
        ),
    )
    def qml_models(
        context: AssetExecutionContext,
        config: QMLModelsConfig,
        qml: QMLResource,
        parquet_io_manager: ResourceParam[ParquetPartitionIOManager],
    ):
        outputs: dict[str, pd.DataFrame] = {}
        metadata: dict[str, dict] = {}
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
                except (QMLRequestError, QMLLimitError) as exc:
                    raise Failure(description=f"{key}: {exc}", allow_retries=False) from None
                except QMLTransientError as exc:
                    context.log.warning(f"{key}: QML still failing after the client's retries: {exc}")
                    raise RetryRequested(settings.unpublished_retries, settings.unpublished_retry_seconds) from None
                reports[key] = validate_qml_rows(pull.rows)
            pulled = pull.by_day() if pull is not None else {}
            facts = _day_facts(pull.rows) if pull is not None else {}
            for day in days:
                rows = pulled[day] if day in pulled else empty_qml_rows()  # not built for every day
                status = classify_day(entry, day, len(rows), pull.watermark if pull else None)
                if status is DayStatus.UNPUBLISHED:
                    unpublished.append(partition_key(key, day))
                outputs[partition_key(key, day)] = rows
                metadata[partition_key(key, day)] = _day_metadata(facts.get(day, _NO_ROWS), status, pull)

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

        # An empty pull over a stored non-empty day is a restatement nobody should get by accident
        # (a body read as zero rows, a watermark past the range): loud by default.
        key_path = list(context.asset_key.path)
        emptied = {k: n for k, rows in outputs.items() if rows.empty and (n := parquet_io_manager.stored_rows(key_path, k))}
        if emptied and not config.accept_empty_restatements:
            shown = "; ".join(f"{k} ({n:,} rows stored, {metadata[k]['status']} now)" for k, n in sorted(emptied.items())[:5])
            raise Failure(
                description=(
                    f"the pull would replace {len(emptied)} stored non-empty day(s) with empty ones: {shown}"
                    f"{'; ...' if len(emptied) > 5 else ''}. Nothing was written. If upstream really withdrew these "
                    "days, re-run with the run config ops: {qml_models: {config: {accept_empty_restatements: true}}}"
                ),
                metadata={"emptied_partitions": MetadataValue.json(dict(sorted(emptied.items())))},
                allow_retries=False,
            )

        hashes = {key: meta["payload_sha256"] for key, meta in metadata.items()}
        recorded = _recorded_hashes(context.instance, list(outputs))
        restated = {}
        for key, sha in hashes.items():
            if (key in recorded and recorded[key] != sha) or key in emptied:
                stored = parquet_io_manager.stored(key_path, key)
                old_sha = recorded.get(key) or (rows_sha256(stored) if stored is not None else "")
                restated[key] = diff_rows(stored, outputs[key], old_sha256=old_sha, new_sha256=sha)
        if emptied:
            context.log.warning(
                f"accepted as restatements (accept_empty_restatements): {len(emptied)} stored non-empty day(s) "
                f"now empty: {', '.join(sorted(emptied)[:5])}{'...' if len(emptied) > 5 else ''}"
            )
        for key in restated:
            context.log.warning(f"{key}: upstream restated this day: {restated[key].summary()}")
        attach_partition_metadata(context, {key: {**meta, "restated": key in restated} for key, meta in metadata.items()})
        yield Output(outputs, data_version=_data_version(hashes))
        yield AssetCheckResult(check_name=CONTRACT_CHECK, passed=True, metadata=_check_metadata(reports))
        yield _restatement_result(len(set(recorded) | set(emptied)), restated)

    @asset(
        name=HORIZON_SLICES_ASSET,
        **step_asset_args(partitions_def),
        ins={"qml_models": AssetIn(key=QML_MODELS)},
        description=(
            "Golden engine (Nexus v2 section 2) as a long table per asset and date: date, horizon, "
            "symbol, forecast (close_predict), price (the day's first target_var_price for that horizon). "
            "Rows before the catalog's start_date are dropped."
        ),
    )
    def horizon_slices(context: AssetExecutionContext, qml_models: PartitionFrames) -> dict[str, pd.DataFrame]:
        outputs = {}
        metadata = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            # One slicing and one validation per catalog asset and run, then split by day.
            rows = pd.concat(ordered_map(qml_models.__getitem__, [partition_key(key, d) for d in days]), ignore_index=True)
            slices = HORIZON_SLICES.validate(slice_horizons(rows, entry.start_date))
            by_day = {stamp.date(): frame.reset_index(drop=True) for stamp, frame in slices.groupby("date", sort=True)}
            facts = _slice_facts(slices)
            for day in days:
                day_slices = by_day.get(day, slices.iloc[0:0])
                per_horizon, price = facts.get(day, ([], None))
                metadata[partition_key(key, day)] = {
                    "rows": len(day_slices),
                    "horizons": MetadataValue.json([h for h, _ in per_horizon]),
                    "models_per_horizon": MetadataValue.json({str(h): n for h, n in per_horizon}),
                    "price": price,
                }
                outputs[partition_key(key, day)] = day_slices
        attach_partition_metadata(context, metadata)
        return outputs

    return [qml_models, horizon_slices]


def _slice_facts(slices: pd.DataFrame) -> dict:
    """Per day of a run's slices: ``([(horizon, models), ...], first row's price)``, from one
    grouping of the whole run (equal to grouping each day's rows, tested)."""
    counts = slices.groupby(["date", "horizon"], sort=True)["symbol"].nunique()
    per_horizon: dict = {}
    for (stamp, horizon), n in zip(counts.index.tolist(), counts.to_numpy().tolist()):
        per_horizon.setdefault(stamp.date(), []).append((int(horizon), int(n)))
    stamps, first = np.unique(slices["date"].to_numpy(), return_index=True)  # each day's first row
    prices = slices["price"].to_numpy("float64", na_value=np.nan)[first]
    firsts = {pd.Timestamp(stamp).date(): float(price) for stamp, price in zip(stamps, prices)}
    return {day: (per_horizon.get(day, []), price) for day, price in firsts.items()}


class _DayFacts(NamedTuple):
    rows: int
    models: int
    horizons: list[int]
    payload_sha256: str


_NO_ROWS = _DayFacts(0, 0, [], hashlib.sha256(b"").hexdigest())


def _day_facts(rows: pd.DataFrame) -> dict:
    """What a ``qml_models`` partition's metadata says of its rows, for every day of a pull at once
    (one grouping and one hashing pass, not one per day; a day's facts equal those of its own rows,
    tested against the per-day computation)."""
    if rows.empty:
        return {}
    positions = {stamp.date(): pos for stamp, pos in rows.groupby("time", sort=True).indices.items()}
    hashes = day_hashes(rows, positions)
    horizons = rows["n_predict"].to_numpy()
    per_day = rows.groupby("time", sort=True)["symbol"].nunique()
    models = {stamp.date(): int(n) for stamp, n in zip(per_day.index, per_day.to_numpy())}
    return {
        day: _DayFacts(len(pos), models[day], [int(h) for h in np.unique(horizons[pos])], hashes[day])
        for day, pos in positions.items()
    }


def _day_metadata(facts: _DayFacts, status: DayStatus, pull) -> dict:
    return {
        "status": status.value,
        "rows": facts.rows,
        "models": facts.models,
        "horizons": MetadataValue.json(facts.horizons),
        "upstream_watermark": pull.watermark.date().isoformat() if pull is not None and pull.watermark is not None else None,
        "payload_sha256": facts.payload_sha256,
        "contract_version": pull.contract_version if pull is not None else CONTRACT_VERSION,
        "source": pull.source if pull is not None else None,
    }
