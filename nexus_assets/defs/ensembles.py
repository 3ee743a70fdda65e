"""``horizon_ensembles``: the dynamic quantile ensemble per asset, date and horizon.

Each catalog asset uses its own ``selection_mode``. The input is a window of ``horizon_slices``
counted in observations: per horizon, the ``lookback + h - 1`` dates with rows of that horizon
before the run's first date that a point-in-time window needs (at least the 59 of the
low-variance window), read further back than the mapped calendar window when upstream has gaps;
in ``nexus_v2`` mode also the ``h`` dates after the run's last date that ``y_h`` looks at, and the
model roster of the asset's whole stored history (Nexus v2's ``M`` counts every model of the
whole pivot, models that first publish after a date included). A range run computes all its
dates of one asset in one call; a date's result is the same whether it is computed in a range
run or alone.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Failure, MetadataValue, asset

from nexus_assets.catalog import Catalog
from nexus_assets.core.combinations import VARIANCE_WINDOW, within_horizon_combinations
from nexus_assets.core.ensembles import LOOKBACK, ensembles_with_combinations
from nexus_assets.core.periods import calendar_days
from nexus_assets.core.slicing import empty_slices
from nexus_assets.core.upstream_ensembles import upstream_ensemble_rows, upstream_forecasts
from nexus_assets.defs.ingest import HORIZON_SLICES_ASSET
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import (
    DEFAULT_MAX_HORIZON,
    date_window_mapping,
    days_by_asset,
    partition_key,
    per_horizon_observations,
    split_by_day,
)
from nexus_assets.defs.resources import QMLResource
from nexus_assets.defs.steps import step_asset_args, upstream_errors
from nexus_assets.defs.storage import PartitionFrames

__all__ = [
    "HORIZON_ENSEMBLES",
    "build_ensemble_assets",
    "ensemble_history_rows",
    "ensemble_window_days",
]

HORIZON_ENSEMBLES = "horizon_ensembles"


def ensemble_window_days(catalog: Catalog, lookback: int = LOOKBACK) -> tuple[int, int]:
    """Calendar days of ``horizon_slices`` history (and future) one date's ensemble reads.

    Point-in-time: a pair (t, h) counts for D only when t + h <= D, so D needs ``lookback + h``
    observations of history. nexus_v2: the window ends the day before D but looks ``h``
    observations past each of its rows, and the ``actual`` column ``h`` past D.
    """
    history = forward = 0
    for entry in catalog.assets:
        longest = max(entry.horizons) if entry.horizons else DEFAULT_MAX_HORIZON
        history = max(history, calendar_days(max(lookback + longest + 1, VARIANCE_WINDOW), entry.calendar))
        if entry.selection_mode == "nexus_v2":
            forward = max(forward, calendar_days(longest, entry.calendar))
    return history, forward


def ensemble_history_rows(horizon: int, lookback: int = LOOKBACK) -> int:
    """Dates with rows of ``horizon`` a date's ensemble reads before it: its point-in-time window
    (``lookback + h - 1``), the nexus_v2 window (``lookback``) and the low-variance window."""
    return max(lookback + horizon - 1, lookback, VARIANCE_WINDOW - 1)


def build_ensemble_assets(catalog: Catalog, partitions_def, lookback: int = LOOKBACK) -> list:
    history, forward = ensemble_window_days(catalog, lookback)
    # upstream's forecasts come over the same connection as the rows: the same pool
    calls_upstream = any(a.ensemble_source == "upstream" and a.source == "api" for a in catalog.assets)

    @asset(
        name=HORIZON_ENSEMBLES,
        **step_asset_args(partitions_def),
        **({"pool": "qml_api"} if calls_upstream else {}),
        ins={
            "horizon_slices": AssetIn(
                key=HORIZON_SLICES_ASSET,
                partition_mapping=date_window_mapping(history, forward),
                metadata={"allow_missing_partitions": True},
            )
        },
        description=(
            "Dynamic quantile ensemble (Nexus v2 section 3): one row per date and horizon with the "
            "ensemble forecast, the winning strategy/aggregator/quantile, the selected models' spread "
            "(p05..p95), the best child model and its symbol, the day's price, and the plain within-horizon "
            "combinations the horizon search compares (raw_mean, raw_median, low_variance: the 10% of models "
            "with the lowest forecast variance over the last 60 rows). Mode per catalog asset: point_in_time (default) uses "
            "only outcomes known by the date and ranks the date's population (models with a forecast in its "
            "window); nexus_v2 reproduces the old scripts exactly, look-ahead included (its M counts every model "
            "of the asset's whole stored history, later ones too), so in that mode a date's forecast changes as "
            f"later data arrives. Reads lookback + h - 1 observations per horizon of horizon_slices history "
            f"(mapped: {history} days, further back when upstream has gaps)"
            + (f" and h observations ahead (mapped: {forward} days)." if forward else ".")
            + " A catalog asset with ensemble_source = upstream stores upstream's own per-horizon forecasts "
            "(/get_qml_horizon_forecast) instead, strategy 'upstream', the fields upstream does not send null."
        ),
    )
    def horizon_ensembles(context: AssetExecutionContext, qml: QMLResource,
                          horizon_slices: PartitionFrames) -> dict[str, pd.DataFrame]:
        outputs: dict[str, pd.DataFrame] = {}
        metadata: dict[str, dict] = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            # One catalog asset's window at a time: the mapping may span many assets and a year.
            nexus_v2 = entry.selection_mode == "nexus_v2"
            slices = horizon_slices.history(
                key, days, before=per_horizon_observations(lambda h: ensemble_history_rows(h, lookback)),
                after=per_horizon_observations(lambda h: h) if nexus_v2 else None,
            )
            slices = empty_slices() if slices is None else slices
            if entry.ensemble_source == "upstream":
                result = _upstream_result(context, qml, entry, slices, days)
                facts = _metadata_by_day(result, days, "upstream")
                for day, day_rows in split_by_day(result, days).items():
                    outputs[partition_key(key, day)] = day_rows
                    metadata[partition_key(key, day)] = facts[day]
                continue
            roster = None
            if nexus_v2:  # Nexus v2 pivoted the whole table: every model of the stored history counts
                stored = horizon_slices.everything(key, ["horizon", "symbol"])
                roster = None if stored is None else stored.drop_duplicates(ignore_index=True)
            result = ensembles_with_combinations(slices, mode=entry.selection_mode, lookback=lookback, dates=days,
                                                 roster=roster)
            facts = _metadata_by_day(result, days, entry.selection_mode)
            for day, day_rows in split_by_day(result, days).items():
                outputs[partition_key(key, day)] = day_rows
                metadata[partition_key(key, day)] = facts[day]
        attach_partition_metadata(context, metadata)
        return outputs

    return [horizon_ensembles]


def _upstream_result(context, qml: QMLResource, entry, slices: pd.DataFrame, days) -> pd.DataFrame:
    """The run's rows of an ``ensemble_source = "upstream"`` asset, or a clear failure."""
    where = "QML_API_BASE_URL" if entry.source == "api" else f"the embedded {entry.source} source"
    with upstream_errors(context, entry.key, "/get_qml_horizon_forecast", "upstream's horizon forecasts"):
        raw = qml.horizon_forecasts(entry, days, log=context.log)
    if raw is None:
        raise Failure(
            description=(
                f"{entry.key}: the catalog sets ensemble_source = \"upstream\", but upstream ({where}) does not offer "
                "/get_qml_horizon_forecast (it answers HTTP 404, 405 or 501). Set ensemble_source = \"child_models\" "
                "(the default) in the catalog to use our own ensemble, or point QML_API_BASE_URL at an upstream that offers the endpoint. "
                "No horizon_ensembles partition was written."
            ),
            allow_retries=False,
        )
    try:
        forecasts = upstream_forecasts(raw)
    except ValueError as exc:
        raise Failure(description=f"{entry.key}: {exc}", allow_retries=False) from None
    plain = within_horizon_combinations(slices, dates=days)
    day_slices = slices[slices["date"].isin(pd.to_datetime(list(days)))]
    return upstream_ensemble_rows(forecasts, plain, day_slices, days)


def _metadata_by_day(result: pd.DataFrame, days, mode: str) -> dict:
    """Each day's metadata from the run's whole result in one pass over plain columns (equal to
    computing it on each day's rows, tested): the horizons, models per horizon and winning strategies."""
    rows: dict = {day: [] for day in days}
    for stamp, horizon, n_models, strategy in zip(result["date"].tolist(), result["horizon"].tolist(),
                                                  result["n_models"].tolist(), result["strategy"].tolist()):
        rows.setdefault(stamp.date(), []).append((int(horizon), int(n_models), str(strategy)))
    out = {}
    for day in days:
        winners: dict[str, int] = {}
        for _, _, strategy in rows[day]:
            winners[strategy] = winners.get(strategy, 0) + 1
        out[day] = {
            "mode": mode,
            "rows": len(rows[day]),
            "horizons": MetadataValue.json([h for h, _, _ in rows[day]]),
            "models_per_horizon": MetadataValue.json({str(h): n for h, n, _ in rows[day]}),
            "winners_per_strategy": MetadataValue.json({k: winners[k] for k in sorted(winners)}),
        }
    return out
