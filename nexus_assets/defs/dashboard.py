"""``dashboard``: one static HTML page per asset and date, and the site's index and histories.

The site lives at ``$NEXUS_DATA_DIR/dashboard/``: ``asset=<asset>/date=<day>.html`` (a page, with a
small ``.json`` summary next to it that the index is built from), ``asset=<asset>/index.html`` (the
asset's history), ``index.html`` (every asset's latest page, its signal and freshness) and one
shared ``assets/plotly-<version>.min.js``. A page reads only its own date's partitions (and the
trailing ensembles for the models selected most often), so re-rendering a past day gives the same
bytes: "historical rewind". The index and the histories are rebuilt at the end of every run that
wrote pages; the index's freshness is judged against today's date, so it is the one file that
changes with the clock.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.

import datetime as dt
import json
import pathlib

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)
from upath import UPath

from nexus_assets.catalog import Catalog
from nexus_assets.core import contract
from nexus_assets.core.contract import empty_frame
from nexus_assets.core.dashboard import (
    INDEX,
    AssetSummary,
    DaySummary,
    PageInputs,
    data_status,
    history_path,
    page_path,
    render_history,
    render_index,
    render_page,
    summarise,
    summary_json,
)
from nexus_assets.core.dashboard import formatting as fmt
from nexus_assets.core.dashboard.inputs import CHILD_MODEL_COLUMNS
from nexus_assets.core.freshness import freshness_status
from nexus_assets.core.periods import calendar_days
from nexus_assets.defs.ensembles import HORIZON_ENSEMBLES
from nexus_assets.defs.ingest import QML_MODELS
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.metrics import METRICS
from nexus_assets.defs.ml_signals import ML_SIGNALS
from nexus_assets.defs.model_metadata import QML_MODEL_METADATA
from nexus_assets.defs.partitions import date_window_mapping, day_rows, days_by_asset, observations, partition_key
from nexus_assets.defs.search import HORIZON_SEARCH
from nexus_assets.defs.signals import SIGNALS
from nexus_assets.defs.steps import GROUP
from nexus_assets.defs.storage import PartitionFrames
from nexus_assets.settings import Settings
from nexus_assets.site_files import write_site_assets, write_site_file, write_site_files

__all__ = ["DASHBOARD", "MODEL_WINDOW", "build_dashboard_assets", "site_root"]

DASHBOARD = "dashboard"
MODEL_WINDOW = 30  # observations of ensembles behind "the child models selected most often"
_PAGES_PER_WRITE = 64  # pages (and their summaries) held in memory, then written together


def site_root(settings: Settings) -> UPath:
    return UPath(settings.data_dir) / DASHBOARD


def build_dashboard_assets(catalog: Catalog, partitions_def, settings: Settings) -> list:
    window = max(calendar_days(MODEL_WINDOW, entry.calendar) for entry in catalog.assets)
    root = site_root(settings)

    @asset(
        name=DASHBOARD,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"python", "html"},
        ins={
            "signals": AssetIn(key=SIGNALS),
            "metrics": AssetIn(key=METRICS),
            "horizon_search": AssetIn(key=HORIZON_SEARCH),
            "qml_model_metadata": AssetIn(key=QML_MODEL_METADATA),
            "ml_signals": AssetIn(key=ML_SIGNALS, metadata={"allow_missing_partitions": True}),
            "horizon_ensembles": AssetIn(
                key=HORIZON_ENSEMBLES,
                partition_mapping=date_window_mapping(window),
                metadata={"allow_missing_partitions": True},
            ),
        },
        description=(
            "One self-contained HTML page per asset and date (signal card, price 'snake', forecast fan, slope "
            "heatmap, equity vs buy and hold, metrics point in time and legacy, last 30 trades, most selected "
            "child models, the ML signal with its record and accuracy, data status), under "
            "$NEXUS_DATA_DIR/dashboard/asset=<asset>/date=<day>.html, plus "
            "the site index (dashboard/index.html) and each asset's history, rebuilt after each run. Offline: "
            "one shared plotly.js, no CDN; a strict Content-Security-Policy. The page link is in each "
            "partition's metadata."
        ),
    )
    def dashboard(
        context: AssetExecutionContext,
        signals: PartitionFrames,
        metrics: PartitionFrames,
        horizon_search: PartitionFrames,
        qml_model_metadata: PartitionFrames,
        ml_signals: PartitionFrames,
        horizon_ensembles: PartitionFrames,
    ) -> MaterializeResult:
        write_site_assets(root)
        touched = []
        metadata: dict[str, dict] = {}
        pending: list[tuple[str | None, str, str]] = []  # (partition of a page, file, text) not yet written
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            touched.append(entry)
            # the trailing window counted in observations (further back than the mapping after a gap)
            ensembles = horizon_ensembles.history(key, days, before=observations(MODEL_WINDOW - 1))
            ensembles = empty_frame(contract.HORIZON_ENSEMBLES) if ensembles is None else ensembles
            ingested = _ingestion_metadata(context.instance, [partition_key(key, day) for day in days])
            ensembles_of = _ensembles_by_day(ensembles)
            # the child-model panel's four columns of every date at once: the whole table per page
            # (340 models, text columns) cost about as much to read as the rest of the page's tables
            child_models_of = _rows_by_day(
                qml_model_metadata.history(key, days, columns=("date", *CHILD_MODEL_COLUMNS)))
            for day in days:
                pk = partition_key(key, day)
                status = data_status(entry, day, ingested.get(pk, {}), pk)
                of_day, window = ensembles_of(day)
                inputs = PageInputs.from_partitions(
                    asset=key,
                    display_name=entry.display_name,
                    category=entry.category,
                    calendar=entry.calendar,
                    date=day,
                    # the day's tables as column arrays: a DataFrame per table cost more than the page
                    signals=signals.arrays(pk),
                    metrics=metrics.arrays(pk),
                    horizon_search=horizon_search.arrays(pk),
                    ensembles=of_day,
                    ensemble_window=window,
                    status=status,
                    previous_date=day - dt.timedelta(days=1) if day > entry.start_date else None,
                    next_date=day + dt.timedelta(days=1) if entry.end_date is None or day < entry.end_date else None,
                    child_models=child_models_of(day),
                    ml_signals=ml_signals.arrays(pk) if pk in ml_signals else None,
                )
                summary = summarise(inputs)
                pending.append((pk, page_path(key, day), render_page(inputs)))
                pending.append((None, _summary_path(key, day),
                                json.dumps(summary_json(summary, status.upstream_watermark), sort_keys=True)))
                metadata[pk] = {
                    "signal": summary.signal or "none",
                    "optimised_signal": summary.optimised_signal or "none",
                }
                if len(pending) >= 2 * _PAGES_PER_WRITE:
                    _write_pages(root, settings, pending, metadata)
            _write_pages(root, settings, pending, metadata)
        attach_partition_metadata(context, metadata)
        index = rebuild_site(root, catalog, [e.key for e in touched])
        context.log.info(f"dashboard: {fmt.count(len(context.partition_keys), 'page')}; site index at {index}")
        return MaterializeResult(metadata={"site_index": MetadataValue.url(_link(settings, index, INDEX))})

    return [dashboard]


def _write_pages(root: UPath, settings: Settings, files: list[tuple[str | None, str, str]],
                 metadata: dict[str, dict]) -> None:
    """Write ``files`` (``(partition of a page or None, relative path, text)``) together, each
    atomically and all with one sync (one ``fsync`` per page was most of the step's waiting), put
    each page's link first in its partition's metadata, and empty ``files``."""
    for (pk, relative, _), path in zip(files, write_site_files(root, [(r, t) for _, r, t in files])):
        if pk is not None:
            metadata[pk] = {"page": MetadataValue.url(_link(settings, path, relative)),
                            "page_path": MetadataValue.path(str(path)), **metadata[pk]}
    files.clear()


def rebuild_site(root: UPath, catalog: Catalog, assets: list[str] | None = None, today: dt.date | None = None) -> UPath:
    """Rebuild the histories of ``assets`` (default: all) and the index from the page summaries."""
    today = today or dt.datetime.now(dt.UTC).date()
    summaries = []
    for entry in catalog.assets:
        days, watermark = _read_summaries(root, entry.key)
        latest = max((d.date for d in days), default=None)
        status = freshness_status(entry, today, latest, watermark) if latest else None
        summary = AssetSummary(
            asset=entry.key,
            display_name=entry.display_name,
            category=entry.category,
            calendar=entry.calendar,
            freshness="unknown" if status is None else ("fresh" if status.fresh else "late"),
            freshness_detail="no page yet" if status is None else status.describe(),
            days=tuple(days),
        )
        summaries.append(summary)
        if days and (assets is None or entry.key in assets):
            write_site_file(root, history_path(entry.key), render_history(summary), skip_unchanged=True)
    return write_site_file(root, INDEX, render_index(summaries), skip_unchanged=True)


def _summary_path(asset: str, day: dt.date) -> str:
    return page_path(asset, day)[: -len(".html")] + ".json"


def _read_summaries(root: UPath, asset: str) -> tuple[list[DaySummary], dt.date | None]:
    """The asset's page summaries, and the upstream watermark recorded with its latest page."""
    folder = root / f"asset={asset}"
    if not folder.exists():
        return [], None
    out, watermark = [], None
    for path in sorted(folder.glob("date=*.json")):  # date order: the last one is the latest page
        raw = json.loads(path.read_text())
        out.append(DaySummary(dt.date.fromisoformat(raw["date"]), raw["signal"], raw["net_prob"], raw["tier"],
                              raw["optimised_signal"], raw["optimised_net_prob"], raw.get("day_status")))
        mark = raw.get("upstream_watermark")
        watermark = dt.date.fromisoformat(mark) if mark else None
    return out, watermark


def _ensembles_by_day(ensembles: pd.DataFrame):
    """A function of a page's date: the ensembles rows of that date, and those of the last
    ``MODEL_WINDOW`` observations up to it (by date, a date's rows in stored order), each as
    column arrays (``frame[name].to_numpy()``). Sorted and converted once per asset and run, each
    page's rows are two slices: filtering the frame per page cost about a quarter of the page,
    slicing it and converting each page's columns about 1 ms a page."""
    ensembles = ensembles.sort_values("date", kind="stable", ignore_index=True)
    columns = _arrays(ensembles)
    dates = columns["date"]
    observed = np.unique(dates)

    def of(day: dt.date) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        rows = day_rows(dates, day)
        count = int(np.searchsorted(observed, np.datetime64(day, "ns"), side="right"))
        start = np.searchsorted(dates, observed[count - MODEL_WINDOW], side="left") if count > MODEL_WINDOW else 0
        return ({name: values[rows] for name, values in columns.items()},
                {name: values[start:rows.stop] for name, values in columns.items()})

    return of


def _rows_by_day(frame: pd.DataFrame | None):
    """A function of a date: the rows of ``frame`` (in date order, as read) of that date, as
    column arrays; None when there is no frame (no stored row on any date of the run)."""
    if frame is None:
        return lambda _day: None
    columns = _arrays(frame)
    dates = columns["date"].astype("datetime64[ns]", copy=False)

    def of(day: dt.date) -> dict[str, np.ndarray]:
        rows = day_rows(dates, day)
        return {name: values[rows] for name, values in columns.items()}

    return of


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The frame's columns as arrays (what the page reads: see ``PageInputs``)."""
    return {name: frame[name].to_numpy() for name in frame.columns}


def _ingestion_metadata(instance, keys: list[str]) -> dict[str, dict]:
    """The metadata of the latest ``qml_models`` materialisation of each of ``keys``: one paged
    query for a run's partitions, not one per page."""
    latest: dict[str, dict] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(QML_MODELS), asset_partitions=keys), limit=1000, cursor=cursor
        )
        for record in result.records:  # newest first
            materialisation = record.asset_materialization
            if materialisation.partition not in latest:
                latest[materialisation.partition] = {k: v.value for k, v in materialisation.metadata.items()}
        if not result.has_more:
            return latest
        cursor = result.cursor


def _link(settings: Settings, path: UPath, relative: str) -> str:
    """The page's address: under ``NEXUS_SITE_URL`` when the site is served, else the file's URL."""
    if settings.site_url:
        return f"{settings.site_url}/{relative}"
    return _file_url(path)


def _file_url(path: UPath) -> str:
    if path.protocol in ("", "file", "local"):
        return pathlib.Path(str(path.path if hasattr(path, "path") else path)).resolve().as_uri()
    return str(path)
