"""HTTP client for the quantum_ml (QML) API, as the QML contract (``docs/ingestion.md``) asks it to behave.

- Authenticates with the ``qml-api-key`` header; the key is checked before it is used (a key
  with whitespace or a line break, as a quoted ``.env`` value keeps it, is refused naming the
  variable, never the value) and never appears in a message it raises or logs: every error raised
  on the request path, whatever its type, and every text built from upstream content (bodies,
  header values, row values) goes through :meth:`QMLClient._scrub`; rows echoing the key are
  refused, never returned.
- Follows a redirect only within the base URL's origin; a redirect to another origin (or from
  https to http) is refused, naming the target origin, so the key is never sent there.
- Sends ``from_date``/``to_date`` and filters client-side anyway; asks for Parquet and falls back
  to JSON when the server answers JSON; checks ``X-QML-Contract-Version`` when present.
- Retries timeouts, connection errors, bodies cut short, 429 (honouring ``Retry-After``) and 5xx
  with exponential back-off and jitter (tenacity); never retries 401/403/404 or other 4xx.
- Bounds every pull: a total deadline (all attempts and waits; checked between reads, and no
  single read waits longer than the read timeout) and a maximum decoded size per response,
  counted as the body is decoded, so a compression bomb stops at the limit.
- Reads JSON without a Python object per value: the body is spooled (to a temporary file beyond
  64 MiB) and parsed in blocks by Arrow's JSON reader (a 200 MB history in under 2 s); a body
  that path cannot vouch for (any fault, an extra field, a non-finite number) is read again from
  the spool by the streaming parser (ijson into typed column chunks), which names what is wrong
  by field and row. Neither holds the history as one object tree. A body that is not an array of
  objects, or a row with a key twice, is a contract violation. A Parquet
  body is spooled (to a temporary file beyond 64 MiB) and refused as a contract violation when
  it cannot be read or declares more decoded bytes than the limit.
- Reads the bare ``NaN``/``Infinity`` tokens Python's json (and so Flask) writes, which are not
  JSON, as markers the contract refuses by field and row (``finite``), and tells a Parquet NaN
  from a null the same way; refuses rows dated after the watermark or tomorrow (see
  :func:`~nexus_assets.core.contract.time_limit`), wherever they are in the response.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import ijson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import requests
import tenacity
import urllib3
from tenacity.wait import wait_base

from nexus_assets.core.contract import (
    FINITE_FIELDS,
    NON_FINITE_MARKERS,
    QML_KEY,
    QML_OPTIONAL,
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
    rows_problem,
    time_limit,
)
from nexus_assets.qml.sources import QMLPull

__all__ = [
    "QMLClient",
    "RetryPolicy",
    "QMLError",
    "QMLTransientError",
    "QMLRequestError",
    "QMLLimitError",
    "check_api_key",
    "PARQUET_MEDIA_TYPE",
    "CONTRACT_HEADER",
    "WATERMARK_HEADER",
    "DEFAULT_DEADLINE_SECONDS",
    "DEFAULT_MAX_RESPONSE_BYTES",
]

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
CONTRACT_HEADER = "X-QML-Contract-Version"
WATERMARK_HEADER = "X-QML-Watermark"
API_KEY_HEADER = "qml-api-key"
# A Crude-Oil history (tens of millions of rows) is a few GB of JSON and takes minutes: these
# defaults leave it room and still stop a runaway (NEXUS_QML_PULL_DEADLINE_SECONDS and
# NEXUS_QML_MAX_RESPONSE_BYTES set them in a deployment).
DEFAULT_DEADLINE_SECONDS = 3600.0
DEFAULT_MAX_RESPONSE_BYTES = 16 << 30
_JSON_CHUNK_ROWS = 100_000
_READ = 1 << 16
_MAX_REDIRECTS = 5
_SPOOL_IN_MEMORY = 64 << 20
_ECHO_RULE = "no credential echoed back (the API key)"
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a header value can carry as is


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
    """Not worth retrying: the request itself is wrong (401, 403, 404, other 4xx, a bad content type,
    a redirect to another origin, a malformed key)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class QMLLimitError(QMLError):
    """A pull past its total deadline, or a response past the maximum decoded size; not retried
    (trying again would hold the ``qml_api`` pool just as long)."""


def check_api_key(key: str | None, variable: str = "QML_API_KEY") -> str:
    """``key`` if it can be sent as a header value exactly as given ("" when unset); otherwise a
    :class:`QMLRequestError` naming ``variable``, never the value (it would otherwise end up in a
    transport error's message, and from there in logs and the event log)."""
    if not key:
        return ""
    if key != key.strip():
        problem = "starts or ends with whitespace or a line break (a quoted value in .env keeps a trailing \\n)"
    elif not _KEY_CHARACTERS.fullmatch(key):
        problem = "contains whitespace, a control character or a non-ASCII character"
    else:
        return key
    raise QMLRequestError(f"{variable} {problem}: fix the variable (its value is not shown)")


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
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, the port made explicit (a redirect is followed only within one)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


class _Budget:
    """The limits of one pull: a deadline on the monotonic clock and a decoded-size cap per response."""

    def __init__(self, path: str, seconds: float, max_bytes: int) -> None:
        self.path, self.seconds, self.max_bytes = path, seconds, max_bytes
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QMLLimitError(
                f"{self.path}: the pull passed its deadline of {self.seconds:g} s (NEXUS_QML_PULL_DEADLINE_SECONDS), "
                "retries and waits included; upstream is too slow or trickling (raise the deadline if the history "
                "really takes that long)"
            )
        return left

    def too_large(self, size: int, how: str) -> QMLLimitError:
        """``how``: "announces" (Content-Length), "declares" (a Parquet footer) or "decodes" (counted)."""
        limit = f"the maximum of {self.max_bytes:,} decoded bytes (NEXUS_QML_MAX_RESPONSE_BYTES)"
        said = {"announces": f"announces {size:,} bytes", "declares": f"declares {size:,} decoded bytes"}.get(how)
        what = (f"the response {said}, more than {limit}; refused before decoding it" if said
                else f"the response decodes to more than {limit}; stopped after {size:,} bytes")
        return QMLLimitError(f"{self.path}: {what} (a compression bomb, or a history larger than the limit: raise it)")


class _BoundedBody:
    """A response body read with the pull's limits: each read is one read of the socket (so a
    trickle is noticed between reads), decoded bytes are counted as they come (so a compression
    bomb stops at the limit, not after inflating), and the deadline is checked before each read."""

    def __init__(self, response: requests.Response, budget: _Budget) -> None:
        response.raw.decode_content = True
        self.raw = response.raw
        self.budget = budget
        self.received = 0

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        self.budget.remaining()
        data = self.raw.read1(_READ if size is None or size < 0 else min(size, _READ))
        self.received += len(data)
        if self.received > self.budget.max_bytes:
            raise self.budget.too_large(self.received, "decodes")
        return data

    def chunks(self) -> Iterable[bytes]:
        while data := self.read(_READ):
            yield data


class _ScrubbingFilter(logging.Filter):
    """Scrubs the keys of every client from the records of urllib3's loggers. urllib3 logs upstream
    content itself (a header line it cannot parse is quoted whole, with a traceback), and such a
    warning reaches stderr, so a run's compute logs."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args, record.exc_info = self.scrub(message), None, None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True

    def watch(self, secrets: Iterable[str]) -> None:
        self.secrets.update(s for s in secrets if s)
        names = ["urllib3", *(n for n in logging.root.manager.loggerDict if n.startswith("urllib3."))]
        for name in names:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)


_URLLIB3_LOGS = _ScrubbingFilter()


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
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        log: Log | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not base_url:
            raise QMLRequestError("QML_API_BASE_URL is not set: the 'api' source needs the QML base URL")
        self._api_key = check_api_key(api_key)
        # The key as it may come back: as is, percent-encoded, JSON-escaped; longest first.
        forms = {self._api_key, quote(self._api_key, safe=""), quote_plus(self._api_key), json.dumps(self._api_key)[1:-1]}
        self._secrets = sorted((f for f in forms if f), key=len, reverse=True)
        _URLLIB3_LOGS.watch(self._secrets)
        self.base_url = base_url.rstrip("/")
        self.origin = _origin(self.base_url)
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry
        self.prefer_parquet = prefer_parquet
        if deadline_seconds <= 0 or max_response_bytes <= 0:
            raise ValueError("the pull deadline and the maximum response size must be positive")
        self.deadline_seconds = deadline_seconds
        self.max_response_bytes = max_response_bytes
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
            f"/get_qml_models/{project_id}", params, lambda answer: self._read_models(answer, wanted)
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
        return self.model_metadata_snapshot(project_id)[0]

    def model_metadata_snapshot(self, project_id: int) -> tuple[pd.DataFrame, pd.Timestamp | None]:
        """The model metadata and the upstream watermark it came with (``X-QML-Watermark``; None
        without the header): what upstream describes now, as of that day."""
        frame, watermark, _ = self._call(f"/get_qml_model_metadata/{project_id}", {}, self._read_json_table)
        return frame, watermark

    # -- transport ----------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _scrubbed(self, error: BaseException, path: str) -> Exception:
        """``error`` as an error of this client with every text scrubbed. An error this client does
        not raise itself (a malformed URL, a decoder, a bug) is a request error: never retried, and
        never passed on as is, since its message may quote what was sent or received."""
        scrub = self._scrub
        if isinstance(error, ContractViolation):
            return error.scrubbed(scrub)
        if isinstance(error, QMLTransientError):
            return QMLTransientError(scrub(str(error)), error.retry_after)
        if isinstance(error, QMLRequestError):
            return QMLRequestError(scrub(str(error)), error.status)
        if isinstance(error, QMLError):
            return type(error)(scrub(str(error)))
        return QMLRequestError(scrub(f"{path}: {type(error).__name__}: {error}"))

    def _header(self, response: requests.Response, name: str) -> str | None:
        value = response.headers.get(name)
        return None if value is None else self._scrub(value)

    def _call(self, path: str, params: dict[str, str], read) -> tuple[Any, pd.Timestamp | None, str]:
        url = self.base_url + path
        budget = _Budget(path, self.deadline_seconds, self.max_response_bytes)
        retrying = tenacity.Retrying(
            # the deadline covers the whole pull: no attempt starts after it
            stop=tenacity.stop_after_attempt(self.retry.max_attempts) | tenacity.stop_before_delay(self.deadline_seconds),
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
                result = self._once(url, path, params, read, budget)
        self.log.info(
            f"QML {path}: ok after {retrying.statistics.get('attempt_number', 1)} attempt(s) "
            f"in {time.monotonic() - started:.1f}s"
        )
        return result

    def _once(self, url: str, path: str, params: dict[str, str], read, budget: _Budget):
        try:
            return self._request(url, path, params, read, budget)
        except Exception as exc:  # noqa: BLE001 - every error leaves scrubbed, whatever raised it
            error = self._scrubbed(exc, path)
        raise error  # outside the handler: the original (unscrubbed) error is not chained to it

    def _send(self, url: str, path: str, params: dict[str, str] | None, headers: dict[str, str],
              budget: _Budget) -> requests.Response:
        """GET ``url``, following redirects only within the base URL's origin (requests would
        forward the key header to any origin: it strips only ``Authorization``)."""
        for _ in range(_MAX_REDIRECTS + 1):
            timeout = (min(self.timeout[0], budget.remaining()), min(self.timeout[1], budget.remaining()))
            try:
                response = self.session.get(url, params=params, headers=headers, timeout=timeout, stream=True,
                                            allow_redirects=False)
            except requests.Timeout as exc:
                raise QMLTransientError(f"timeout calling {path}: {exc}") from None
            except requests.ConnectionError as exc:
                raise QMLTransientError(f"connection error calling {path}: {exc}") from None
            if not 300 <= response.status_code < 400:
                return response
            location = self._header(response, "Location")
            status = response.status_code
            response.close()
            if not location:
                raise QMLRequestError(f"{path} answered HTTP {status} without a Location", status)
            target = urljoin(url, location)
            try:
                origin = _origin(target)
            except ValueError:
                raise QMLRequestError(f"{path} answered HTTP {status} with a Location that is not a URL", status) from None
            if origin != self.origin:
                raise QMLRequestError(
                    f"{path} answered HTTP {status}: a redirect to {origin}, another origin than QML_API_BASE_URL's "
                    f"{self.origin}; refused, so the API key is not sent there (if upstream has moved, set "
                    "QML_API_BASE_URL to its new address)",
                    status,
                )
            url, params = target, None  # the Location carries its own query
        raise QMLRequestError(f"{path}: more than {_MAX_REDIRECTS} redirects")

    def _request(self, url: str, path: str, params: dict[str, str], read, budget: _Budget):
        headers = {"Accept": f"{PARQUET_MEDIA_TYPE}, application/json;q=0.9" if params.get("format") else "application/json"}
        if self._api_key:
            headers[API_KEY_HEADER] = self._api_key
        self.attempts += 1
        response = self._send(url, path, params, headers, budget)
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
            version = check_contract_version(self._header(response, CONTRACT_HEADER))
            header_watermark = _parse_watermark(self._header(response, WATERMARK_HEADER))
            declared = self._header(response, "Content-Length")
            if declared and declared.strip().isdigit() and not response.headers.get("Content-Encoding"):
                if int(declared) > budget.max_bytes:
                    raise budget.too_large(int(declared), "announces")
            answer = _Answer(
                media=(self._header(response, "Content-Type") or "").split(";")[0].strip().lower(),
                status=status,
                watermark=header_watermark,
                body=_BoundedBody(response, budget),
            )
            try:
                value, seen_watermark = read(answer)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise QMLTransientError(f"{path}: body cut short or stalled: {exc}") from None
        return value, header_watermark if header_watermark is not None else seen_watermark, version

    # -- body readers ---------------------------------------------------------------------------

    def _read_models(self, answer: _Answer, days: tuple[dt.date, ...]) -> tuple[pd.DataFrame, pd.Timestamp | None]:
        limit = time_limit(answer.watermark, dt.datetime.now(dt.UTC).date())
        if answer.media in (PARQUET_MEDIA_TYPE, "application/x-parquet", "application/octet-stream"):
            kept = _keep_requested(_read_parquet_rows(answer.body), days, limit)
            _raise_for_future_rows(kept.future, len(kept.rows))
            rows, latest = kept.rows, kept.latest
        elif answer.media == "application/json":
            rows, latest = _read_json_rows(answer.body, days, limit)
        else:
            raise QMLRequestError(
                f"unexpected Content-Type {answer.media or '(none)'!r} for QML rows; expected JSON or Parquet", answer.status
            )
        self._refuse_echoed_key(rows)
        return rows, latest

    def _refuse_echoed_key(self, rows: pd.DataFrame) -> None:
        """Rows carrying the API key (a field name or a value echoing it) are refused: they would
        store the key in a partition file and show it in the dashboard. Each column's distinct
        values are looked at once; numbers and times cannot carry it."""
        if not self._api_key:
            return

        def echoes(value: Any) -> bool:
            text = value if isinstance(value, str) else repr(value)
            return self._scrub(text) != text

        problems = []
        names = [str(c) for c in rows.columns]
        if any(echoes(n) for n in names):
            problems.append(Problem("<fields>", _ECHO_RULE, sum(map(echoes, names)), [{"fields_received": ", ".join(names)}]))
        for name in rows.columns:
            column = rows[name]
            if column.dtype.kind in "biufcmM":
                continue
            try:
                suspect = any(echoes(v) for v in pd.unique(column.dropna()))
            except TypeError:  # unhashable values (lists, objects): look at each
                suspect = True
            if suspect:
                mask = column.map(lambda v: v is not None and echoes(v)).to_numpy(dtype=bool)
                if mask.any():
                    problems.append(rows_problem(rows, mask, str(name), _ECHO_RULE))
        if problems:
            raise ContractViolation(ContractReport(len(rows), tuple(problems)).message(), problems)

    def _read_json_table(self, answer: _Answer) -> tuple[pd.DataFrame, None]:
        if answer.media != "application/json":
            raise QMLRequestError(f"unexpected Content-Type {answer.media or '(none)'!r}; expected JSON", answer.status)
        try:
            records = json.loads(b"".join(answer.body.chunks()))
        except ValueError as exc:
            raise QMLRequestError(f"the body is not valid JSON: {str(exc).splitlines()[0]}", answer.status) from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise QMLRequestError("the body is not a JSON array of objects", answer.status)
        frame = pd.DataFrame.from_records(records)
        self._refuse_echoed_key(frame)  # these tables are stored and shown too
        return frame, None


@dataclass(frozen=True)
class _Answer:
    """A 2xx response as the body readers see it: scrubbed header facts and the bounded body."""

    media: str
    status: int
    watermark: pd.Timestamp | None
    body: _BoundedBody


def _parse_watermark(value: str | None) -> pd.Timestamp | None:
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


def _unreadable_parquet(error: BaseException) -> ContractViolation:
    first_line = _first_line(error)
    return ContractViolation(
        f"QML rows: the Parquet body cannot be read ({type(error).__name__}: {first_line})",
        [Problem("<body>", "a readable Parquet file", 1, [{"error": first_line}])],
    )


def _read_parquet_rows(body: _BoundedBody) -> pd.DataFrame:
    """A Parquet body as raw rows. Spooled first (a temporary file beyond 64 MiB), so a large body
    is not held in memory beside its table; its decoded size as the footer declares it (rows x
    columns x 8 bytes at least) is checked against the limit before any column is decoded; any
    decoding error is a contract violation (no rows kept)."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        for data in body.chunks():
            spool.write(data)
        spool.seek(0)
        try:
            parquet = pq.ParquetFile(spool)
            metadata = parquet.metadata
            # Encoded pages can be tiny (run-length or dictionary encoded constants): at least 8 bytes
            # a value once decoded, whatever the footer says the pages take.
            declared = max(sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)),
                           metadata.num_rows * metadata.num_columns * 8)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _unreadable_parquet(exc) from None
        if declared > body.budget.max_bytes:
            raise body.budget.too_large(declared, "declares")
        names = parquet.schema_arrow.names
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            rows = parquet.metadata.num_rows
            problems = [Problem(n, "once per row (no duplicate keys)", rows, [{"columns_named_so": names.count(n)}]) for n in duplicated]
            raise ContractViolation(ContractReport(rows, tuple(problems)).message(), problems)
        try:
            return _frame_from_arrow(parquet.read())
        except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
            raise _unreadable_parquet(exc) from None


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


class _JSONArray:
    """A JSON body that must be an array: the first byte other than whitespace is checked before
    anything is parsed, so ``{}``, ``null``, ``"maintenance"`` or ``42`` are a contract violation
    (ijson would read any of them as an array with no rows, which looks like a holiday)."""

    _KINDS = {b"{": "an object", b"n": "null", b'"': "a string", b"t": "true", b"f": "false"}

    def __init__(self, raw) -> None:
        self.raw = raw
        self.checked = False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if self.checked:
            return data
        start = data.lstrip(b" \t\r\n")
        while not start and data:  # whitespace only so far
            data = self.raw.read(size)
            start = data.lstrip(b" \t\r\n")
        head = start[:1]
        if head != b"[":
            kind = "an empty body" if not head else self._KINDS.get(head, "a number" if head in b"-0123456789" else "not JSON")
            raise ContractViolation(
                f"QML rows: the body must be a JSON array of row objects, got {kind}",
                [Problem("<body>", "a JSON array of row objects", 1, [{"received": kind}])],
            )
        self.checked = True
        return start


class _NonFiniteTokens:
    """A JSON byte stream with every bare ``NaN``, ``Infinity`` or ``-Infinity`` value (not JSON,
    but what Python's json and Flask write for non-finite floats) turned into the contract's marker
    string, so ijson parses it and the contract reports the field and rows.

    A value follows ``:`` in a row object, so tokens are matched only there; the stream is cut
    after the last comma of each read, so no token spans two reads. Reads without ``NaN`` or
    ``Infinity`` anywhere (the normal case) pass through untouched. A string value that itself
    contains ``:NaN,`` would be broken by the rewrite and then fail as invalid JSON, never pass.
    What is held back is bounded (``_MAX_CARRY``): a stretch that long without a comma is passed
    on as it is, so a bare token inside it reaches the parser and fails as invalid JSON.
    """

    _TOKEN = re.compile(rb"(:\s*)(NaN|-Infinity|Infinity)(?=\s*[,}\]])")
    _MARKERS = {token.lstrip("\x00").encode(): ('"\\u0000' + token[1:] + '"').encode() for token in NON_FINITE_MARKERS}
    _READ = 1 << 16
    _MAX_CARRY = 1 << 20

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
            if len(buffer) >= self._MAX_CARRY:
                self.carry = b""
                return self._rewrite(buffer)
            self.carry = buffer

    def _rewrite(self, chunk: bytes) -> bytes:
        if b"NaN" not in chunk and b"Infinity" not in chunk:
            return chunk
        return self._TOKEN.sub(lambda m: m.group(1) + self._MARKERS[m.group(2)], chunk)


_DUPLICATE_KEY_RULE = "once per row (no duplicate keys)"


def _row_type(duplicated: dict[int, tuple[dict, list[str]]]) -> type:
    """The mapping ijson builds each object with: a dict that notes a key set twice (a plain dict
    would keep the last value, silently), by the object's id (ijson builds several rows before
    handing over the first; the entry holds the object, so its id is not reused meanwhile). Costs
    a Python call per field, about +60% parse time."""

    class Row(dict):
        __slots__ = ()

        def __setitem__(self, key, value) -> None:
            if key in self:
                duplicated.setdefault(id(self), (self, []))[1].append(key)
            dict.__setitem__(self, key, value)

    return Row


_JSON_BLOCK = 16 << 20  # bytes of the body parsed at once by the fast path (peak memory: a few blocks)
_OBJECT_BOUNDARY = re.compile(rb"\}\s*,\s*\{")
_SPACED_BOUNDARY = re.compile(rb"\}[ \t\r\n]*,")  # what is left of a boundary written with spaces
_JSON_WHITESPACE = b" \t\r\n"
# What the fast path reads a contract field as; any other JSON type in it sends the body to the
# slow path, which reports it by field and row.
_FAST_JSON_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("time", pa.string()), ("n_predict", pa.float64()),
    ("close_predict", pa.float64()), ("target_var_price", pa.float64()),
    ("yn_p", pa.float64()), ("yn_actual", pa.float64()),
])


class _NotFast(Exception):
    """The fast JSON path cannot vouch for this body: read it again with the streaming parser."""


def _read_json_rows(body: _BoundedBody, days: tuple[dt.date, ...], limit: TimeLimit) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """A JSON body of QML rows, read fast when it is what real upstream sends and slowly otherwise.

    The body is spooled first (a temporary file beyond 64 MiB, as a Parquet body is), with the
    pull's limits. The fast path (:func:`_fast_json_rows`) parses blocks of it with Arrow's C++
    JSON reader, no Python object per value; it accepts only bodies it can read exactly as the
    streaming parser would: an array of flat row objects with the contract's fields and types,
    no duplicate key, no extra field, no non-finite number, nothing the contract refuses. Any
    other body (every fault, and any extra field) is read again from the spool by the streaming
    parser (:func:`_stream_json_rows`), which names what is wrong by field and row. Both give the
    same typed rows (tested on bodies with real-data traits)."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        for data in body.chunks():
            spool.write(data)
        try:
            spool.seek(0)
            return _fast_json_rows(spool, days, limit)
        except _NotFast:
            spool.seek(0)
            return _stream_json_rows(_SpoolBody(spool), days, limit)


class _SpoolBody:
    """A spooled body with the reading interface of :class:`_BoundedBody` (its limits were applied
    while it was spooled)."""

    def __init__(self, spool) -> None:
        self.spool = spool

    def read(self, size: int = -1) -> bytes:
        return self.spool.read(_READ if size is None or size < 0 else min(size, _READ)) if size != 0 else b""

    def chunks(self) -> Iterable[bytes]:
        while data := self.read(_READ):
            yield data


def _fast_json_rows(spool, days, limit) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """Blocks of a JSON array of flat objects turned into newline-delimited JSON (``}, {`` between
    two objects becomes ``}\\n{``) and parsed by Arrow, then typed as a Parquet body is. A block
    is cut after the last object boundary in it. A boundary found inside a string value would
    leave an unterminated string in each half, which Arrow refuses: the body then goes to the slow
    path, so a wrong cut can never produce rows."""
    head = spool.read(_JSON_BLOCK).lstrip(_JSON_WHITESPACE)
    if not head.startswith(b"[") or not head[1:].lstrip(_JSON_WHITESPACE).startswith(b"{"):
        raise _NotFast  # not an array of objects, or an empty array: the slow path says which
    buffer = head[1:].lstrip(_JSON_WHITESPACE)
    parts: list[pd.DataFrame] = []
    watermark: pd.Timestamp | None = None
    while True:
        more = spool.read(_JSON_BLOCK)
        if more:
            searched = len(buffer)
            buffer += more
            end = buffer.rfind(b"},{")  # the compact form upstream writes; any spacing otherwise
            if end >= 0:
                start = end + 2
            else:
                cut = None
                for cut in _OBJECT_BOUNDARY.finditer(buffer, max(0, searched - 64)):  # noqa: B007 - the last one is wanted
                    pass
                if cut is None:
                    continue  # one object larger than a block: read on
                end, start = cut.start(), cut.end() - 1
            block, buffer = buffer[: end + 1], buffer[start:]
        else:
            block = buffer.rstrip(_JSON_WHITESPACE)
            if not block.endswith(b"]"):
                raise _NotFast  # incomplete: the slow path reports it
            block = block[:-1].rstrip(_JSON_WHITESPACE)
            buffer = b""
        kept = _keep_requested_fast(_parse_block(block), days, limit)
        if kept.latest is not None:
            watermark = kept.latest if watermark is None or kept.latest > watermark else watermark
        parts.append(kept.rows)
        if not more:
            break
    rows = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return rows, watermark


def _newline_delimited(block: bytes) -> bytes:
    """``}\n{`` between objects instead of ``},{`` (with any spacing)."""
    block = block.replace(b"},{", b"}\n{")  # the compact form upstream writes: a fast, literal replace
    return _OBJECT_BOUNDARY.sub(b"}\n{", block) if _SPACED_BOUNDARY.search(block) else block


def _parse_block(block: bytes) -> pa.Table:
    try:
        table = pajson.read_json(
            io.BytesIO(_newline_delimited(block)),
            read_options=pajson.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pajson.ParseOptions(explicit_schema=_FAST_JSON_SCHEMA, unexpected_field_behavior="error",
                                              newlines_in_values=True),
        )
    except (pa.ArrowException, ValueError):
        raise _NotFast from None
    for name in FINITE_FIELDS + tuple(n for n in QML_OPTIONAL if n not in FINITE_FIELDS):
        if name in table.column_names:
            column = table[name]
            if pc.any(pc.and_kleene(pc.is_valid(column), pc.invert(pc.is_finite(column)))).as_py():
                raise _NotFast  # NaN or Infinity: the slow path tells a NaN token from a null
    return table


def _keep_requested_fast(table: pa.Table, days, limit) -> _Kept:
    try:
        kept = _keep_requested(table.to_pandas(split_blocks=True, self_destruct=True, use_threads=False), days, limit)
    except ContractViolation:
        raise _NotFast from None
    if kept.future is not None:
        raise _NotFast
    return kept


def _stream_json_rows(
    body: _BoundedBody, days: tuple[dt.date, ...], limit: TimeLimit
) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    """Parse a JSON array of row objects in chunks; keep only ``days``; track the latest time seen.
    Rows with a key twice are reported (field, rows) wherever they are, as rows in the future are."""
    typed_parts: list[pd.DataFrame] = []
    watermark: pd.Timestamp | None = None
    future: Problem | None = None
    duplicates: dict[str, Problem] = {}
    duplicated: dict[int, tuple[dict, list[str]]] = {}
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
        items = ijson.items(_NonFiniteTokens(_JSONArray(body)), "item", use_float=True, map_type=_row_type(duplicated))
        for item in items:
            if not isinstance(item, dict):
                kind = type(item).__name__
                raise ContractViolation(f"QML rows: every array element must be an object, got {kind}",
                                        [Problem("<body>", "a JSON array of row objects", 1, [{"row": seen + count, "received": kind}])])
            if duplicated and id(item) in duplicated:
                example = {"row": seen + count, **{k: item[k] for k in QML_KEY if k in item}}
                for name in dict.fromkeys(duplicated.pop(id(item))[1]):
                    duplicates[name] = merge_problems(duplicates.get(name), Problem(name, _DUPLICATE_KEY_RULE, 1, [example]))
            if not item.keys() <= columns.keys():
                for name in item.keys() - columns.keys():
                    columns[name] = [None] * count
            for name, values in columns.items():
                values.append(item.get(name))
            count += 1
            if count >= _JSON_CHUNK_ROWS:
                flush()
        flush()
    except ijson.common.JSONError as exc:
        # the parser's first line only: the lines after it quote the body around the error
        rule = "complete JSON" if isinstance(exc, ijson.common.IncompleteJSONError) else "valid JSON"
        raise ContractViolation(f"QML rows: the body is not {rule}: {_first_line(exc)}",
                                [Problem("<body>", rule, 1, [{"row": seen + count, "error": _first_line(exc)}])]) from None
    for _, names in duplicated.values():  # objects nested in a row's value
        for name in dict.fromkeys(names):
            duplicates[name] = merge_problems(duplicates.get(name), Problem(name, _DUPLICATE_KEY_RULE, 1, [{"in": "a nested object"}]))
    if duplicates:
        problems = tuple(duplicates[name] for name in sorted(duplicates)) + ((future,) if future else ())
        raise ContractViolation(ContractReport(seen, problems).message(), problems)
    _raise_for_future_rows(future, seen)
    if not typed_parts:
        return empty_qml_rows(), None
    rows = pd.concat(typed_parts, ignore_index=True) if len(typed_parts) > 1 else typed_parts[0]
    return rows, watermark


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
