"""``nexus-assets qml-server``: a QML-compatible HTTP server on loopback.

It serves the sandbox and synthetic projects of one or more catalogs exactly as quantum_ml serves
real ones (``GET /get_qml_models/<project_id>``, a JSON array of rows with RFC 1123 times, as
Flask renders them), plus every improvement of the contract page: ``from_date``/``to_date``,
Parquet (``?format=parquet`` or ``Accept: application/vnd.apache.parquet``), the
``X-QML-Contract-Version`` and ``X-QML-Watermark`` headers, ``/get_qml_horizon_forecast`` and
``/get_qml_model_metadata``. It requires the API key (``qml-api-key`` header, or HTTP Basic with
the key as password) read from the environment, never from the command line.

Built on the standard library's threading HTTP server: it needs no framework, and the later
fault-injection mode needs byte-level control of what goes on the wire.
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
from dataclasses import dataclass
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexus_assets.catalog import Catalog
from nexus_assets.core.contract import CONTRACT_VERSION
from nexus_assets.qml.client import API_KEY_HEADER, CONTRACT_HEADER, PARQUET_MEDIA_TYPE, WATERMARK_HEADER
from nexus_assets.qml.sources import EmbeddedProject, embedded_project

__all__ = ["QMLServer", "Fault", "projects_from_catalogs", "rows_to_json"]

log = logging.getLogger("nexus_assets.qml.server")
_ROUTE = re.compile(r"^/(get_qml_models|get_qml_horizon_forecast|get_qml_model_metadata)/(\d+)/?$")


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to the next data request (``/get_qml_*``) in order.

    ``kind``: ``"status"`` (answer ``status`` with an error body, and ``Retry-After: retry_after``
    if given), ``"reset"`` (close the connection without answering), ``"stall"`` (wait ``seconds``
    before answering normally), ``"truncate"`` (announce the full Content-Length, send half, close),
    ``"content_type"`` (a 200 with an HTML body).
    """

    kind: str
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0


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


def _rfc1123(day: pd.Timestamp) -> str:
    return day.strftime("%a, %d %b %Y %H:%M:%S GMT")


def rows_to_json(rows: pd.DataFrame) -> bytes:
    """Rows as quantum_ml's Flask app renders them: a JSON array of objects, RFC 1123 times.

    Floats are written with ``repr`` (shortest round-trip form), so a client recovers them exactly.
    """
    codes, days = pd.factorize(rows["time"])
    texts = np.array([_rfc1123(d) for d in days], dtype=object)[codes] if len(rows) else []
    columns = [c for c in rows.columns if c != "time"]
    values = [rows[c].astype(object).where(rows[c].notna(), None).tolist() for c in columns]
    if "n_predict" in columns:
        values[columns.index("n_predict")] = [int(v) for v in values[columns.index("n_predict")]]
    records = ({"time": t, **dict(zip(columns, rest))} for t, *rest in zip(texts, *values))
    out = io.StringIO()
    out.write("[")
    for i, record in enumerate(records):
        if i:
            out.write(",")
        out.write(json.dumps(record, allow_nan=False, separators=(",", ":")))
    out.write("]")
    return out.getvalue().encode()


def _rows_to_parquet(rows: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), sink, compression="zstd")
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
    ) -> None:
        if not api_key:
            raise ValueError("the QML server needs an API key (set QML_API_KEY in its environment)")
        self.projects = projects
        self._api_key = api_key
        self._lock = threading.Lock()
        handler = functools.partial(_Handler, self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.faults: list[Fault] = list(faults)
        self.data_requests = 0  # data endpoint requests seen, faulty ones included

    def next_fault(self) -> Fault | None:
        with self._lock:
            self.data_requests += 1
            return self.faults.pop(0) if self.faults else None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "QMLServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="qml-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "QMLServer":
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
    @functools.lru_cache(maxsize=16)
    def history(self, project_id: int) -> pd.DataFrame:
        project, start = self.projects[project_id]
        return project.rows(start, project.watermark().date())

    @functools.lru_cache(maxsize=8)
    def payload(self, project_id: int, start: dt.date | None, end: dt.date | None, media: str) -> bytes:
        rows = self.history(project_id)
        if start is not None:
            rows = rows[rows["time"] >= pd.Timestamp(start)]
        if end is not None:
            rows = rows[rows["time"] <= pd.Timestamp(end)]
        return _rows_to_parquet(rows) if media == PARQUET_MEDIA_TYPE else rows_to_json(rows)

    def horizon_forecast(self, project_id: int, start: dt.date | None, end: dt.date | None) -> list[dict]:
        rows = self.history(project_id)
        if start is not None:
            rows = rows[rows["time"] >= pd.Timestamp(start)]
        if end is not None:
            rows = rows[rows["time"] <= pd.Timestamp(end)]
        grouped = rows.groupby(["time", "n_predict"], sort=True).agg(
            forecast=("close_predict", "mean"),
            median=("close_predict", "median"),
            n_models=("close_predict", "size"),
            target_var_price=("target_var_price", "first"),
        )
        return [
            {
                "time": t.date().isoformat(),
                "n_predict": int(h),
                "forecast": float(forecast),
                "median": float(median),
                "n_models": int(n_models),
                "target_var_price": float(price),
            }
            for (t, h), forecast, median, n_models, price in zip(
                grouped.index, grouped["forecast"], grouped["median"], grouped["n_models"], grouped["target_var_price"]
            )
        ]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nexus-qml-sandbox/1"

    def __init__(self, app: QMLServer, *args, **kwargs) -> None:
        self.app = app
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:  # request lines carry no secret
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, media: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(CONTRACT_HEADER, CONTRACT_VERSION)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def _misbehave(self, fault: Fault) -> bool:
        """Apply ``fault``; True when the request is finished (nothing more to send)."""
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
        match = _ROUTE.match(url.path)
        if not match:
            return self._error(HTTPStatus.NOT_FOUND, f"no route {url.path}")
        endpoint, project_id = match.group(1), int(match.group(2))
        if project_id not in self.app.projects:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown project {project_id}")
        query = parse_qs(url.query)
        try:
            start, end = (_query_date(query, "from_date"), _query_date(query, "to_date"))
        except ValueError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        project, _ = self.app.projects[project_id]
        extra = {WATERMARK_HEADER: project.watermark().date().isoformat()}
        fault = self.app.next_fault()
        if fault is not None and self._misbehave(fault):
            return None
        if endpoint == "get_qml_models":
            wants_parquet = query.get("format", [""])[0] == "parquet" or PARQUET_MEDIA_TYPE in self.headers.get("Accept", "")
            media = PARQUET_MEDIA_TYPE if wants_parquet else "application/json"
            return self._send(HTTPStatus.OK, self.app.payload(project_id, start, end, media), media, extra)
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
