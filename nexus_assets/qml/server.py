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

Fault injection: the server plays a script of faults, one per data request in order
(``QMLServer(faults=...)``, :meth:`QMLServer.script`, or ``nexus-assets qml-server --faults
faults.json``); what a fault is and what it does to an answer is :mod:`nexus_assets.qml.faults`.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hmac
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexus_assets.catalog import Catalog
from nexus_assets.core.contract import CONTRACT_VERSION
from nexus_assets.qml.client import API_KEY_HEADER, CONTRACT_HEADER, PARQUET_MEDIA_TYPE, WATERMARK_HEADER
from nexus_assets.qml.faults import (
    ECHO_HEADERS,
    TRANSPORT_FAULTS,
    TRUNCATED_BODY,
    Fault,
    Served,
    apply_fault,
    gzip_bomb,
    parquet_bomb,
    target_rows,
)
from nexus_assets.qml.sources import EmbeddedProject, embedded_project, horizon_forecast_rows
from nexus_assets.serving import DEFAULT_MAX_THREADS, DEFAULT_REQUEST_TIMEOUT, HardenedHandler, HardenedHTTPServer

__all__ = [
    "QMLServer",
    "projects_from_catalogs",
    "rows_to_json",
]

log = logging.getLogger("nexus_assets.qml.server")
# ASCII digits, at most 18 (an int64): anything else is "no such route", never a server error
# (Python refuses to parse an int of more than 4,300 digits).
_ROUTE = re.compile(r"/(get_qml_models|get_qml_horizon_forecast|get_qml_model_metadata)/([0-9]{1,18})/?")


def _rfc1123(day: pd.Timestamp) -> str:
    return day.strftime("%a, %d %b %Y %H:%M:%S GMT")



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
        for chunk in gzip_bomb(fault.size):
            self.wfile.write(chunk)

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
            body = TRUNCATED_BODY
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
        column[target_rows(rows, fault)] = key
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
                return self._send(HTTPStatus.OK, parquet_bomb(self.app.span(project_id, start, end).head(1), fault.size),
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
