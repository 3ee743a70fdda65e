"""The child models known as of a date, and how that set changed from the day before.

Two sources meet here. ``qml_models`` says, point in time, which models published on which day:
:func:`model_rosters` derives each model's ``first_seen`` and ``last_seen`` up to a date and
whether it is *live* (published on its horizon's latest day with rows up to the date, so a
weekend, a holiday or a horizon missing for a day changes nothing). Upstream's model metadata
endpoint, where it exists, says what each model *is* (algorithm, training window, code version,
anything else): :func:`normalise_upstream` types it, :func:`metadata_table` joins it to the roster.
What upstream describes today describes today; which date may carry it is the caller's decision
(see ``docs/model-metadata.md``), this module only joins what it is given.

:func:`churn` compares two consecutive tables: models added and retired per horizon (live sets),
models whose upstream description changed, and code-version changes; :func:`churn_alerts` says
which of those the ``qml_model_churn`` check warns about.

A run over a year builds a table and a churn per date: :func:`metadata_tables` and :func:`churns`
do that for many dates at once (the undescribed dates typed as one frame, each table keyed once),
equal date by date to :func:`metadata_table` and :func:`churn` (tested).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from nexus_assets.core.contract import MODEL_METADATA, columns, empty_frame

__all__ = [
    "DESCRIBED",
    "Churn",
    "churn",
    "churn_alerts",
    "churns",
    "iter_rosters",
    "metadata_table",
    "metadata_tables",
    "model_rosters",
    "normalise_upstream",
    "upstream_fields_of",
]

DESCRIBED: tuple[str, ...] = ("algorithm", "training_window", "code_version", "upstream_fields")
"""The columns that come from upstream's metadata endpoint (null where the table is derived)."""
_KEY = ["horizon", "symbol"]
_OWN = ("symbol", "horizon", "n_predict", "algorithm", "training_window", "code_version")
_NAT = np.iinfo(np.int64).min
_TYPED = empty_frame(MODEL_METADATA).dtypes.to_dict()


def model_rosters(rows: pd.DataFrame, dates: Iterable[dt.date]) -> dict[dt.date, pd.DataFrame]:
    """Per date ``D``: every ``(horizon, symbol)`` with a row in ``rows`` on or before ``D``, with
    ``first_seen``, ``last_seen`` (latest day up to ``D``) and ``live``; sorted by horizon, symbol.

    ``rows`` has at least ``symbol``, ``time`` (the day) and ``n_predict``, in any order; rows
    after ``D`` never change ``D``'s roster. :func:`iter_rosters` over the one frame."""
    return dict(iter_rosters([rows], dates))


def iter_rosters(frames: Iterable[pd.DataFrame], dates: Iterable[dt.date], *,
                 chunk_rows: int = 500_000) -> Iterator[tuple[dt.date, pd.DataFrame]]:
    """:func:`model_rosters`, streamed: ``(D, roster of D)`` for each of ``dates`` in date order,
    from ``frames`` given in date order (each frame may hold several days, in any order within
    it; a day earlier than one already given is an error).

    Only the models are held, and the frames of about ``chunk_rows`` rows at a time (looked up
    together: a lookup per day cost twice the CPU): a step reads a year of a project's history
    (100,000 model rows a day at QDT's largest) in the memory of a few days and its models. A
    date's roster is yielded once a later day has been read (or the frames end)."""
    wanted = sorted(set(dates))
    if not wanted:
        return
    models = _Models()
    pending = 0  # wanted[pending] is the next date to yield
    last_stamp = pd.Timestamp(wanted[-1]).value
    for rows, days in _chunks(frames, chunk_rows, last_stamp):
        ids = models.numbers(rows["n_predict"], rows["symbol"])
        order = np.argsort(days, kind="stable")
        days, ids = days[order], ids[order]
        bounds = np.flatnonzero(np.diff(days)) + 1
        for start, stop in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(days)].tolist()):
            stamp = int(days[start])
            while pending < len(wanted) and pd.Timestamp(wanted[pending]).value < stamp:
                yield wanted[pending], models.roster(wanted[pending])
                pending += 1
            models.see(stamp, ids[start:stop])
    for day in wanted[pending:]:
        yield day, models.roster(day)


def _chunks(frames: Iterable[pd.DataFrame], rows: int, last_stamp: int) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The non-empty frames' rows up to ``last_stamp`` (a day's midnight in ns), concatenated into
    chunks of at least ``rows`` rows (the last one may be smaller), each with its rows' days (ns);
    stops at the first frame with rows after that day (frames come in date order: the later ones
    change nothing). A frame with a day earlier than one before it is an error."""
    held: list[tuple[pd.DataFrame, np.ndarray]] = []
    count, latest = 0, _NAT
    for frame in frames:
        if not len(frame):
            continue
        days = pd.to_datetime(frame["time"]).dt.normalize().to_numpy(dtype="datetime64[ns]").astype("int64")
        if (days == _NAT).any():  # a row without a time has no day: it never counted
            frame, days = frame[days != _NAT], days[days != _NAT]
            if not len(frame):
                continue
        if days.min() < latest:
            raise ValueError(f"rows of {pd.Timestamp(days.min()).date()} after rows of {pd.Timestamp(latest).date()}: "
                             "the frames must come in date order")
        latest = int(days.max())
        after = days > last_stamp
        beyond = bool(after.any())
        if beyond:
            frame, days = frame[~after], days[~after]
        if len(frame):
            held.append((frame, days))
            count += len(frame)
        if held and (count >= rows or beyond):
            yield _joined(held)
            held, count = [], 0
        if beyond:
            return
    if held:
        yield _joined(held)


def _joined(held: list[tuple[pd.DataFrame, np.ndarray]]) -> tuple[pd.DataFrame, np.ndarray]:
    if len(held) == 1:
        return held[0]
    return pd.concat([frame for frame, _ in held], ignore_index=True), np.concatenate([days for _, days in held])


class _Models:
    """Every ``(horizon, symbol)`` seen so far, numbered in order of appearance, with its first and
    last day (ns); fed day by day in date order."""

    def __init__(self) -> None:
        self._known = pd.MultiIndex.from_arrays([np.empty(0, dtype=np.int64), np.empty(0, dtype=object)])
        self.horizon = np.empty(0, dtype=np.int64)
        self.symbol = np.empty(0, dtype=object)
        self.first = np.empty(0, dtype=np.int64)
        self.last = np.empty(0, dtype=np.int64)
        self._sorted: np.ndarray | None = None  # model numbers sorted by horizon, symbol (until one appears)

    def numbers(self, horizons: pd.Series, symbols: pd.Series) -> np.ndarray:
        """The number of each row's model; models not seen before are numbered (first and last day
        unknown until :meth:`see`). The keys are factorised column by column, then as one integer
        (a factorisation of the pairs builds a tuple per row: four times the CPU)."""
        symbol_codes, symbol_values = pd.factorize(symbols.astype(str), use_na_sentinel=False)
        horizon_codes, horizon_values = pd.factorize(horizons.astype("int64"))
        width = max(1, len(symbol_values))
        codes, pairs = pd.factorize(horizon_codes.astype(np.int64) * width + symbol_codes)
        unique_horizons = np.asarray(horizon_values, dtype=np.int64)[pairs // width]
        unique_symbols = np.asarray(symbol_values, dtype=object)[pairs % width]
        found = (self._known.get_indexer(pd.MultiIndex.from_arrays([unique_horizons, unique_symbols]))
                 if len(self._known) else np.full(len(pairs), -1, dtype=np.intp))
        new = found < 0
        if new.any():
            count, added = len(self.horizon), int(new.sum())
            found[new] = np.arange(count, count + added)
            self.horizon = np.concatenate([self.horizon, unique_horizons[new]])
            self.symbol = np.concatenate([self.symbol, unique_symbols[new]])
            self.first = np.concatenate([self.first, np.full(added, _NAT, dtype=np.int64)])
            self.last = np.concatenate([self.last, np.full(added, _NAT, dtype=np.int64)])
            self._known = pd.MultiIndex.from_arrays([self.horizon, self.symbol])
            self._sorted = None
        return found[codes].astype(np.int64)

    def see(self, stamp: int, ids: np.ndarray) -> None:
        """The models with rows on one day (``stamp``: its midnight in ns), not earlier than any
        day seen before (:func:`_chunks` checks the order)."""
        first = self.first[ids]
        self.first[ids] = np.where(first == _NAT, stamp, first)
        self.last[ids] = stamp

    def roster(self, day: dt.date) -> pd.DataFrame:
        """The roster of ``day`` (models numbered from rows read ahead, after ``day``, have no first
        day yet and are left out by :func:`_roster`)."""
        if self._sorted is None:
            keys = pd.DataFrame({"horizon": self.horizon, "symbol": self.symbol})
            self._sorted = keys.sort_values(_KEY, kind="stable").index.to_numpy()
        order = self._sorted
        return _roster(self.horizon[order], self.symbol[order], self.first[order], self.last[order], day)


def _roster(horizon_of: np.ndarray, symbols: np.ndarray, first: np.ndarray, last: np.ndarray, day: dt.date) -> pd.DataFrame:
    """The roster of ``day`` from the models' arrays (sorted by horizon, then symbol)."""
    seen = first != _NAT
    horizons, last_seen = horizon_of[seen], last[seen]
    # the latest day with rows of each horizon: the models are sorted by horizon, so each horizon
    # is one run of rows and its maximum one reduceat (a groupby per date cost more than the rest)
    latest = last_seen
    if len(horizons):
        starts = np.flatnonzero(np.r_[True, horizons[1:] != horizons[:-1]])
        latest = np.repeat(np.maximum.reduceat(last_seen, starts), np.diff(np.r_[starts, len(horizons)]))
    return pd.DataFrame({
        "date": np.full(len(horizons), np.datetime64(day, "ns")),
        "horizon": horizons,
        "symbol": pd.Series(symbols[seen], dtype=object).astype(str),
        "first_seen": first[seen].astype("datetime64[ns]"),
        "last_seen": last_seen.astype("datetime64[ns]"),
        "live": last_seen == latest,
    })


def upstream_fields_of(record: dict) -> str:
    """The fields of one upstream metadata record the table has no column for, as canonical JSON."""
    rest = {str(k): _json_value(v) for k, v in record.items() if k not in _OWN and _plain(v) is not None}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)


def _json_value(value):
    # a record padded by pandas holds NaN for an absent field (dropped above); an infinite
    # number is not JSON, so it is kept as its text
    return str(value) if isinstance(value, float) and not np.isfinite(value) else value


def normalise_upstream(raw: pd.DataFrame) -> pd.DataFrame:
    """Upstream's model metadata as ``horizon`` (from ``horizon`` or ``n_predict``; null when it
    sends neither), ``symbol`` and the :data:`DESCRIBED` columns, one row per model.

    ``symbol`` is required; ``training_window`` is kept when it is a whole number (else null,
    and the raw value stays readable in ``upstream_fields``). Raises ``ValueError`` naming the
    field and a few rows when upstream's records cannot be keyed."""
    if "symbol" not in raw.columns:
        raise ValueError(
            "upstream's model metadata has no 'symbol' field (fields received: "
            f"{', '.join(map(str, raw.columns)) or 'none'}); it cannot be joined to qml_models"
        )
    records = raw.to_dict(orient="records")
    symbols = raw["symbol"]
    if symbols.isna().any() or not symbols.map(lambda v: isinstance(v, str) and v != "").all():
        bad = [repr(v) for v in symbols[~symbols.map(lambda v: isinstance(v, str) and v != "")].head(3)]
        raise ValueError(f"upstream's model metadata: field 'symbol' must be a non-empty string, got {', '.join(bad)}")
    horizon_field = "horizon" if "horizon" in raw.columns else "n_predict" if "n_predict" in raw.columns else None
    horizon = (pd.to_numeric(raw[horizon_field], errors="coerce") if horizon_field
               else pd.Series(np.nan, index=raw.index))
    if horizon_field and (horizon.isna() | (horizon < 1) | (horizon != horizon.round())).any():
        raise ValueError(f"upstream's model metadata: field {horizon_field!r} must be a whole number >= 1")
    window = pd.to_numeric(raw["training_window"], errors="coerce") if "training_window" in raw.columns else None
    frame = pd.DataFrame({
        "horizon": horizon.astype("Int64"),
        "symbol": symbols.astype(str),
        "algorithm": _text(raw, "algorithm"),
        "training_window": (window.where(window == window.round()).astype("Int64") if window is not None
                            else pd.Series(pd.NA, index=raw.index, dtype="Int64")),
        "code_version": _text(raw, "code_version"),
        "upstream_fields": pd.Series([upstream_fields_of(r) for r in records], index=raw.index, dtype=str),
    })
    doubled = frame.duplicated(["horizon", "symbol"], keep=False)
    if doubled.any():
        shown = frame.loc[doubled, ["horizon", "symbol"]].head(3).to_dict(orient="records")
        raise ValueError(f"upstream's model metadata describes a model twice: {shown}")
    return frame.sort_values(["horizon", "symbol"], kind="stable", ignore_index=True)


def _text(raw: pd.DataFrame, name: str) -> pd.Series:
    if name not in raw.columns:
        return pd.Series(None, index=raw.index, dtype=str)
    values = raw[name].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    return values.astype(str)


def metadata_table(roster: pd.DataFrame, day: dt.date, described: pd.DataFrame | None) -> pd.DataFrame:
    """The stored ``qml_model_metadata`` table of ``day``: the roster with upstream's description
    (``described``: :func:`normalise_upstream` rows, or the described columns of a stored table),
    or derived from ``qml_models`` alone when ``described`` is None.

    Models upstream describes but ``qml_models`` never had up to ``day`` are listed too (null
    ``first_seen``/``last_seen``, not live), when upstream says their horizon. A description
    without a horizon applies to the symbol on every horizon it publishes on."""
    if _undescribed(described):  # most days: one frame built at once
        n = len(roster)
        return pd.DataFrame({
            **{name: roster[name].to_numpy() for name in ("date", "horizon", "first_seen", "last_seen")},
            "symbol": roster["symbol"].to_numpy(),
            "live": roster["live"].to_numpy(dtype=bool),
            "metadata_source": np.full(n, "qml_models", dtype=object),
            **{name: np.full(n, None, dtype=object) for name in DESCRIBED},
        })[list(columns(MODEL_METADATA))].astype(_TYPED)
    table = roster.copy()
    for name in DESCRIBED:
        table[name] = pd.Series(None, index=table.index, dtype="Int64" if name == "training_window" else str)
    table["metadata_source"] = "qml_models"
    keyed = described[described["horizon"].notna()]
    loose = described[described["horizon"].isna()].drop(columns="horizon")
    fields = list(DESCRIBED)
    if len(keyed):
        keyed = keyed.assign(horizon=keyed["horizon"].astype("int64"))
        joined = table[_KEY].merge(keyed[[*_KEY, *fields]], on=_KEY, how="left", indicator=True)
        matched = (joined["_merge"] == "both").to_numpy()
        for name in fields:
            table.loc[matched, name] = joined.loc[matched, name].to_numpy()
        table.loc[matched, "metadata_source"] = "upstream"
        unseen = keyed.merge(table[_KEY], on=_KEY, how="left", indicator=True)
        unseen = unseen[unseen["_merge"] == "left_only"]
        if len(unseen):
            extra = pd.DataFrame({
                "date": np.full(len(unseen), np.datetime64(day, "ns")),
                "horizon": unseen["horizon"].to_numpy(dtype=np.int64),
                "symbol": unseen["symbol"].astype(str).to_numpy(),
                "first_seen": np.full(len(unseen), np.datetime64("NaT", "ns")),
                "last_seen": np.full(len(unseen), np.datetime64("NaT", "ns")),
                "live": np.zeros(len(unseen), dtype=bool),
                **{name: unseen[name].to_numpy() for name in fields},
                "metadata_source": "upstream",
            })
            table = pd.concat([table, extra], ignore_index=True)
    if len(loose):
        joined = table[["symbol"]].merge(loose[["symbol", *fields]], on="symbol", how="left", indicator=True)
        matched = ((joined["_merge"] == "both") & (table["metadata_source"] == "qml_models")).to_numpy()
        for name in fields:
            table.loc[matched, name] = joined.loc[matched, name].to_numpy()
        table.loc[matched, "metadata_source"] = "upstream"
    table = table.sort_values(_KEY, kind="stable", ignore_index=True)
    return table[list(columns(MODEL_METADATA))].astype(_TYPED)


def metadata_tables(rosters: Mapping[dt.date, pd.DataFrame],
                    described: Mapping[dt.date, pd.DataFrame | None]) -> dict[dt.date, pd.DataFrame]:
    """:func:`metadata_table` of every date of ``rosters`` (with ``described.get(date)``), in the
    order of ``rosters``. The dates without a description (most of a run) are typed as one frame
    and split by date: typing the columns cost more than building them, once per date."""
    plain = [day for day in rosters if _undescribed(described.get(day))]
    out = {day: metadata_table(rosters[day], day, described[day]) for day in rosters if day not in set(plain)}
    if plain:
        table = metadata_table(pd.concat([rosters[day] for day in plain], ignore_index=True), plain[0], None)
        bounds = np.cumsum([0, *(len(rosters[day]) for day in plain)])
        for day, first, last in zip(plain, bounds[:-1].tolist(), bounds[1:].tolist()):
            out[day] = table.iloc[first:last].reset_index(drop=True)
    return {day: out[day] for day in rosters}


def _undescribed(described: pd.DataFrame | None) -> bool:
    return described is None or not len(described)


@dataclass(frozen=True)
class Churn:
    """What changed between two consecutive days' tables.

    ``per_horizon``: one row per horizon of either day: ``live_before``, ``live``, ``added``,
    ``retired`` and ``lost_share`` (retired / live_before, 0 without a day before). ``changes``:
    one row per model that was added, retired or changed (``change``), with its code version
    before and after; ``changed`` means upstream described the model on both days, differently.

    Held as plain rows, the frames built when asked for: a run over a year makes one churn per
    date, and most dates only need the counts and a few records for the partition's metadata."""

    per_horizon_rows: tuple[tuple, ...]
    change_rows: tuple[tuple, ...]

    PER_HORIZON_COLUMNS: ClassVar[tuple[str, ...]] = ("horizon", "live_before", "live", "added", "retired", "lost_share")
    CHANGE_COLUMNS: ClassVar[tuple[str, ...]] = ("horizon", "symbol", "change", "code_version_before", "code_version")

    @functools.cached_property
    def per_horizon(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(list(self.per_horizon_rows), columns=list(self.PER_HORIZON_COLUMNS))

    @functools.cached_property
    def changes(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(list(self.change_rows), columns=list(self.CHANGE_COLUMNS))

    def count(self, change: str) -> int:
        return sum(1 for row in self.change_rows if row[2] == change)

    @property
    def code_version_changes(self) -> pd.DataFrame:
        rows = self.changes[self.changes["change"] == "changed"]
        return rows[rows["code_version_before"] != rows["code_version"]]

    def code_version_change_count(self) -> int:
        """``len(code_version_changes)``, without building a frame on a date where nothing changed."""
        return len(self.code_version_changes) if self.count("changed") else 0

    def per_horizon_records(self) -> list[dict]:
        """``per_horizon`` as records (what ``per_horizon.to_dict(orient="records")`` gives)."""
        return [dict(zip(self.PER_HORIZON_COLUMNS, row)) for row in self.per_horizon_rows]

    def change_records(self, limit: int) -> list[dict]:
        """The first ``limit`` rows of ``changes`` as records (a missing code version is None)."""
        return [dict(zip(self.CHANGE_COLUMNS, row)) for row in self.change_rows[:limit]]


def churn(before: pd.DataFrame | None, after: pd.DataFrame) -> Churn:
    """The churn from ``before`` (the previous day's table; None when there is none) to ``after``.

    Sets of ``(horizon, symbol)`` keys built from whole columns: linear in the models, without a
    pandas operation per model (a daily run over a year calls this once per date)."""
    return _churn(_keyed(before), _keyed(after))


def churns(tables: Sequence[pd.DataFrame | None]) -> list[Churn]:
    """:func:`churn` of each pair of consecutive ``tables`` (the first is the day before the
    first date: None when there is none); each table is keyed once, not twice.

    Most days of a project keep the same models in the same order, derived from ``qml_models``
    alone: such a pair is compared column against column (:func:`_same_models_churn`, equal to
    the keyed comparison, tested), without a set of keys per table."""
    keyed: dict[int, _Keyed] = {}

    def keys(i: int) -> _Keyed:
        if i not in keyed:
            keyed[i] = _keyed(tables[i])
        return keyed[i]

    out = []
    for i in range(1, len(tables)):
        fast = _same_models_churn(tables[i - 1], tables[i])
        out.append(fast if fast is not None else _churn(keys(i - 1), keys(i)))
    return out


def _same_models_churn(before: pd.DataFrame | None, after: pd.DataFrame | None) -> Churn | None:
    """The churn between two tables that list the same models in the same order, neither with an
    upstream description; None for any other pair."""
    if before is None or after is None or len(before) != len(after) or not len(after):
        return None
    if (before["metadata_source"] == "upstream").any() or (after["metadata_source"] == "upstream").any():
        return None
    horizons = after["horizon"].to_numpy(dtype=np.int64)
    symbols = after["symbol"].to_numpy(dtype=object)
    if not (np.array_equal(before["horizon"].to_numpy(dtype=np.int64), horizons)
            and np.array_equal(before["symbol"].to_numpy(dtype=object), symbols)):
        return None
    was, now = before["live"].to_numpy(dtype=bool), after["live"].to_numpy(dtype=bool)
    added, retired = now & ~was, was & ~now
    records = []
    for change, rows in (("added", added), ("retired", retired)):
        for horizon, symbol, i in sorted((int(horizons[i]), symbols[i], i) for i in np.flatnonzero(rows).tolist()):
            records.append((horizon, symbol, change, _plain(before["code_version"].iat[i]),
                            _plain(after["code_version"].iat[i])))
    present, codes = np.unique(horizons, return_inverse=True)
    count = {name: np.bincount(codes, weights=mask, minlength=len(present)).astype(np.int64).tolist()
             for name, mask in (("live_before", was), ("live", now), ("added", added), ("retired", retired))}
    rows = []
    for j, horizon in enumerate(present.tolist()):
        then, lost = count["live_before"][j], count["retired"][j]
        rows.append((int(horizon), then, count["live"][j], count["added"][j], lost, lost / then if then else 0.0))
    return Churn(tuple(rows), tuple(records))


def _churn(old: _Keyed, new: _Keyed) -> Churn:
    added, retired = sorted(new.live - old.live), sorted(old.live - new.live)
    changed = sorted(k for k in old.described.keys() & new.described.keys() if old.described[k] != new.described[k])
    records = []
    for change, keys in (("added", added), ("retired", retired), ("changed", changed)):
        for k in keys:
            records.append((int(k[0]), k[1], change, _plain(old.versions.get(k)), _plain(new.versions.get(k))))
    horizons = sorted({h for h, _ in old.live | new.live} | set(new.horizons))
    count = {name: Counter(h for h, _ in keys) for name, keys in
             (("live_before", old.live), ("live", new.live), ("added", added), ("retired", retired))}
    rows = []
    for h in horizons:
        then, lost = count["live_before"][h], count["retired"][h]
        rows.append((int(h), then, count["live"][h], count["added"][h], lost, lost / then if then else 0.0))
    return Churn(tuple(rows), tuple(records))


@dataclass(frozen=True)
class _Keyed:
    live: set
    described: dict  # key -> the described fields (missing values as None)
    versions: dict  # key -> code_version as stored, for every model (read through _plain)
    horizons: list


def _keyed(table: pd.DataFrame | None) -> _Keyed:
    if table is None or not len(table):
        return _Keyed(set(), {}, {}, [])
    keys = list(zip(table["horizon"].tolist(), table["symbol"].tolist()))
    live = {keys[i] for i in np.flatnonzero(table["live"].to_numpy(dtype=bool)).tolist()}
    upstream = np.flatnonzero((table["metadata_source"] == "upstream").to_numpy(dtype=bool)).tolist()
    described = {}
    if upstream:  # only described models have fields to compare (none on a derived day)
        fields = list(zip(*(map(_plain, table[name].take(upstream).tolist()) for name in DESCRIBED)))
        described = {keys[i]: f for i, f in zip(upstream, fields)}
    versions = dict(zip(keys, table["code_version"].tolist()))
    return _Keyed(live, described, versions, table["horizon"].tolist())


def _plain(value):
    return None if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) else value


def churn_alerts(result: Churn, max_lost_share: float) -> list[str]:
    """What the churn check warns about: a horizon that lost more than ``max_lost_share`` of its
    live models, and every code-version change; one line each, empty when nothing is wrong."""
    alerts = []
    for horizon, live_before, _live, _added, retired, lost_share in result.per_horizon_rows:
        if lost_share > max_lost_share:
            alerts.append(f"horizon {horizon} lost {retired} of {live_before} live models "
                          f"({lost_share:.0%} > {max_lost_share:.0%})")
    if not result.count("changed"):
        return alerts  # most days: nothing described changed
    for row in result.code_version_changes.itertuples(index=False):
        alerts.append(f"{row.symbol} (h{row.horizon}): code_version {row.code_version_before} -> {row.code_version}")
    return alerts
