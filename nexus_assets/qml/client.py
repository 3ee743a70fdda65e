"""HTTP client for the quantum_ml (QML) API, as ``shared/spec/qml-contract.md`` asks it to behave.

- Authenticates with the ``qml-api-key`` header; the key never appears in a message it raises or
  logs (every text goes through :meth:`QMLClient._scrub`).
- Sends ``from_date``/``to_date`` and filters client-side anyway; asks for Parquet and falls back
  to JSON when the server answers JSON; checks ``X-QML-Contract-Version`` when present.
- Retries timeouts, connection errors, bodies cut short, 429 (honouring ``Retry-After``) and 5xx
  with exponential back-off and jitter (tenacity); never retries 401/403/404 or other 4xx.
- Streams JSON with ijson into typed column chunks, so a 200 MB history is never held as one
  Python object tree (peak memory is one chunk of raw rows plus the typed result).
- Reads the bare ``NaN``/``Infinity`` tokens Python's json (and so Flask) writes, which are not
  JSON, as markers the contract refuses by field and row (``finite``), and tells a Parquet NaN
  from a null the same way; refuses rows dated after the watermark or tomorrow (see
  :func:`~nexus_assets.core.contract.time_limit`), wherever they are in the response.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import ijson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import requests
import tenacity
import urllib3
from tenacity.wait import wait_base

from nexus_assets.core.contract import (
    FINITE_FIELDS,
    NON_FINITE_MARKERS,
    ContractReport,
    ContractViolation,
    Problem,
    TimeLimit,
    check_contract_version,
    coerce_qml_rows,
    empty_qml_rows,
    merge_problems,
    parse_times,
    rows_after,
    time_limit,
)
from nexus_assets.qml.sources import QMLPull

__all__ = [
    "QMLClient",
    "RetryPolicy",
    "QMLError",
    "QMLTransientError",
    "QMLRequestError",
    "PARQUET_MEDIA_TYPE",
    "CONTRACT_HEADER",
    "WATERMARK_HEADER",
]

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
CONTRACT_HEADER = "X-QML-Contract-Version"
WATERMARK_HEADER = "X-QML-Watermark"
API_KEY_HEADER = "qml-api-key"
_JSON_CHUNK_ROWS = 100_000


class Log(Protocol):
    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


class QMLError(RuntimeError):
    """Any failure talking to QML; messages never contain the API key."""


class QMLTransientError(QMLError):
    """Worth retrying: timeout, connection trouble, 429, 5xx. ``retry_after`` in seconds, if the server said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QMLRequestError(QMLError):
    """Not worth retrying: the request itself is wrong (401, 403, 404, other 4xx, a bad content type)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, exponential back-off with jitter, cap on any single wait."""

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0


class _WaitHonouringRetryAfter(wait_base):
    """Exponential back-off with jitter, but never less than the server's ``Retry-After``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = tenacity.wait_exponential_jitter(
            initial=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, QMLTransientError) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.policy.max_retry_after))
        return wait


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


class QMLClient:
    """A client for one QML base URL and key. Thread-compatible, not thread-safe (one session)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        prefer_parquet: bool = True,
        log: Log | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not base_url:
            raise QMLRequestError("QML_API_BASE_URL is not set: the 'api' source needs the QML base URL")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or ""
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry
        self.prefer_parquet = prefer_parquet
        self.log: Log = log or logging.getLogger("nexus_assets.qml")
        self.session = session or requests.Session()
        self.attempts = 0  # requests sent, retries included (read by tests and metadata)

    # -- public endpoints ---------------------------------------------------------------------

    def pull(self, project_id: int, days: Iterable[dt.date]) -> QMLPull:
        """Rows of ``project_id`` for ``days``: one request for the whole span, filtered here."""
        wanted = tuple(sorted(set(days)))
        if not wanted:
            raise ValueError("pull needs at least one day")
        params = {"from_date": wanted[0].isoformat(), "to_date": wanted[-1].isoformat()}
        if self.prefer_parquet:
            params["format"] = "parquet"
        rows, watermark, version = self._call(
            f"/get_qml_models/{project_id}", params, lambda resp: self._read_models(resp, wanted)
        )
        return QMLPull(
            project_id=project_id,
            source="api",
            rows=rows,
            watermark=watermark,
            contract_version=version,
            days=wanted,
        )

    def horizon_forecast(self, project_id: int, start: dt.date, end: dt.date) -> pd.DataFrame:
        """The server's horizon-aggregated series (``/get_qml_horizon_forecast``)."""
        params = {"from_date": start.isoformat(), "to_date": end.isoformat()}
        frame, _, _ = self._call(f"/get_qml_horizon_forecast/{project_id}", params, self._read_json_table)
        return frame

    def model_metadata(self, project_id: int) -> pd.DataFrame:
        """Per-model metadata (algorithm, horizon, training window, code version)."""
        frame, _, _ = self._call(f"/get_qml_model_metadata/{project_id}", {}, self._read_json_table)
        return frame

    # -- transport ----------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _call(self, path: str, params: dict[str, str], read) -> tuple[Any, pd.Timestamp | None, str]:
        url = self.base_url + path
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=_WaitHonouringRetryAfter(self.retry),
            retry=tenacity.retry_if_exception_type(QMLTransientError),
            before_sleep=lambda state: self.log.warning(
                self._scrub(
                    f"QML {path}: attempt {state.attempt_number}/{self.retry.max_attempts} failed "
                    f"({state.outcome.exception()}); retrying in {state.next_action.sleep:.1f}s"
                )
            ),
            reraise=True,
        )
        started = time.monotonic()
        for attempt in retrying:
            with attempt:
                result = self._once(url, path, params, read)
        self.log.info(
            f"QML {path}: ok after {retrying.statistics.get('attempt_number', 1)} attempt(s) "
            f"in {time.monotonic() - started:.1f}s"
        )
        return result

    def _once(self, url: str, path: str, params: dict[str, str], read) -> tuple[Any, pd.Timestamp | None, str]:
        headers = {"Accept": f"{PARQUET_MEDIA_TYPE}, application/json;q=0.9" if params.get("format") else "application/json"}
        if self._api_key:
            headers[API_KEY_HEADER] = self._api_key
        self.attempts += 1
        try:
            response = self.session.get(url, params=params, headers=headers, timeout=self.timeout, stream=True)
        except requests.Timeout as exc:
            raise QMLTransientError(self._scrub(f"timeout calling {path}: {exc}")) from None
        except requests.ConnectionError as exc:
            raise QMLTransientError(self._scrub(f"connection error calling {path}: {exc}")) from None
        with response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise QMLTransientError(
                    f"{path} answered HTTP {status}", _parse_retry_after(response.headers.get("Retry-After"))
                )
            if status in (401, 403):
                raise QMLRequestError(
                    f"{path} answered HTTP {status}: the API key was refused (check QML_API_KEY; it is not shown here)",
                    status,
                )
            if status >= 400:
                raise QMLRequestError(f"{path} answered HTTP {status} {self._scrub(response.reason or '')}", status)
            version = check_contract_version(response.headers.get(CONTRACT_HEADER))
            header_watermark = _header_watermark(response)
            try:
                value, seen_watermark = read(response)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise QMLTransientError(self._scrub(f"{path}: body cut short or stalled: {exc}")) from None
        return value, header_watermark if header_watermark is not None else seen_watermark, version

    # -- body readers ---------------------------------------------------------------------------

    def _read_models(self, response: requests.Response, days: tuple[dt.date, ...]) -> tuple[pd.DataFrame, pd.Timestamp | None]:
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        limit = time_limit(_header_watermark(response), dt.datetime.now(dt.timezone.utc).date())
        if media in (PARQUET_MEDIA_TYPE, "application/x-parquet", "application/octet-stream"):
            kept = _keep_requested(_frame_from_arrow(pq.read_table(io.BytesIO(_read_all(response)))), days, limit)
            _raise_for_future_rows(kept.future, len(kept.rows))
            return kept.rows, kept.latest
        if media == "application/json":
            return _stream_json_rows(response, days, limit)
        raise QMLRequestError(
            f"unexpected Content-Type {media or '(none)'!r} for QML rows; expected JSON or Parquet", response.status_code
        )

    def _read_json_table(self, response: requests.Response) -> tuple[pd.DataFrame, None]:
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise QMLRequestError(f"unexpected Content-Type {media or '(none)'!r}; expected JSON", response.status_code)
        return pd.DataFrame.from_records(response.json()), None


def _header_watermark(response: requests.Response) -> pd.Timestamp | None:
    value = response.headers.get(WATERMARK_HEADER)
    if not value:
        return None
    try:
        return pd.Timestamp(dt.date.fromisoformat(value.strip()))
    except ValueError:
        raise ContractViolation(
            f"QML rows: header {WATERMARK_HEADER} must be a date (YYYY-MM-DD), got {value[:40]!r}",
            [Problem(WATERMARK_HEADER, "format: YYYY-MM-DD", 1, [{"received": value[:40]}])],
        ) from None


@dataclass(frozen=True)
class _Kept:
    rows: pd.DataFrame
    latest: pd.Timestamp | None
    future: Problem | None


def _keep_requested(raw: pd.DataFrame, days: tuple[dt.date, ...], limit: TimeLimit) -> _Kept:
    """Type only the rows of the requested days (plus any whose time cannot be read or is out of
    range, to report them): a bad row on a day nobody asked for must not block today's pull. ``latest`` is the
    newest time seen in the whole chunk, the watermark when the server sends no header. Rows
    dated after ``limit`` are reported wherever they are: they contradict the watermark itself."""
    if "time" not in raw.columns:
        coerce_qml_rows(raw)  # raises, naming the missing field
    times, unreadable, out_of_range = parse_times(raw["time"])
    latest = times.max() if times.notna().any() else None
    wanted = (times.isin(pd.DatetimeIndex([pd.Timestamp(d) for d in days])) | unreadable | out_of_range).to_numpy()
    future = rows_after(raw, times, limit)
    return _Kept(coerce_qml_rows(raw if wanted.all() else raw[wanted]), latest, future)


def _raise_for_future_rows(future: Problem | None, rows: int) -> None:
    if future is not None:
        raise ContractViolation(ContractReport(rows, (future,)).message(), [future])


def _read_all(response: requests.Response) -> bytes:
    response.raw.decode_content = True
    return response.raw.read()


_NAN_MARKER = next(k for k, v in NON_FINITE_MARKERS.items() if v != v)


def _frame_from_arrow(table: pa.Table) -> pd.DataFrame:
    """``table`` (consumed) as pandas, with a NaN (not a null) in a field that must be finite kept
    visible as the contract's NaN marker: pandas would otherwise read it as a null."""
    nans = {}
    for name in FINITE_FIELDS:
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            is_nan = pc.fill_null(pc.is_nan(table[name]), False)
            if pc.any(is_nan).as_py():
                nans[name] = is_nan.to_numpy(zero_copy_only=False)
    # Arrow buffers are released column by column as they convert: one copy of the rows, not two.
    frame = table.to_pandas(self_destruct=True, split_blocks=True, use_threads=False)
    del table
    for name, is_nan in nans.items():
        column = frame[name].astype(object)
        column[is_nan] = _NAN_MARKER
        frame[name] = column
    return frame


class _NonFiniteTokens:
    """A JSON byte stream with every bare ``NaN``, ``Infinity`` or ``-Infinity`` value (not JSON,
    but what Python's json and Flask write for non-finite floats) turned into the contract's marker
    string, so ijson parses it and the contract reports the field and rows.

    A value follows ``:`` in a row object, so tokens are matched only there; the stream is cut
    after the last comma of each read, so no token spans two reads. Reads without ``NaN`` or
    ``Infinity`` anywhere (the normal case) pass through untouched. A string value that itself
    contains ``:NaN,`` would be broken by the rewrite and then fail as invalid JSON, never pass.
    """

    _TOKEN = re.compile(rb"(:\s*)(NaN|-Infinity|Infinity)(?=\s*[,}\]])")
    _MARKERS = {token.lstrip("\x00").encode(): ('"\\u0000' + token[1:] + '"').encode() for token in NON_FINITE_MARKERS}
    _READ = 1 << 16

    def __init__(self, raw) -> None:
        self.raw = raw
        self.carry = b""

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        while True:
            data = self.raw.read(size if size > 0 else self._READ)
            if not data:
                out, self.carry = self.carry, b""
                return self._rewrite(out)
            buffer = self.carry + data
            cut = buffer.rfind(b",") + 1
            if cut:
                out, self.carry = buffer[:cut], buffer[cut:]
                return self._rewrite(out)
            self.carry = buffer

    def _rewrite(self, chunk: bytes) -> bytes:
        if b"NaN" not in chunk and b"Infinity" not in chunk:
            return chunk
        return self._TOKEN.sub(lambda m: m.group(1) + self._MARKERS[m.group(2)], chunk)


def _stream_json_rows(
    response: requests.Response, days: tuple[dt.date, ...], limit: TimeLimit
) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """Parse a JSON array of row objects in chunks; keep only ``days``; track the latest time seen."""
    response.raw.decode_content = True
    typed_parts: list[pd.DataFrame] = []
    watermark: pd.Timestamp | None = None
    future: Problem | None = None
    columns: dict[str, list[Any]] = {}
    count = seen = 0

    def flush() -> None:
        nonlocal watermark, future, columns, count, seen
        if count == 0:
            return
        chunk = _keep_requested(pd.DataFrame(columns, index=pd.RangeIndex(seen, seen + count)), days, limit)
        if chunk.latest is not None:
            watermark = chunk.latest if watermark is None or chunk.latest > watermark else watermark
        future = merge_problems(future, chunk.future)
        typed_parts.append(chunk.rows)
        columns, count, seen = {name: [] for name in columns}, 0, seen + count

    try:
        for item in ijson.items(_NonFiniteTokens(response.raw), "item", use_float=True):
            if not isinstance(item, dict):
                raise ContractViolation(f"QML rows: every array element must be an object, got {type(item).__name__}")
            if not item.keys() <= columns.keys():
                for name in item.keys() - columns.keys():
                    columns[name] = [None] * count
            for name, values in columns.items():
                values.append(item.get(name))
            count += 1
            if count >= _JSON_CHUNK_ROWS:
                flush()
        flush()
    except ijson.common.IncompleteJSONError as exc:
        raise ContractViolation(f"QML rows: the body is not a complete JSON array: {exc}") from None
    except ijson.common.JSONError as exc:
        raise ContractViolation(f"QML rows: the body is not valid JSON: {exc}") from None
    _raise_for_future_rows(future, seen)
    if not typed_parts:
        return empty_qml_rows(), None
    rows = pd.concat(typed_parts, ignore_index=True) if len(typed_parts) > 1 else typed_parts[0]
    return rows, watermark
