"""``nexus-assets qml-server``: a QML-compatible HTTP server on loopback.

It serves the sandbox and synthetic projects of one or more catalogs exactly as quantum_ml serves
real ones (``GET /get_qml_models/<project_id>``, a JSON array of rows with RFC 1123 times, as
Flask renders them), plus every improvement of the contract page: ``from_date``/``to_date``,
Parquet (``?format=parquet`` or ``Accept: application/vnd.apache.parquet``), the
``X-QML-Contract-Version`` and ``X-QML-Watermark`` headers, ``/get_qml_horizon_forecast`` and
``/get_qml_model_metadata``. It requires the API key (``qml-api-key`` header, or HTTP Basic with
the key as password) read from the environment, never from the command line.

Built on the standard library's threading HTTP server, hardened as :mod:`nexus_assets.serving`
says (socket timeout, bounded threads, request bodies read or refused, security headers, a
clean 400 on a malformed path): it needs no framework, and the fault-injection mode needs
byte-level control of what goes on the wire.

Fault injection: a script of :class:`Fault` objects, consumed one per data request in order
(``QMLServer(faults=...)``, :meth:`QMLServer.script`, or ``nexus-assets qml-server --faults
faults.json`` with a JSON list of fault objects, see :func:`load_faults`). Transport faults
misbehave on the wire; response and payload faults serve ``/get_qml_models`` with other headers or
with rows transformed before serialisation, in JSON and in Parquet alike.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hmac
import io
import json
import logging
import math
import re
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexus_assets.catalog import Catalog
from nexus_assets.core.contract import CONTRACT_VERSION, QML_COLUMNS
from nexus_assets.qml.client import API_KEY_HEADER, CONTRACT_HEADER, PARQUET_MEDIA_TYPE, WATERMARK_HEADER
from nexus_assets.qml.sources import EmbeddedProject, embedded_project, horizon_forecast_rows
from nexus_assets.serving import DEFAULT_MAX_THREADS, DEFAULT_REQUEST_TIMEOUT, HardenedHandler, HardenedHTTPServer

__all__ = [
    "QMLServer",
    "Fault",
    "FAULT_KINDS",
    "Served",
    "apply_fault",
    "load_faults",
    "projects_from_catalogs",
    "rows_to_json",
]

log = logging.getLogger("nexus_assets.qml.server")
# ASCII digits, at most 18 (an int64): anything else is "no such route", never a server error
# (Python refuses to parse an int of more than 4,300 digits).
_ROUTE = re.compile(r"/(get_qml_models|get_qml_horizon_forecast|get_qml_model_metadata)/([0-9]{1,18})/?")


# Transport faults misbehave on the wire; the others answer 200 with altered headers or rows.
TRANSPORT_FAULTS = ("status", "reset", "stall", "truncate", "content_type", "redirect", "trickle", "gzip_bomb")
RESPONSE_FAULTS = ("ok", "ignore_range", "contract_version", "watermark", "json_body", "garbled_body", "echo_key",
                   "parquet_bomb")
PAYLOAD_FAULTS = (
    "missing_field",
    "renamed_field",
    "wrong_type",
    "numbers_as_strings",
    "duplicate_rows",
    "set_value",
    "conflicting_price",
    "mixed_time_formats",
    "future_rows",
    "extra_field",
    "empty_day",
    "duplicate_key",
)
FAULT_KINDS = TRANSPORT_FAULTS + RESPONSE_FAULTS + PAYLOAD_FAULTS
_NEEDS_FIELD = ("missing_field", "renamed_field", "wrong_type", "numbers_as_strings", "set_value")
_NUMERIC_FIELDS = tuple(c for c in QML_COLUMNS if c not in ("symbol", "time"))
# Where ``echo_key`` puts the server's own key: the body, one of these headers, or a row field.
ECHO_HEADERS = (CONTRACT_HEADER, WATERMARK_HEADER, "Content-Type", "Location")


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to the next data request (``/get_qml_*``) in order.

    Transport (any data endpoint):
    ``status`` (answer ``status`` with an error body, and ``Retry-After: retry_after`` if given),
    ``reset`` (close the connection without answering), ``stall`` (wait ``seconds``, then answer
    normally), ``truncate`` (announce the full Content-Length, send part of it, close),
    ``content_type`` (a 200 with an HTML body).

    Response (``/get_qml_models``; consumed without effect elsewhere):
    ``ok`` (answer normally: a placeholder in a script), ``ignore_range`` (the whole history,
    whatever ``from_date``/``to_date`` say, as today's quantum_ml endpoint does),
    ``contract_version`` (announce ``version``), ``watermark`` (upstream has published only up to
    ``day``: that watermark, and no rows after it).

    Payload (``/get_qml_models``; the served rows are transformed before serialisation):
    ``missing_field`` / ``renamed_field`` (``field`` dropped, or renamed ``to``, default camelCase);
    ``wrong_type`` (the whole ``field`` column in another type: ``symbol`` as a number, ``time``
    as epoch milliseconds, a number as a boolean); ``numbers_as_strings`` (``field`` as strings
    such as ``"101.5"``); ``duplicate_rows`` (the first ``rows`` rows sent twice); ``set_value``
    (``field`` = ``value`` in the first ``rows`` rows: NaN and infinities go out as the bare JSON
    tokens Python writes, and as NaN, not null, in Parquet); ``conflicting_price``
    (``target_var_price`` 1% higher in the first ``rows`` rows of a day); ``mixed_time_formats``
    (times as RFC 1123, ISO dates, ISO with ``Z``, ``+00:00``, ``+05:30`` and ``-05:00`` offsets,
    all the same instant: must be accepted); ``future_rows`` (``rows`` rows dated ``days`` after the
    watermark); ``extra_field`` (an unknown field ``field``, default ``model_note``, = ``value``);
    ``empty_day`` (no rows for ``day``, default the first served day); ``duplicate_key`` (``field``
    written twice in the first ``rows`` rows, first as ``value``, then as the real value, so "last
    wins" reads the real row; in Parquet, a second column of that name).
    ``set_value`` also takes ``field = "time"`` with a date ``value`` (``9999-12-31``): the column
    goes out in microseconds (RFC 1123 in JSON, ``timestamp[us]`` in Parquet), which can hold it.
    ``day`` restricts the row-level faults to that day's rows (``YYYY-MM-DD``); ``extra_field``
    with a ``day`` sets ``value`` on that day's rows only (null elsewhere).

    Hostile upstream (added for the hardening of issue 11):
    ``redirect`` (transport: answer ``status`` if it is a 3xx, else 302, with ``Location: to``);
    ``trickle`` (transport: the normal answer, its body written ``size`` bytes at a time,
    ``seconds`` apart); ``gzip_bomb`` (transport: a 200 ``Content-Encoding: gzip`` body, streamed,
    inflating to ``size`` bytes: ``[`` and whitespace); ``parquet_bomb`` (response: a Parquet body
    of ``size`` identical rows, a few KB on the wire, encoded as it is sent); ``json_body`` (response: ``value``, a
    text, as the whole ``application/json`` body, e.g. ``{}`` or ``null``); ``garbled_body``
    (response: the first half of the normal body, announced with its own length: complete on the
    wire, unreadable as JSON or Parquet); ``echo_key`` (response: the server's API key echoed back,
    in ``field``: ``body`` (an invalid body quoting it), a header of :data:`ECHO_HEADERS`,
    ``header_line`` (a malformed header line quoting it), or a row field, whose value it becomes in the
    first ``rows`` rows; ``Location`` answers a redirect
    to a host named after the key, which no client may follow).
    """

    kind: str
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    field: str | None = None
    to: str | None = None
    value: Any = None
    rows: int = 3
    day: str | None = None
    days: int = 1
    version: str | None = None
    size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.kind in _NEEDS_FIELD and not self.field:
            raise ValueError(f"fault {self.kind!r} needs a field")
        if self.kind in ("wrong_type", "missing_field", "renamed_field", "duplicate_key") and self.field not in QML_COLUMNS:
            raise ValueError(f"fault {self.kind!r}: field must be one of {', '.join(QML_COLUMNS)}, got {self.field!r}")
        if self.kind == "numbers_as_strings" and self.field not in _NUMERIC_FIELDS:
            raise ValueError(f"fault {self.kind!r}: field must be one of {', '.join(_NUMERIC_FIELDS)}, got {self.field!r}")
        if self.kind == "set_value" and self.field not in _NUMERIC_FIELDS + ("time",):
            raise ValueError(f"fault {self.kind!r}: field must be one of {', '.join(_NUMERIC_FIELDS + ('time',))}, got {self.field!r}")
        if self.kind == "set_value":
            dt.date.fromisoformat(str(self.value)) if self.field == "time" else float(self.value)  # numbers, "NaN", "Infinity"
        if self.kind == "redirect" and not self.to:
            raise ValueError("fault 'redirect' needs a target URL or path in 'to'")
        if self.kind in ("trickle", "gzip_bomb", "parquet_bomb") and self.size < 1:
            raise ValueError(f"fault {self.kind!r} needs a size >= 1 (bytes)")
        if self.kind == "json_body" and not isinstance(self.value, str):
            raise ValueError("fault 'json_body' needs the body text as its value")
        if self.kind == "echo_key" and not self.field:
            raise ValueError(f"fault 'echo_key' needs a field: body, one of {', '.join(ECHO_HEADERS)}, or a row field")
        if self.kind == "contract_version" and not self.version:
            raise ValueError("fault 'contract_version' needs a version")
        if self.kind == "watermark" and not self.day:
            raise ValueError("fault 'watermark' needs a day")
        if self.day is not None:
            dt.date.fromisoformat(self.day)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**spec)


def load_faults(path: str | Path) -> list[Fault]:
    """A fault script from a JSON file: a list of objects such as ``{"kind": "status", "status": 503}``."""
    try:
        specs = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise ValueError("expected a JSON list of fault objects")
        return [Fault.from_dict(spec) for spec in specs]
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"fault script {path}: {exc}") from None


@dataclass(frozen=True)
class Served:
    """What a faulty ``/get_qml_models`` answer carries: rows, watermark, contract version, the
    columns whose NaN is a NaN (a bare token in JSON, a NaN in Parquet) rather than a null, and a
    field to write twice in some rows."""

    rows: pd.DataFrame
    watermark: pd.Timestamp
    contract_version: str = CONTRACT_VERSION
    nan_columns: tuple[str, ...] = ()
    duplicate_key: tuple[str, Any, tuple[int, ...]] | None = None  # field, decoy value, row positions


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _targets(rows: pd.DataFrame, fault: Fault) -> pd.Index:
    """Index labels of the rows a row-level fault touches: the first ``fault.rows`` (of ``fault.day``)."""
    chosen = rows if fault.day is None else rows[rows["time"] == pd.Timestamp(fault.day)]
    return chosen.index[: max(0, fault.rows)]


def _rfc1123(day: pd.Timestamp) -> str:
    return day.strftime("%a, %d %b %Y %H:%M:%S GMT")


# One instant (midnight UTC of the row's day) in every form quantum_ml has been seen to send.
_TIME_FORMATS = (
    _rfc1123,
    lambda t: t.strftime("%Y-%m-%d"),
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S"),
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
    lambda t: (t + pd.Timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+05:30"),
    lambda t: (t - pd.Timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S-05:00"),
)


def apply_fault(rows: pd.DataFrame, fault: Fault, watermark: pd.Timestamp) -> Served:
    """The answer a response or payload ``fault`` makes of ``rows`` (never modified in place)."""
    kind, name = fault.kind, fault.field
    rows = rows.copy()
    if kind == "ok":
        return Served(rows, watermark)
    if kind == "contract_version":
        return Served(rows, watermark, contract_version=str(fault.version))
    if kind == "watermark":
        day = pd.Timestamp(fault.day)
        return Served(rows[rows["time"] <= day], day)
    if kind == "missing_field":
        return Served(rows.drop(columns=[name]), watermark)
    if kind == "renamed_field":
        return Served(rows.rename(columns={name: fault.to or _camel(name)}), watermark)
    if kind == "wrong_type":
        if name == "symbol":
            rows[name] = pd.to_numeric(rows[name].str.partition("_")[0], errors="coerce")
        elif name == "time":
            rows[name] = rows[name].astype("datetime64[ms]").astype("int64")
        else:
            rows[name] = rows[name].notna()
        return Served(rows, watermark)
    if kind == "numbers_as_strings":
        rows[name] = pd.Series([None if pd.isna(v) else str(v) for v in rows[name].tolist()], index=rows.index, dtype=object)
        return Served(rows, watermark)
    if kind == "duplicate_rows":
        return Served(pd.concat([rows, rows.loc[_targets(rows, fault)]], ignore_index=True), watermark)
    if kind == "set_value" and name == "time":
        targets = _targets(rows, fault)
        rows["time"] = rows["time"].astype("datetime64[us]")  # microseconds hold 9999-12-31, nanoseconds do not
        rows.loc[targets, "time"] = pd.Timestamp(dt.date.fromisoformat(str(fault.value))).as_unit("us")
        return Served(rows, watermark)
    if kind == "set_value":
        value = float(fault.value)
        rows[name] = rows[name].astype("float64")
        rows.loc[_targets(rows, fault), name] = value
        return Served(rows, watermark, nan_columns=(name,) if math.isnan(value) else ())
    if kind == "conflicting_price":
        targets = _targets(rows, fault)
        rows.loc[targets, "target_var_price"] = rows.loc[targets, "target_var_price"] * 1.01
        return Served(rows, watermark)
    if kind == "mixed_time_formats":
        times = rows["time"].tolist()
        rows["time"] = pd.Series(
            [_TIME_FORMATS[i % len(_TIME_FORMATS)](t) for i, t in enumerate(times)], index=rows.index, dtype=object
        )
        return Served(rows, watermark)
    if kind == "future_rows":
        extra = rows.tail(max(0, fault.rows)).assign(time=watermark + pd.Timedelta(days=fault.days))
        return Served(pd.concat([rows, extra], ignore_index=True), watermark)
    if kind == "extra_field":
        value = "injected" if fault.value is None else fault.value
        if fault.day is None:
            return Served(rows.assign(**{name or "model_note": value}), watermark)
        column = pd.Series([None] * len(rows), index=rows.index, dtype=object)
        for label in rows.index[rows["time"] == pd.Timestamp(fault.day)]:
            column.at[label] = value
        return Served(rows.assign(**{name or "model_note": column}), watermark)
    if kind == "duplicate_key":
        decoy = "decoy" if fault.value is None else fault.value
        return Served(rows, watermark, duplicate_key=(name, decoy, tuple(rows.index.get_indexer(_targets(rows, fault)))))
    if kind == "empty_day":
        day = pd.Timestamp(fault.day) if fault.day else (rows["time"].min() if len(rows) else None)
        return Served(rows[rows["time"] != day] if day is not None else rows, watermark)
    raise ValueError(f"fault {kind!r} does not transform a response")


def projects_from_catalogs(catalogs: Iterable[Catalog]) -> dict[int, tuple[EmbeddedProject, dt.date]]:
    """Every sandbox/synthetic asset of the catalogs, by project id, with the day its history starts."""
    projects: dict[int, tuple[EmbeddedProject, dt.date]] = {}
    owners: dict[int, str] = {}
    for catalog in catalogs:
        for asset in catalog.assets:
            if asset.source == "api":
                continue
            if asset.project_id in owners and owners[asset.project_id] != asset.key:
                raise ValueError(
                    f"project {asset.project_id} is defined twice ({owners[asset.project_id]} and {asset.key})"
                )
            owners[asset.project_id] = asset.key
            projects[asset.project_id] = (embedded_project(asset), asset.start_date)
    return projects


def _json_values(column: pd.Series, nan_as_token: bool) -> list[Any]:
    """Python values of ``column`` for ``json.dumps``: a missing value is ``None`` (null) unless
    ``nan_as_token``, where a NaN stays a float and goes out as the bare token ``NaN``."""
    if pd.api.types.is_integer_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        return column.tolist()
    if nan_as_token:
        return column.astype(object).tolist()
    return column.astype(object).where(column.notna(), None).tolist()


def rows_to_json(rows: pd.DataFrame, nan_columns: Iterable[str] = (),
                 duplicate_key: tuple[str, Any, tuple[int, ...]] | None = None) -> bytes:
    """Rows as quantum_ml's Flask app renders them: a JSON array of objects, RFC 1123 times.

    Floats are written with ``repr`` (shortest round-trip form), so a client recovers them exactly.
    Infinities (and NaN in ``nan_columns``) are written as Python's json writes them, as the bare
    tokens ``Infinity`` and ``NaN``, which are not JSON. ``duplicate_key`` (field, decoy, row
    positions) writes ``"field": decoy`` before those rows' own fields, so the field comes twice.
    """
    nan_columns = set(nan_columns)
    columns = [c for c in rows.columns if c != "time"]
    values = [_json_values(rows[c], c in nan_columns) for c in columns]
    if "n_predict" in columns:
        position = columns.index("n_predict")
        values[position] = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values[position]]
    if "time" in rows.columns and pd.api.types.is_datetime64_any_dtype(rows["time"].dtype):
        codes, days = pd.factorize(rows["time"])
        times = np.array([_rfc1123(d) for d in days], dtype=object)[codes].tolist() if len(rows) else []
    elif "time" in rows.columns:
        times = _json_values(rows["time"], False)
    else:
        times = None
    records = (
        ({"time": t, **dict(zip(columns, rest))} for t, *rest in zip(times, *values))
        if times is not None
        else (dict(zip(columns, rest)) for rest in zip(*values))
    )
    out = io.StringIO()
    out.write("[")
    twice, decoy, positions = duplicate_key if duplicate_key else (None, None, ())
    positions = set(positions)
    for i, record in enumerate(records):
        if i:
            out.write(",")
        text = json.dumps(record, separators=(",", ":"))
        if i in positions:
            text = "{" + json.dumps(twice) + ":" + json.dumps(decoy) + "," + text[1:]
        out.write(text)
    out.write("]")
    return out.getvalue().encode()


def _rows_to_parquet(rows: pd.DataFrame, nan_columns: Iterable[str] = (),
                     duplicate_key: tuple[str, Any, tuple[int, ...]] | None = None) -> bytes:
    table = pa.Table.from_pandas(rows, preserve_index=False)
    for name in nan_columns:  # Arrow reads a pandas NaN as null; these NaNs are meant as NaN
        table = table.set_column(
            table.schema.get_field_index(name), name, pa.array(rows[name].to_numpy(dtype="float64"), from_pandas=False)
        )
    if duplicate_key:  # a second column of the same name (Parquet, like Arrow, allows it)
        table = table.append_column(duplicate_key[0], table[duplicate_key[0]])
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _parquet_bomb(row: pd.DataFrame, rows: int) -> bytes:
    """``rows`` copies of ``row`` as Parquet: row groups of one million identical rows, each
    dictionary and run-length encoded to almost nothing."""
    block = pa.Table.from_pandas(row.loc[row.index.repeat(min(rows, 1_000_000))], preserve_index=False)
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, block.schema, compression="zstd") as writer:
        left = rows
        while left > 0:
            writer.write_table(block.slice(0, min(left, block.num_rows)))
            left -= block.num_rows
    return sink.getvalue()


class QMLServer:
    """A running (or runnable) QML-compatible server; use as a context manager in tests."""

    def __init__(
        self,
        projects: dict[int, tuple[EmbeddedProject, dt.date]],
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Iterable[Fault] = (),
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        models_only: bool = False,
    ) -> None:
        if not api_key:
            raise ValueError("the QML server needs an API key (set QML_API_KEY in its environment)")
        self.projects = projects
        self._api_key = api_key
        self._lock = threading.Lock()
        handler = functools.partial(_Handler, self)
        self.httpd = HardenedHTTPServer((host, port), handler, max_threads=max_threads, request_timeout=request_timeout)
        self._thread: threading.Thread | None = None
        self.faults: list[Fault] = list(faults)
        self.data_requests = 0  # data endpoint requests seen, faulty ones included
        # today's quantum_ml: only /get_qml_models; the horizon-forecast and metadata routes are 404s
        self.models_only = models_only

    def next_fault(self) -> Fault | None:
        with self._lock:
            self.data_requests += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            log.info("qml-server: data request %d: fault %s", self.data_requests, fault.kind)
        return fault

    def script(self, faults: Iterable[Fault]) -> None:
        """Queue more faults after the ones not yet consumed."""
        with self._lock:
            self.faults.extend(faults)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> QMLServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="qml-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> QMLServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def authorised(self, headers) -> bool:
        given = headers.get(API_KEY_HEADER)
        if given is None:
            auth = headers.get("Authorization", "")
            if auth.startswith("Basic "):
                try:
                    decoded = base64.b64decode(auth[6:], validate=True).decode()
                except (ValueError, UnicodeDecodeError):
                    return False
                given = decoded.split(":", 1)[1] if ":" in decoded else decoded
        return given is not None and hmac.compare_digest(given.encode(), self._api_key.encode())

    # Payloads are cached per request shape: a benchmark or a backfill asks the same thing often.
    @functools.lru_cache(maxsize=16)  # noqa: B019 - one source per server, which lives as long as its cache
    def history(self, project_id: int) -> pd.DataFrame:
        project, start = self.projects[project_id]
        return project.rows(start, project.watermark().date())

    def span(self, project_id: int, start: dt.date | None, end: dt.date | None) -> pd.DataFrame:
        """The history's rows from ``start`` to ``end`` (either open)."""
        rows = self.history(project_id)
        if start is not None:
            rows = rows[rows["time"] >= pd.Timestamp(start)]
        if end is not None:
            rows = rows[rows["time"] <= pd.Timestamp(end)]
        return rows

    @functools.lru_cache(maxsize=8)  # noqa: B019 - as above
    def payload(self, project_id: int, start: dt.date | None, end: dt.date | None, media: str) -> bytes:
        rows = self.span(project_id, start, end)
        return _rows_to_parquet(rows) if media == PARQUET_MEDIA_TYPE else rows_to_json(rows)

    def faulty_payload(
        self, project_id: int, start: dt.date | None, end: dt.date | None, media: str, fault: Fault
    ) -> tuple[bytes, Served]:
        """The body and facts of a ``/get_qml_models`` answer altered by a response or payload fault."""
        project, _ = self.projects[project_id]
        served = apply_fault(self.span(project_id, start, end), fault, project.watermark())
        if media == PARQUET_MEDIA_TYPE:
            return _rows_to_parquet(served.rows, served.nan_columns, served.duplicate_key), served
        return rows_to_json(served.rows, served.nan_columns, served.duplicate_key), served

    def horizon_forecast(self, project_id: int, start: dt.date | None, end: dt.date | None) -> list[dict]:
        grouped = horizon_forecast_rows(self.span(project_id, start, end))
        return [
            {
                "time": t.date().isoformat(),
                "n_predict": int(h),
                "forecast": float(forecast),
                "median": float(median),
                "n_models": int(n_models),
                "target_var_price": None if price != price else float(price),
            }
            for t, h, forecast, median, n_models, price in zip(
                grouped["time"], grouped["n_predict"], grouped["forecast"], grouped["median"], grouped["n_models"],
                grouped["target_var_price"]
            )
        ]


class _Handler(HardenedHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nexus-qml-sandbox/1"

    def __init__(self, app: QMLServer, *args, **kwargs) -> None:
        self.app = app
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:  # request lines carry no secret
        log.info("%s %s", self.address_string(), format % args)

    _trickle: Fault | None = None  # set for one request by a ``trickle`` fault

    def _send(self, status: int, body: bytes, media: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {CONTRACT_HEADER: CONTRACT_VERSION, "Cache-Control": "no-store", **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        trickle, self._trickle = self._trickle, None
        if trickle is None:
            self.wfile.write(body)
            return
        for start in range(0, len(body), trickle.size):
            self.wfile.write(body[start:start + trickle.size])
            self.wfile.flush()
            time.sleep(trickle.seconds)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _gzip_bomb(self, fault: Fault, media: str) -> None:
        """A 200 whose gzip body inflates to ``fault.size`` bytes, compressed as it is sent (the
        server holds 1 MiB of it at a time); the client is expected to hang up long before."""
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        gzip = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self.wfile.write(gzip.compress(b"["))
        block, left = b" " * (1 << 20), max(0, fault.size - 2)
        while left > 0:
            self.wfile.write(gzip.compress(block[: min(left, len(block))]))
            left -= len(block)
        self.wfile.write(gzip.compress(b"]") + gzip.flush())

    def _misbehave(self, fault: Fault, media: str) -> bool:
        """Apply ``fault``; True when the request is finished (nothing more to send)."""
        if fault.kind == "redirect":
            self._send(fault.status if 300 <= fault.status < 400 else 302, b"", "text/plain", {"Location": str(fault.to)})
            return True
        if fault.kind == "trickle":
            self._trickle = fault
            return False
        if fault.kind == "gzip_bomb":
            self._gzip_bomb(fault, media)
            return True
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._send(fault.status, json.dumps({"error": f"injected HTTP {fault.status}"}).encode(), "application/json", extra)
            return True
        if fault.kind == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        if fault.kind == "stall":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "truncate":
            body = b'[{"symbol":"x"' + b" " * 4096
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) * 2))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        if fault.kind == "content_type":
            self._send(200, b"<html><body>maintenance</body></html>", "text/html")
            return True
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _echo_key(self, fault: Fault, project_id: int, start: dt.date | None, end: dt.date | None, media: str,
                  extra: dict[str, str]) -> None:
        key = self.app._api_key
        if fault.field == "body":
            return self._send(HTTPStatus.OK, b'[{"symbol": ' + key.encode() + b"}]", media, extra)
        if fault.field == "Location":
            location = f"http://{key}.invalid/get_qml_models/{project_id}"
            return self._send(HTTPStatus.FOUND, b"", "text/plain", {"Location": location})
        if fault.field == "header_line":  # a line without a colon: urllib3 quotes it in a warning
            body = self.app.payload(project_id, start, end, media)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self._headers_buffer.append(f"X-Echo {key}\r\n".encode("latin-1"))
            self.end_headers()
            self.wfile.write(body)
            return None
        if fault.field in ECHO_HEADERS:
            body = self.app.payload(project_id, start, end, media)
            if fault.field == "Content-Type":
                return self._send(HTTPStatus.OK, body, key, extra)
            return self._send(HTTPStatus.OK, body, media, {**extra, fault.field: key})
        rows = self.app.span(project_id, start, end).copy()
        if fault.field == "time":
            rows["time"] = rows["time"].map(_rfc1123)
        column = (rows[fault.field].astype(object) if fault.field in rows.columns
                  else pd.Series([None] * len(rows), index=rows.index, dtype=object))
        column[_targets(rows, fault)] = key
        rows[fault.field] = column.astype(str) if media == PARQUET_MEDIA_TYPE else column  # Parquet: one type per column
        body = _rows_to_parquet(rows) if media == PARQUET_MEDIA_TYPE else rows_to_json(rows)
        return self._send(HTTPStatus.OK, body, media, extra)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception as exc:  # a server bug answers 500 instead of dropping the connection
            log.exception("qml-server: error handling %s", urlparse(self.path).path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    def _get(self) -> None:
        url = urlparse(self.path)
        if url.path == "/health":
            return self._send(HTTPStatus.OK, b'{"status":"ok"}', "application/json")
        if not self.app.authorised(self.headers):
            return self._error(HTTPStatus.UNAUTHORIZED, "missing or invalid qml-api-key")
        match = _ROUTE.fullmatch(url.path)
        if not match:
            return self._error(HTTPStatus.NOT_FOUND, f"no route {url.path}")
        endpoint, project_id = match.group(1), int(match.group(2))
        if self.app.models_only and endpoint != "get_qml_models":
            return self._error(HTTPStatus.NOT_FOUND, f"no route {url.path}")
        if project_id not in self.app.projects:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown project {project_id}")
        query = parse_qs(url.query)
        try:
            start, end = (_query_date(query, "from_date"), _query_date(query, "to_date"))
        except ValueError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        project, _ = self.app.projects[project_id]
        extra = {WATERMARK_HEADER: project.watermark().date().isoformat()}
        wants_parquet = query.get("format", [""])[0] == "parquet" or PARQUET_MEDIA_TYPE in self.headers.get("Accept", "")
        media = PARQUET_MEDIA_TYPE if wants_parquet and endpoint == "get_qml_models" else "application/json"
        fault = self.app.next_fault()
        if fault is not None and fault.kind in TRANSPORT_FAULTS and self._misbehave(fault, media):
            return None
        if endpoint == "get_qml_models":
            if fault is not None and fault.kind == "ignore_range":
                start = end = None
            if fault is None or fault.kind in TRANSPORT_FAULTS + ("ok", "ignore_range"):
                return self._send(HTTPStatus.OK, self.app.payload(project_id, start, end, media), media, extra)
            if fault.kind == "json_body":
                return self._send(HTTPStatus.OK, str(fault.value).encode(), "application/json", extra)
            if fault.kind == "garbled_body":
                body = self.app.payload(project_id, start, end, media)
                return self._send(HTTPStatus.OK, body[: len(body) // 2], media, extra)
            if fault.kind == "echo_key":
                return self._echo_key(fault, project_id, start, end, media, extra)
            if fault.kind == "parquet_bomb":
                return self._send(HTTPStatus.OK, _parquet_bomb(self.app.span(project_id, start, end).head(1), fault.size),
                                  PARQUET_MEDIA_TYPE, extra)
            body, served = self.app.faulty_payload(project_id, start, end, media, fault)
            extra = {WATERMARK_HEADER: served.watermark.date().isoformat(), CONTRACT_HEADER: served.contract_version}
            return self._send(HTTPStatus.OK, body, media, extra)
        if endpoint == "get_qml_horizon_forecast":
            body = json.dumps(self.app.horizon_forecast(project_id, start, end)).encode()
            return self._send(HTTPStatus.OK, body, "application/json", extra)
        models = project.models().to_dict(orient="records")
        return self._send(HTTPStatus.OK, json.dumps(models, default=str).encode(), "application/json", extra)


def _query_date(query: dict[str, list[str]], name: str) -> dt.date | None:
    values = query.get(name)
    if not values or not values[0]:
        return None
    try:
        return dt.date.fromisoformat(values[0])
    except ValueError:
        raise ValueError(f"{name} must be YYYY-MM-DD, got {values[0]!r}") from None
