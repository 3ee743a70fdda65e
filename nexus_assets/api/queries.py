"""What each endpoint answers, as frames: the API's logic without HTTP (tested directly).

Two kinds of stored tables, and ``as_of`` means the same for both: *what the partitions of that
date say*.

- **Day tables** (``horizon_ensembles``, ``signals``, ``slopes``, ``leaderboard``): a partition
  holds its own date's rows. ``as_of`` alone answers that day; ``start``/``end`` answer the
  partitions dated ``start .. end``, never after ``as_of``.
- **Record tables** (``statistics``, ``trades``, ``daily``, ``ml_accuracy``): the partition of ``as_of`` holds the
  whole record as of that date (a later partition may differ: an open trade closes, a statistic
  gains a sample). The answer reads that one partition; ``start``/``end`` filter its rows by date.

``as_of`` defaults to the latest date the endpoint's table is stored for; a date that is not
materialised is a 404, never the nearest one. (``predict`` names it ``date``.)

``models`` lists the ML registry's manifests (:mod:`nexus_assets.ml_registry`) of the assets a key
may read; registering a model stays a command-line action for operators.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
from upath import UPath

from nexus_assets.api.store import Store, identity_of
from nexus_assets.catalog import Catalog, CatalogAsset
from nexus_assets.core.contract import CONTRACT_VERSION, STORED_TABLES, empty_frame
from nexus_assets.core.dashboard.site import page_path
from nexus_assets.core.ensembles import LOOKBACK
from nexus_assets.core.freshness import freshness_status
from nexus_assets.core.ml_signals import ml_variant, variant_horizon
from nexus_assets.core.signals import parse_horizons
from nexus_assets.ml_registry import REGISTRY_FOLDER, scan_manifests

__all__ = [
    "ASSET_ENDPOINTS",
    "Answer",
    "Endpoint",
    "Params",
    "QueryError",
    "answer",
    "assets_answer",
    "models_answer",
    "parse_day",
    "MAX_LIMIT",
    "DEFAULT_LIMIT",
]

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class QueryError(Exception):
    """A request the data cannot answer: HTTP status, machine code, a message safe to show."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def shown(value: object, limit: int = 64) -> str:
    """A client's value quoted for a message, cut short (a 10 KB path is not echoed back)."""
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def parse_day(text: str | None, name: str) -> dt.date | None:
    """``YYYY-MM-DD`` or None; anything else is a 400 naming the parameter."""
    if text is None:
        return None
    if not _DAY.fullmatch(text):
        raise QueryError(400, "BAD_PARAMETER", f"{name} must be a date as YYYY-MM-DD, got {shown(text)}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(400, "BAD_PARAMETER", f"{name} is not a calendar date: {shown(text)}") from None


@dataclass(frozen=True)
class Params:
    """A request's parameters, parsed: dates, paging and the endpoint's filters (column -> value)."""

    as_of: dt.date | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    filters: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    """An endpoint's answer: one page of a table (``frame``, ``total`` rows before paging), or a
    document (``document``); ``files`` are the partitions it was built from (their hashes make the
    ETag); ``fields`` go into the JSON envelope beside the table."""

    endpoint: str
    asset: str | None
    as_of: dt.date | None
    frame: pd.DataFrame | None = None
    total: int = 0
    params: Params = field(default_factory=Params)
    files: list[tuple[str, dt.date, str]] = field(default_factory=list)
    seen: list[tuple[str, tuple | None]] = field(default_factory=list)  # (local path, identity) consulted
    fields: dict[str, Any] = field(default_factory=dict)
    document: dict[str, Any] | None = None


@dataclass(frozen=True)
class Allowed:
    """A filter's accepted values: ``values``, and with ``pattern`` every name it matches whole."""

    values: tuple[str, ...]
    pattern: str | None = None  # a regular expression, anchored by the check
    shape: str = ""  # how the pattern reads in an error message, e.g. ``ml_h<horizon>``

    def accepts(self, value: str) -> bool:
        return value in self.values or (self.pattern is not None and re.fullmatch(self.pattern, value) is not None)

    def describe(self) -> str:
        return ", ".join((*self.values, *([self.shape] if self.pattern else [])))

    def schema(self) -> dict[str, Any]:
        listed = {"type": "string", "enum": list(self.values)}
        if self.pattern is None:
            return listed
        return {"anyOf": [listed, {"type": "string", "pattern": f"^(?:{self.pattern})$"}]}


@dataclass(frozen=True)
class Endpoint:
    """One per-asset endpoint: its table, how ``as_of`` and ranges apply, its filters and columns."""

    name: str
    summary: str
    table: str  # the stored table whose dates ``as_of`` is checked against
    kind: str  # "day" (a partition per date), "record" (the as_of partition), "one_day", "derived", "document"
    columns: tuple[str, ...] | None = None  # None: every stored column
    filters: Mapping[str, Allowed] = field(default_factory=dict)
    range_column: str | None = None  # record tables: the row date that start/end filter
    history_by_default: bool = False  # day tables: no start means the first stored date, not as_of
    build: Callable[..., Answer] | None = None
    date_parameter: str = "as_of"  # the query parameter that names the date

    @property
    def is_table(self) -> bool:
        return self.kind != "document"

    @property
    def takes_range(self) -> bool:
        return self.kind == "day" or self.range_column is not None

    def output_columns(self) -> tuple[str, ...]:
        if self.columns is not None:
            return self.columns
        return tuple(STORED_TABLES[self.table].columns)


_VARIANT = {"variant": Allowed(("raw", "optimised"))}
# the record's signals: the slope signals and one ML signal per horizon (core.ml_signals.ml_variant's
# name, without leading zeros so that a valid filter can match a stored row; the catalog caps ML
# horizons at 250, so three digits bound what a client may send)
_SIGNAL = {"signal": Allowed(("raw", "optimised"), pattern="ml_h[1-9][0-9]{0,2}", shape="ml_h<horizon>")}
_BASIS = {"basis": Allowed(("point_in_time", "legacy"))}
_SCOPE = {"scope": Allowed(("all", "version"))}


def _latest(store: Store, endpoint: Endpoint, asset: str, as_of: dt.date | None, seen: list) -> dt.date:
    days = store.days(endpoint.table, asset, seen)
    if as_of is None:
        if not days:
            raise QueryError(404, "DATE_NOT_MATERIALISED",
                             f"{asset} has no {endpoint.table} partition yet: materialise it first")
        return days[-1]
    if as_of not in set(days):
        latest = f"the latest is {days[-1]}" if days else "none is materialised yet"
        raise QueryError(404, "DATE_NOT_MATERIALISED",
                         f"{asset} {endpoint.table} is not materialised for {as_of} ({latest})")
    return as_of


def _read(store: Store, table: str, asset: str, day: dt.date, out: Answer) -> pd.DataFrame:
    stored = store.read(table, asset, day, out.seen)
    if stored is None:  # removed since it was listed
        raise QueryError(404, "DATE_NOT_MATERIALISED", f"{asset} {table} is not materialised for {day}")
    out.files.append((table, day, stored.sha256))
    return stored.frame


def _filtered(frame: pd.DataFrame, filters: Mapping[str, str]) -> pd.DataFrame:
    for column, value in filters.items():
        frame = frame[frame[column] == value]
    return frame


def _page(answer: Answer, frame: pd.DataFrame, columns: tuple[str, ...]) -> Answer:
    params = answer.params
    answer.total = len(frame)
    present = [c for c in columns if c in frame.columns]  # an optional column (nexus_v2's `actual`) only when stored
    answer.frame = frame.iloc[params.offset: params.offset + params.limit][present].reset_index(drop=True)
    return answer


def answer(store: Store, entry: CatalogAsset, endpoint: Endpoint, params: Params,
           today: dt.date | None = None) -> Answer:
    """The answer of ``endpoint`` for catalog asset ``entry`` (raises :class:`QueryError`)."""
    if params.start is not None and params.end is not None and params.start > params.end:
        raise QueryError(400, "BAD_PARAMETER", f"start {params.start} is after end {params.end}")
    if (params.start or params.end) and not endpoint.takes_range:
        raise QueryError(400, "BAD_PARAMETER", f"{endpoint.name} answers one date: use as_of, not start/end")
    for column, value in params.filters.items():
        allowed = endpoint.filters.get(column)
        if allowed is None or not allowed.accepts(value):
            raise QueryError(400, "BAD_PARAMETER", f"{column} must be one of {allowed.describe() if allowed else ''}, got {shown(value)}")
        horizon = variant_horizon(value) if column == "signal" else None
        if horizon is not None and horizon not in entry.ml_horizons:  # a well-formed name of a signal it has not
            raise QueryError(400, "BAD_PARAMETER", f"signal {shown(value)}: {entry.key} has ML signals "
                             f"{', '.join(ml_variant(h) for h in entry.ml_horizons)} (the catalog's ml_horizons)")
    asset = entry.key
    seen: list = []
    as_of = _latest(store, endpoint, asset, params.as_of, seen)
    out = Answer(endpoint=endpoint.name, asset=asset, as_of=as_of, params=params, seen=seen)
    if endpoint.build is not None:
        return endpoint.build(store, entry, endpoint, out, today)
    if endpoint.kind == "day":
        first = store.days(endpoint.table, asset)[0]
        if params.start is None and params.end is None:
            start = first if endpoint.history_by_default else as_of
        else:
            start = params.start or first
        end = min(params.end or as_of, as_of)  # never a day after as_of
        parts = store.read_range(endpoint.table, asset, start, end, out.seen)
        out.files += [(endpoint.table, s.day, s.sha256) for s in parts]
        out.fields.update(start=start, end=end)
        tables = [s.table for s in parts if s.table.num_rows]
        if len(tables) == 1:
            frame = parts[[s.table.num_rows > 0 for s in parts].index(True)].frame
        elif tables:  # one Arrow concatenation and one conversion (a column null in one day is promoted)
            frame = pa.concat_tables(tables, promote_options="default").to_pandas()
        else:
            frame = _empty(endpoint.table)
    else:
        frame = _read(store, endpoint.table, asset, as_of, out)
        if endpoint.range_column is not None:
            column = frame[endpoint.range_column]
            keep = pd.Series(True, index=frame.index)
            if params.start is not None:
                keep &= column >= pd.Timestamp(params.start)
            if params.end is not None:
                keep &= column <= pd.Timestamp(params.end)
            frame = frame[keep]
            out.fields.update(start=params.start, end=params.end)
        if endpoint.kind == "one_day" and not len(frame):
            raise QueryError(404, "INSUFFICIENT_DATA", f"{asset} has no {endpoint.table} rows on {as_of} "
                             f"({_why_no_rows(entry, as_of)})")
    return _page(out, _filtered(frame, params.filters), endpoint.output_columns())


def _why_no_rows(entry: CatalogAsset, day: dt.date) -> str:
    """Why a stored day has no forecast rows, as far as the catalog can tell."""
    if not entry.is_trading_day(day):
        return "no trading session on that date in the asset's calendar; ask for a session's date"
    return ("the ensemble's warm-up, before enough observations exist, or a session upstream published "
            "without rows or without a price")


def _empty(table: str) -> pd.DataFrame:
    return empty_frame(STORED_TABLES[table])


HORIZON_COLUMNS = ("date", "horizon", "price", "forecast", "change", "direction", "in_raw", "in_optimised")


def _horizons(store: Store, entry: CatalogAsset, endpoint: Endpoint, out: Answer, today) -> Answer:
    """Each horizon's forecast of the day against the day's price, and whether the raw and the
    optimised signal use it (Nexus v2's ``/horizons``)."""
    ensembles = _read(store, "horizon_ensembles", entry.key, out.as_of, out)
    ensembles = ensembles[ensembles["forecast"].notna()]
    if not len(ensembles):
        raise QueryError(404, "INSUFFICIENT_DATA", f"{entry.key} has no forecast on {out.as_of} "
                         f"({_why_no_rows(entry, out.as_of)})")
    signals = _read(store, "signals", entry.key, out.as_of, out) if out.as_of in store.days(
        "signals", entry.key, out.seen) else _empty("signals")
    used = {v: set(parse_horizons(h)) for v, h in zip(signals["variant"], signals["horizons"])}
    frame = ensembles[["date", "horizon", "price", "forecast"]].copy()
    frame["change"] = frame["forecast"] / frame["price"] - 1
    frame["direction"] = [("above" if f > p else "below" if f < p else "equal") if pd.notna(p) else None
                          for f, p in zip(frame["forecast"], frame["price"])]
    frame["in_raw"] = frame["horizon"].isin(used.get("raw", set()))
    frame["in_optimised"] = frame["horizon"].isin(used.get("optimised", set()))
    return _page(out, frame, HORIZON_COLUMNS)


ENSEMBLE_CONFIG_COLUMNS = ("date", "horizon", "mode", "strategy", "aggregator", "quantile", "n_selected", "n_models",
                           "best_child", "best_child_forecast")


def _ensemble_config(store: Store, entry: CatalogAsset, endpoint: Endpoint, out: Answer, today) -> Answer:
    """The catalog's ensemble settings and, per horizon, the configuration the ensemble chose that day."""
    frame = _read(store, "horizon_ensembles", entry.key, out.as_of, out)
    out.fields["config"] = {
        "selection_mode": entry.selection_mode,
        "lookback": LOOKBACK,
        "horizons": list(entry.horizons) if entry.horizons else sorted(int(h) for h in frame["horizon"].unique()),
        "signal_threshold": entry.signal_threshold,
        "min_deflated_sharpe": entry.min_deflated_sharpe,
        "cost_bps": entry.cost_bps,
        "calendar": entry.calendar,
    }
    return _page(out, frame, ENSEMBLE_CONFIG_COLUMNS)


def _status(store: Store, entry: CatalogAsset, endpoint: Endpoint, out: Answer, today) -> Answer:
    """Freshness, upstream watermark and contract version: as of today by default, else as the
    morning after ``as_of`` saw it (the dashboard's data status)."""
    asset = entry.key
    latest = {table: store.latest(table, asset, out.seen) for table in ("horizon_ensembles", "signals", "leaderboard", "daily")}
    watermark = _watermark(store, asset, out.as_of, out.seen)
    judged = (today or dt.datetime.now(dt.UTC).date()) if out.params.as_of is None else out.as_of + dt.timedelta(days=1)
    materialised = latest["daily"] if out.params.as_of is None else out.as_of
    status = freshness_status(entry, judged, materialised, watermark)
    stored = store.read("daily", asset, out.as_of, out.seen)
    if stored is not None:
        out.files.append(("daily", out.as_of, stored.sha256))
    out.fields["judged_on"] = judged
    out.document = {
        "asset": asset,
        "as_of": out.as_of.isoformat(),
        "latest": {t: d.isoformat() if d else None for t, d in latest.items()},
        "upstream_watermark": watermark.isoformat() if watermark else None,
        "freshness": {
            "judged_on": judged.isoformat(),
            "fresh": status.fresh,
            "upstream_late": status.upstream_late,
            "pipeline_late": status.pipeline_late,
            "expected": status.expected.isoformat() if status.expected else None,
            "detail": status.describe() if watermark is not None else status.describe() + " (no upstream watermark recorded)",
        },
        "contract_version": CONTRACT_VERSION,
        "selection_mode": entry.selection_mode,
    }
    return out


def _watermark(store: Store, asset: str, day: dt.date, seen: list) -> dt.date | None:
    """The upstream watermark recorded for ``day`` by the dashboard's page summary (the pipeline
    writes it from the day's ingestion record), None without a page."""
    path = UPath(store.data_dir) / "dashboard" / (page_path(asset, day)[: -len(".html")] + ".json")
    name = str(path.path if hasattr(path, "path") else path)
    seen.append((name, identity_of(name)))
    try:
        mark = json.loads(path.read_text()).get("upstream_watermark")
        return dt.date.fromisoformat(mark) if mark else None
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return None


PREDICTION_COLUMNS = ("date", "horizon", "model_version", "model_sha256", "probability_up", "confidence", "price")
PREDICT_COLUMNS = (*PREDICTION_COLUMNS, "threshold", "signal", "position", "reason")


def _predict(store: Store, entry: CatalogAsset, endpoint: Endpoint, out: Answer, today) -> Answer:
    """The day's stored ML prediction per horizon (``ml_predictions``) beside the ML signal it gave
    (``ml_signals``); both partitions must be stored."""
    if out.params.as_of is None:  # no date asked: the latest day with a prediction, not a weekend's empty table
        out.as_of = _latest_with_rows(store, "ml_signals", entry.key, out)
    if out.as_of not in store.days("ml_predictions", entry.key, out.seen):
        raise QueryError(404, "DATE_NOT_MATERIALISED", f"{entry.key} ml_predictions is not materialised for {out.as_of}")
    predictions = _read(store, "ml_predictions", entry.key, out.as_of, out)
    signals = _read(store, "ml_signals", entry.key, out.as_of, out)
    decisions = signals[["date", "horizon", "threshold", "signal", "position", "reason"]]
    frame = predictions[list(PREDICTION_COLUMNS)].merge(decisions, on=["date", "horizon"], how="left", validate="1:1")
    if len(predictions) and frame["signal"].isna().any():  # the two steps disagree: a stale ml_signals partition
        raise QueryError(404, "INSUFFICIENT_DATA", f"{entry.key} ml_signals of {out.as_of} does not cover every "
                         "stored prediction: materialise ml_signals for that date again")
    if len(frame):
        frame["position"] = frame["position"].astype("int64")
    return _page(out, frame.sort_values("horizon", kind="stable"), PREDICT_COLUMNS)


def _latest_with_rows(store: Store, table: str, asset: str, out: Answer, *, look_back: int = 31) -> dt.date:
    """The latest stored day of ``table`` whose partition has rows, among the last ``look_back``
    stored days (weekends, holidays, sessions without a price hold none); the latest stored day
    when none of them has rows. Every partition read is part of the answer's ETag."""
    days = store.days(table, asset, out.seen)
    for day in reversed(days[-look_back:]):
        stored = store.read(table, asset, day, out.seen)
        if stored is not None:
            out.files.append((table, day, stored.sha256))
            if len(stored.frame):
                return day
    return days[-1]


FAN_COLUMNS = ("date", "horizon", "price", "forecast", "p05", "p25", "p75", "p95")

ASSET_ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (
    Endpoint("forecast", "The quantile ensemble's forecast per horizon (the stored horizon_ensembles rows)",
             "horizon_ensembles", "day"),
    Endpoint("signals", "The daily signals, raw and optimised, from the first stored date (or start) to as_of",
             "signals", "day", filters=_VARIANT, history_by_default=True),
    Endpoint("signal", "One day's signal, raw and optimised", "signals", "one_day", filters=_VARIANT),
    Endpoint("horizons", "Each horizon's forecast against the day's price, and which horizons each signal uses",
             "horizon_ensembles", "derived", build=_horizons, columns=HORIZON_COLUMNS),
    Endpoint("forecast-fan", "The forecast fan: the ensemble forecast per horizon with the selected models' "
             "p05, p25, p75 and p95", "horizon_ensembles", "day", columns=FAN_COLUMNS),
    Endpoint("heatmap", "Every horizon pair's slope behind the signal (the heatmap)", "slopes", "day",
             filters=_VARIANT),
    Endpoint("metrics", "The track record's statistics as of the date, point in time and legacy side by side",
             "statistics", "record", filters={**_SIGNAL, **_BASIS}),
    Endpoint("trades", "Every trade of the record as of the date (start/end filter entry_date)", "trades", "record",
             filters={**_SIGNAL, **_BASIS, "status": Allowed(("open", "closed"))}, range_column="entry_date"),
    Endpoint("equity", "The record's daily rows as of the date: returns, equity, drawdown, buy and hold",
             "daily", "record", filters=_SIGNAL, range_column="date"),
    Endpoint("leaderboard", "The horizon search's top configurations (rank 1 is the winner)", "leaderboard", "day"),
    Endpoint("ensemble-config", "The catalog's ensemble settings and the configuration chosen per horizon that day",
             "horizon_ensembles", "derived", build=_ensemble_config, columns=ENSEMBLE_CONFIG_COLUMNS),
    Endpoint("status", "Freshness, upstream watermark and contract version", "daily", "document", build=_status),
    Endpoint("predict", "The ML model's stored prediction per horizon on the date (probability of an up move, "
             "confidence, model version and hash) and the ML signal it gave (BUY, SELL or HOLD with its reason)",
             "ml_signals", "derived", build=_predict, columns=PREDICT_COLUMNS, date_parameter="date"),
    Endpoint("ml-accuracy", "The ML probabilities' accuracy as of the date per horizon and model version: hit rate, "
             "Brier score, mean predicted and observed frequency, on outcomes realised by then", "ml_accuracy",
             "record", filters=_SCOPE),
    Endpoint("ml-calibration", "The ML probabilities' calibration as of the date per horizon and model version: "
             "per probability bin, the scored predictions, their mean predicted probability and the observed "
             "frequency of up moves", "ml_calibration", "record", filters=_SCOPE),
)}


ASSET_COLUMNS = ("asset", "name", "display_name", "category", "calendar", "selection_mode", "start_date", "end_date",
                 "first_date", "latest_date")


def assets_answer(store: Store, catalog: Catalog, allowed: Callable[[str], bool], params: Params) -> Answer:
    """The catalog entries a key may see, with the first and latest dates of their record."""
    rows, seen = [], []
    for entry in catalog.assets:
        if not allowed(entry.key):
            continue
        days = store.days("daily", entry.key, seen)
        rows.append({
            "asset": entry.key, "name": entry.name, "display_name": entry.display_name, "category": entry.category,
            "calendar": entry.calendar, "selection_mode": entry.selection_mode,
            "start_date": pd.Timestamp(entry.start_date),
            "end_date": pd.Timestamp(entry.end_date) if entry.end_date else pd.NaT,
            "first_date": pd.Timestamp(days[0]) if days else pd.NaT,
            "latest_date": pd.Timestamp(days[-1]) if days else pd.NaT,
        })
    frame = pd.DataFrame(rows, columns=list(ASSET_COLUMNS))
    for column in ("start_date", "end_date", "first_date", "latest_date"):
        frame[column] = pd.to_datetime(frame[column])
    out = Answer(endpoint="assets", asset=None, as_of=None, params=params, seen=seen)
    # the answer depends on the listing, not on file contents: its rows are its version
    out.files.append(("assets", dt.date.min, str(int(pd.util.hash_pandas_object(frame, index=False).sum()))))
    return _page(out, frame, ASSET_COLUMNS)



def models_answer(store: Store, catalog: Catalog, allowed: Callable[[str], bool]) -> Answer:
    """The registry's manifests of the catalog assets a key may read, in the registry's order, and
    those of its manifests that cannot be read (asset, version and reason; never a server path):
    only these assets' folders are read, so another asset's broken manifest changes nothing here."""
    seen: list = []
    visible = {entry.key for entry in catalog.assets if allowed(entry.key)}
    manifests, problems = scan_manifests(store.data_dir, assets=visible)  # a manifest is its folder's asset's
    unreadable = [{"asset": p.asset, "version": p.version, "reason": p.reason} for p in problems]
    if store.local:  # a new version or a rewritten manifest changes one of these identities
        root = UPath(store.data_dir) / REGISTRY_FOLDER
        folders = [root] + [root / m["asset"] for m in manifests] + [root / m["asset"] / m["version"] for m in manifests]
        folders += [root / p.asset / p.version for p in problems]  # mending one in place changes the answer
        for folder in dict.fromkeys(str(f.path if hasattr(f, "path") else f) for f in folders):
            seen.append((folder, identity_of(folder)))
        for asset in visible:
            name = str(root / asset)
            seen.append((name, identity_of(name)))
    out = Answer(endpoint="models", asset=None, as_of=None, seen=seen)
    body = json.dumps([manifests, unreadable], sort_keys=True, allow_nan=False)
    out.files.append(("models", dt.date.min, hashlib.sha256(body.encode()).hexdigest()))
    out.document = {"endpoint": "models", "total": len(manifests), "models": manifests, "unreadable": unreadable}
    return out
