"""The HTTP layer: FastAPI routes over :mod:`nexus_assets.api.queries`, keys, rate limits, ETags.

Every request, in order:

1. a query string carrying a key (a parameter named like a key, or any value shaped like one) is
   refused with ``400 KEY_IN_QUERY`` before anything else; query strings are never logged (the
   access log line has the method, the path with any key-shaped text masked, the status, the time);
2. ``X-API-Key`` (the only place a key is read; optional whitespace around the value is no part of
   it, as for any HTTP field) is checked: ``401`` without, with an unknown or a revoked key;
3. the key's rate limits (``limits``' sliding-window counter in memory, per key): ``429`` with
   ``Retry-After``;
4. the asset: ``404 ASSET_NOT_FOUND`` outside the catalog, ``403 FORBIDDEN`` outside the key's scope;
5. the parameters: ``400 BAD_PARAMETER``; the date: ``404 DATE_NOT_MATERIALISED``;
6. the answer, with a strong ``ETag`` (a hash of the files it was read from, their SHA-256, and the
   request's parameters and format); ``If-None-Match`` with that tag is a ``304``.

Every response, errors included, carries the security headers of :mod:`nexus_assets.serving`,
``Cache-Control: private, no-cache`` (clients revalidate with the ETag; shared caches keep
nothing a key has unlocked) and ``Vary: X-API-Key, Accept``. Every error has the body
``{error, code, message, timestamp}``; an unexpected failure is a ``500 INTERNAL_ERROR`` with that
body, logged in one line, never a traceback to the client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

import limits
import limits.aio
import orjson
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nexus_assets.api.encoding import FORMATS, MEDIA_TYPES, encode
from nexus_assets.api.keys import KeyRecord, KeyStore
from nexus_assets.api.openapi import describe, finish, query_names
from nexus_assets.api.queries import (
    ASSET_ENDPOINTS,
    MAX_LIMIT,
    Answer,
    Endpoint,
    Params,
    QueryError,
    answer,
    assets_answer,
    models_answer,
    parse_day,
    shown,
)
from nexus_assets.api.store import Store, identity_of
from nexus_assets.catalog import Catalog
from nexus_assets.core.contract import CONTRACT_VERSION
from nexus_assets.serving import API_CONTENT_SECURITY_POLICY, security_headers

__all__ = ["API_PREFIX", "create_app", "error_body"]

log = logging.getLogger("nexus_assets.api")
access_log = logging.getLogger("nexus_assets.api.access")

API_PREFIX = "/api/v1"
_KEY_NAMES = {"apikey", "xapikey", "key", "token", "accesstoken", "apitoken", "authorization", "auth", "secret"}
_KEY_SHAPE = re.compile(r"nxk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
_KEY_MASK = re.compile(r"nxk_[A-Za-z0-9_-]+")
_HEADERS = [(k.lower().encode(), v.encode()) for k, v in {
    **security_headers(API_CONTENT_SECURITY_POLICY),
    "Cache-Control": "private, no-cache",
    "Vary": "X-API-Key, Accept",
}.items()]
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           406: "Not Acceptable", 429: "Too Many Requests", 500: "Internal Server Error"}
_PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def error_body(status: int, code: str, message: str) -> dict[str, str]:
    return {"error": _TITLES.get(status, "Error"), "code": code, "message": message, "timestamp": _now()}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body(status, code, message)), status_code=status,
                    media_type="application/json", headers=headers)


class _Guard:
    """Pure ASGI middleware: refuses keys in query strings, adds the headers, logs one line per request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status_seen = [0]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + _HEADERS
            await send(message)

        try:
            if _key_in_query(scope.get("query_string", b"")):
                response = _error(400, "KEY_IN_QUERY", "API keys are accepted only in the X-API-Key header, never in "
                                  "the query string (it ends up in logs and browser history): consider that key "
                                  "exposed, revoke it and send the new one in the header")
                await response(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        except Exception as exc:  # one line in the log, the error shape to the client, never a traceback
            log.error("error answering %s %s: %s", scope.get("method"), _masked(scope.get("path", "")),
                      type(exc).__name__)
            if status_seen[0]:
                raise  # the answer was already under way: nothing clean can be sent any more
            await _error(500, "INTERNAL_ERROR", "the server could not answer; its log says why")(scope, receive, sending)
        finally:
            access_log.info("%s %s %s %.1fms", scope.get("method"), _masked(scope.get("path", "")), status_seen[0],
                            (time.perf_counter() - started) * 1000)


def _masked(path: str) -> str:
    """A path for the log: key-shaped text masked, control characters escaped, cut at 200 characters."""
    return _KEY_MASK.sub("nxk_***", path)[:200].encode("unicode_escape").decode()


def _key_in_query(query: bytes) -> bool:
    if not query:
        return False
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if re.sub(r"[^a-z]", "", name.lower()) in _KEY_NAMES or _KEY_SHAPE.search(value) or _KEY_SHAPE.search(name):
            return True
    return False


class _ResponseCache:
    """Encoded answers by request, valid while every file and folder they were read from is unchanged."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self._entries: OrderedDict[tuple, tuple[list, str, bytes]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[str, bytes] | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        seen, etag, body = entry
        if any(identity_of(path) != identity for path, identity in seen):
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return etag, body

    def put(self, key: tuple, seen: list, etag: str, body: bytes) -> None:
        if len(body) > self._max // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[2])
            self._entries[key] = (list(seen), etag, body)
            self._bytes += len(body)
            while self._bytes > self._max:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


def _etag(answer: Answer, request_key: tuple) -> str:
    digest = hashlib.sha256(repr(request_key).encode())
    for table, day, sha in answer.files:
        digest.update(f"{table}|{day}|{sha}".encode())
    if "judged_on" in answer.fields:
        digest.update(str(answer.fields["judged_on"]).encode())
    return f'"{digest.hexdigest()[:32]}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise QueryError(400, "BAD_PARAMETER", f"{name} is given {len(values)} times: give it once")
    return values[0] if values else None


def _count(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", text) or not low <= int(text) <= high:
        raise QueryError(400, "BAD_PARAMETER", f"{name} must be an integer from {low} to {high}, got {shown(text)}")
    return int(text)


def _format(request: Request, table: bool) -> str:
    """``format=`` wins; else the ``Accept`` header (CSV or Parquet when asked for); else JSON."""
    fmt = _one(request, "format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise QueryError(400, "BAD_PARAMETER", f"format must be one of {', '.join(FORMATS)}, got {shown(fmt)}")
    else:
        accept = request.headers.get("accept", "").lower()
        fmt = "csv" if "text/csv" in accept else "parquet" if any(t in accept for t in _PARQUET_TYPES) else "json"
    if fmt != "json" and not table:
        raise QueryError(400, "BAD_PARAMETER", "this answer is a document, not a table: JSON only")
    return fmt


def _params(request: Request, endpoint: Endpoint | None, name: str, allowed: frozenset[str]) -> Params:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise QueryError(400, "BAD_PARAMETER", f"unknown parameter {shown(unknown[0])}: {name} takes "
                         f"{', '.join(sorted(allowed)) or 'no parameter'}")
    filters = {}
    for column in (endpoint.filters if endpoint is not None else {}):
        value = _one(request, column)
        if value is not None:
            filters[column] = value
    dates = {"as_of": endpoint.date_parameter, "start": "start", "end": "end"} if endpoint is not None else {}
    parsed = {field: parse_day(_one(request, name), name) for field, name in dates.items()}
    return Params(**parsed, limit=_count(_one(request, "limit"), "limit", 1000, 1, MAX_LIMIT),
                  offset=_count(_one(request, "offset"), "offset", 0, 0, 10**9), filters=filters)


def create_app(*, catalog: Catalog, store: Store, keys: KeyStore, clock: Callable[[], dt.date] | None = None) -> FastAPI:
    """The API over ``store`` (the data directory) for ``catalog``, keys from ``keys``."""
    today = clock or (lambda: dt.datetime.now(dt.UTC).date())
    # limits' asyncio flavour: its in-memory storage expires counters in an event-loop task, where
    # the threaded one starts a timer thread every 10 ms under load (~1 ms a request, measured)
    limiter = limits.aio.strategies.SlidingWindowCounterRateLimiter(limits.aio.storage.MemoryStorage())
    rate_items: dict[str, list] = {}
    cache = _ResponseCache()
    app = FastAPI(
        title="nexus-assets API",
        version=CONTRACT_VERSION,
        description="Read-only access to the materialised partitions: forecasts, signals and the record of any "
                    "asset as of any materialised date. Send the key in the `X-API-Key` header (never in the "
                    "query string). Errors have the body `{error, code, message, timestamp}`.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # Swagger UI loads scripts the API's Content-Security-Policy does not allow
        redoc_url=None,
    )
    app.add_middleware(_Guard)

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> Response:
        headers = getattr(exc, "headers", None)
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        message = {404: "no such endpoint: see /api/v1/openapi.json",
                   405: "the API is read-only: GET only"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, "BAD_PARAMETER", f"{where}: {first.get('msg', 'invalid')}")

    async def authorise(request: Request) -> KeyRecord:
        values = request.headers.getlist("x-api-key")
        if len(values) > 1:
            raise QueryError(400, "BAD_PARAMETER", "send one X-API-Key header")
        presented = values[0].strip(" \t") if values else ""
        challenge = {"WWW-Authenticate": 'APIKey header="X-API-Key"'}
        if not presented:
            raise _with_headers(QueryError(401, "UNAUTHORIZED", "send your API key in the X-API-Key header"), challenge)
        outcome, record = keys.verify(presented)
        if outcome == "revoked":
            raise _with_headers(QueryError(401, "UNAUTHORIZED", "this API key was revoked"), challenge)
        if record is None:
            raise _with_headers(QueryError(401, "UNAUTHORIZED", "unknown API key"), challenge)
        items = rate_items.get(record.rate)
        if items is None:
            items = rate_items[record.rate] = list(limits.parse_many(record.rate))
        for item in items:
            if not await limiter.hit(item, record.key_id):
                reset = (await limiter.get_window_stats(item, record.key_id)).reset_time
                retry = max(1, math.ceil(reset - time.time()))
                raise _with_headers(QueryError(429, "RATE_LIMITED", f"rate limit of {item} for this key exceeded: "
                                               f"retry in {retry} s"), {"Retry-After": str(retry)})
        keys.touch(record)
        return record

    def build_and_encode(request_key: tuple, build: Callable[[], Answer], fmt: str) -> tuple[str, bytes]:
        built = build()
        etag, body = _etag(built, request_key), encode(built, fmt)
        if store.local:  # an object store's files have no identity to check a cached answer against
            cache.put(request_key, built.seen, etag, body)
        return etag, body

    async def respond(request: Request, request_key: tuple, build: Callable[[], Answer], fmt: str) -> Response:
        hit = cache.get(request_key)
        if hit is None:  # files to read and parse: on a worker thread, the event loop keeps serving
            etag, body = await run_in_threadpool(build_and_encode, request_key, build, fmt)
        else:
            etag, body = hit
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type=MEDIA_TYPES[fmt], headers={"ETag": etag})

    @app.get(f"{API_PREFIX}/health", **describe(None, "health"))
    async def health() -> Response:
        return Response(orjson.dumps({"status": "ok", "contract_version": CONTRACT_VERSION, "time": _now()}),
                        media_type="application/json")

    assets_names = query_names(None, "assets")

    @app.get(f"{API_PREFIX}/assets", **describe(None, "assets"))
    async def assets(request: Request) -> Response:
        record = await authorise(request)
        params, fmt = _params(request, None, "assets", assets_names), _format(request, table=True)
        request_key = ("assets", record.assets, params.limit, params.offset, fmt)
        return await respond(request, request_key, lambda: assets_answer(store, catalog, record.may_see, params), fmt)

    @app.get(f"{API_PREFIX}/models", **describe(None, "models"))
    async def models(request: Request) -> Response:
        record = await authorise(request)
        _params(request, None, "models", frozenset())
        _format(request, table=False)
        request_key = ("models", record.assets)
        return await respond(request, request_key, lambda: models_answer(store, catalog, record.may_see), "json")

    def route(endpoint: Endpoint) -> None:
        names = query_names(endpoint, endpoint.name)

        async def handler(request: Request, asset: Annotated[str, Path(
                description="a catalog asset key, e.g. 9001_SP500 (`assets` lists those the key may read)")]) -> Response:
            record = await authorise(request)
            try:
                entry = catalog[asset]
            except KeyError:
                raise QueryError(404, "ASSET_NOT_FOUND", f"no asset {shown(asset)} in the catalog") from None
            if not record.may_see(asset):
                raise QueryError(403, "FORBIDDEN", f"this API key may not read {shown(asset)}")
            params, fmt = _params(request, endpoint, endpoint.name, names), _format(request, table=endpoint.is_table)
            day = today() if endpoint.kind == "document" and params.as_of is None else None
            request_key = (endpoint.name, asset, params.as_of, params.start, params.end, params.limit, params.offset,
                           tuple(sorted(params.filters.items())), fmt, day)
            return await respond(request, request_key, lambda: answer(store, entry, endpoint, params, today()), fmt)

        handler.__name__ = endpoint.name.replace("-", "_")
        app.add_api_route(f"{API_PREFIX}/{endpoint.name}/{{asset}}", handler, methods=["GET"],
                          **describe(endpoint, endpoint.name))

    for endpoint in ASSET_ENDPOINTS.values():
        route(endpoint)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = finish(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi
    return app


def _with_headers(exc: QueryError, headers: dict[str, Any]) -> QueryError:
    exc.headers = headers
    return exc
