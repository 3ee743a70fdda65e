"""The OpenAPI description of every route: its parameters, every answer's schema (the rows'
columns and types come from the stored tables' pandera schemas) and every error.

The handlers read their query parameters themselves (one message style, one error shape), so the
parameters are declared here, from the same :class:`~nexus_assets.api.queries.Endpoint`
declarations the handlers use; the schemathesis tests check that the document and the behaviour agree.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from nexus_assets.api.encoding import MEDIA_TYPES
from nexus_assets.api.queries import (
    ASSET_COLUMNS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Endpoint,
)
from nexus_assets.core.contract import STORED_TABLES

__all__ = ["SECURITY_SCHEME", "describe", "finish", "query_names", "row_schema"]

SECURITY_SCHEME = "ApiKey"
_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DERIVED = {
    "change": {"type": ["number", "null"], "description": "forecast / price - 1"},
    "direction": {"type": ["string", "null"], "enum": ["above", "below", "equal", None],
                  "description": "the forecast against the day's price (null without a price)"},
    "in_raw": {"type": "boolean", "description": "the raw signal uses this horizon"},
    "in_optimised": {"type": "boolean", "description": "the optimised signal uses this horizon"},
}

ERROR = {
    "type": "object",
    "required": ["error", "code", "message", "timestamp"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string", "description": "the status's name"},
        "code": {"type": "string", "enum": [
            "BAD_PARAMETER", "KEY_IN_QUERY", "UNAUTHORIZED", "FORBIDDEN", "ASSET_NOT_FOUND", "DATE_NOT_MATERIALISED",
            "INSUFFICIENT_DATA", "NOT_FOUND", "METHOD_NOT_ALLOWED", "RATE_LIMITED", "INTERNAL_ERROR", "HTTP_ERROR"]},
        "message": {"type": "string", "description": "what went wrong and what to do"},
        "timestamp": {"type": "string", "format": "date-time"},
    },
}


def _error(description: str, headers: dict | None = None) -> dict:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR}}}
    if headers:
        out["headers"] = headers
    return out


def _type(dtype: str, nullable: bool) -> dict:
    if dtype.startswith("datetime64"):
        base: dict[str, Any] = {"type": "string", "format": "date"}
    elif dtype.startswith("int"):
        base = {"type": "integer"}
    elif dtype.startswith("float"):
        return {"type": ["number", "null"]}  # NaN and infinities are null
    elif dtype == "bool":
        base = {"type": "boolean"}
    else:
        base = {"type": "string"}
    if nullable:
        base["type"] = [base["type"], "null"]
    return base


def row_schema(endpoint: Endpoint | None) -> dict:
    """The JSON schema of one row of ``endpoint``'s table (None: ``assets``)."""
    if endpoint is None:
        properties = {c: ({"type": ["string", "null"], "format": "date"} if c.endswith("_date") else {"type": "string"})
                      for c in ASSET_COLUMNS}
        properties["start_date"] = {"type": "string", "format": "date"}
    else:
        sources = [STORED_TABLES[endpoint.table], STORED_TABLES["horizon_ensembles"]]
        properties = {}
        for column in endpoint.output_columns():
            if column in _DERIVED:
                properties[column] = dict(_DERIVED[column])
                continue
            spec = next(s for s in sources if column in s.columns).columns[column]
            properties[column] = _type(str(spec.dtype), bool(spec.nullable) or not spec.required)
            if spec.description:
                properties[column]["description"] = spec.description
    required = [c for c in properties if endpoint is None or c in _DERIVED
                or next(s for s in sources if c in s.columns).columns[c].required]
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _table_schema(endpoint: Endpoint | None) -> dict:
    date = {"type": "string", "format": "date"}
    maybe_date = {"type": ["string", "null"], "format": "date"}
    properties: dict[str, Any] = {
        "endpoint": {"type": "string"},
        "page": {"type": "object", "required": ["offset", "limit", "returned", "total", "next_offset"],
                 "properties": {"offset": {"type": "integer"}, "limit": {"type": "integer"},
                                "returned": {"type": "integer"}, "total": {"type": "integer"},
                                "next_offset": {"type": ["integer", "null"],
                                                "description": "the offset of the next page; null on the last"}}},
        "columns": {"type": "array", "items": {"type": "string"}},
        "data": {"type": "array", "items": row_schema(endpoint)},
    }
    required = ["endpoint", "page", "columns", "data"]
    if endpoint is not None:
        properties.update(asset={"type": "string"}, as_of=date)
        required += ["asset", "as_of"]
        if endpoint.takes_range:
            properties.update(start=maybe_date, end=maybe_date)
        if endpoint.name == "ensemble-config":
            properties["config"] = {"type": "object", "description": "the catalog's ensemble settings for the asset"}
            required.append("config")
    return {"type": "object", "required": required, "properties": properties}


_STATUS = {
    "type": "object",
    "required": ["asset", "as_of", "latest", "upstream_watermark", "freshness", "contract_version", "selection_mode"],
    "properties": {
        "asset": {"type": "string"},
        "as_of": {"type": "string", "format": "date"},
        "latest": {"type": "object", "description": "the latest stored date per table",
                   "additionalProperties": {"type": ["string", "null"], "format": "date"}},
        "upstream_watermark": {"type": ["string", "null"], "format": "date",
                               "description": "upstream's latest published day, as recorded for as_of (null: none recorded)"},
        "freshness": {"type": "object", "required": ["judged_on", "fresh", "upstream_late", "pipeline_late", "expected",
                                                     "detail"],
                      "properties": {"judged_on": {"type": "string", "format": "date"}, "fresh": {"type": "boolean"},
                                     "upstream_late": {"type": "boolean"}, "pipeline_late": {"type": "boolean"},
                                     "expected": {"type": ["string", "null"], "format": "date"},
                                     "detail": {"type": "string"}}},
        "contract_version": {"type": "string"},
        "selection_mode": {"type": "string", "enum": ["point_in_time", "nexus_v2"]},
    },
}
_HEALTH = {
    "type": "object", "required": ["status", "contract_version", "time"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}, "contract_version": {"type": "string"},
                   "time": {"type": "string", "format": "date-time"}},
}


_MODELS = {
    "type": "object", "required": ["endpoint", "total", "models"],
    "properties": {
        "endpoint": {"type": "string", "enum": ["models"]},
        "total": {"type": "integer"},
        "models": {"type": "array", "description": "the registry's manifests of the assets this key may read, by "
                   "asset, horizon, valid_from and version (docs/ml.md)", "items": {
                       "type": "object", "required": ["version", "asset", "horizon", "valid_from", "sha256"],
                       "properties": {
                           "version": {"type": "string"}, "asset": {"type": "string"}, "horizon": {"type": "integer"},
                           "valid_from": {"type": "string", "format": "date",
                                          "description": "the first date the model may serve"},
                           "sha256": {"type": "string", "description": "SHA-256 of the model file"},
                           "source": {"type": "string", "description": "trained by the pipeline, or registered"},
                           "features": {"type": "array", "items": {"type": "string"}},
                       }}},
        "unreadable": {"type": "array", "description": "manifests of these assets that cannot be read (unparsable, "
                       "or not their folder's): the pipeline refuses to serve the asset until they are mended or removed; "
                       "`nexus-assets models verify` names the files", "items": {
                           "type": "object", "required": ["asset", "version", "reason"],
                           "properties": {"asset": {"type": "string"}, "version": {"type": "string"},
                                          "reason": {"type": "string"}}}},
    },
}


def _query(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _parameters(endpoint: Endpoint | None, name: str) -> list[dict]:
    if name in ("health", "models"):
        return []
    out = []
    if endpoint is not None:
        day = {"type": "string", "pattern": _DATE_PATTERN}
        out.append(_query(endpoint.date_parameter,
                          "the date whose partitions answer, YYYY-MM-DD (default: the latest materialised)", day))
        if endpoint.takes_range:
            what = ("the partitions' dates" if endpoint.kind == "day" else f"the rows' {endpoint.range_column}")
            out.append(_query("start", f"first date of {what}, YYYY-MM-DD", day))
            out.append(_query("end", f"last date of {what}, YYYY-MM-DD (never after as_of)", day))
        for column, allowed in endpoint.filters.items():
            out.append(_query(column, f"only the rows whose {column} is this: {allowed.describe()}", allowed.schema()))
    if endpoint is None or endpoint.is_table:
        out.append(_query("limit", f"rows per page (default {DEFAULT_LIMIT})",
                          {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}))
        out.append(_query("offset", "rows to skip (the previous page's next_offset)",
                          {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}))
        out.append(_query("format", "json (default), csv or parquet; or send the matching Accept header",
                          {"type": "string", "enum": list(MEDIA_TYPES)}))
    return out


def query_names(endpoint: Endpoint | None, name: str) -> frozenset[str]:
    """The query parameters route ``name`` takes: the handlers refuse any other (a typo such as
    ``asof=`` would otherwise answer the latest date instead of the one asked for)."""
    return frozenset(p["name"] for p in _parameters(endpoint, name))


def describe(endpoint: Endpoint | None, name: str) -> dict[str, Any]:
    """The ``add_api_route`` / ``app.get`` arguments that document route ``name``."""
    ok: dict[str, Any]
    if name == "health":
        ok = {"description": "the server is up (no key needed)", "content": {"application/json": {"schema": _HEALTH}}}
        summary = "Is the server up"
    elif name == "models":
        summary = "The ML model registry's manifests of the assets this key may read"
        ok = {"description": summary, "content": {"application/json": {"schema": _MODELS}},
              "headers": {"ETag": {"schema": {"type": "string"}}}}
    elif endpoint is not None and not endpoint.is_table:
        ok = {"description": endpoint.summary, "content": {"application/json": {"schema": _STATUS}},
              "headers": {"ETag": {"schema": {"type": "string"}}}}
        summary = endpoint.summary
    else:
        summary = endpoint.summary if endpoint is not None else "The catalog's assets this key may read, with their dates"
        ok = {"description": summary, "headers": {"ETag": {"schema": {"type": "string"}}}, "content": {
            "application/json": {"schema": _table_schema(endpoint)},
            MEDIA_TYPES["csv"].split(";")[0]: {"schema": {"type": "string"}},
            MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
        }}
    responses: dict[Any, Any] = {200: ok}
    if name != "health":
        responses.update({
            304: {"description": "Not Modified: If-None-Match named the current ETag"},
            400: _error("a bad parameter (BAD_PARAMETER), or a key in the query string (KEY_IN_QUERY)"),
            401: _error("no key, an unknown key or a revoked key (UNAUTHORIZED)",
                        {"WWW-Authenticate": {"schema": {"type": "string"}}}),
            429: _error("the key's rate limit (RATE_LIMITED)",
                        {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}),
        })
    else:
        responses[400] = _error("a key in the query string (KEY_IN_QUERY)")
    if endpoint is not None:
        responses[403] = _error("the asset is outside the key's scope (FORBIDDEN)")
        responses[404] = _error("an asset not in the catalog (ASSET_NOT_FOUND), a date not materialised "
                                "(DATE_NOT_MATERIALISED) or a day without rows (INSUFFICIENT_DATA)")
    responses[500] = _error("an unexpected failure (INTERNAL_ERROR), logged by the server; never a traceback")
    extra: dict[str, Any] = {"parameters": _parameters(endpoint, name)}
    if name != "health":
        extra["security"] = [{SECURITY_SCHEME: []}]
    description = endpoint.summary if endpoint is not None else summary
    if endpoint is not None and endpoint.is_table:
        description += (". Large answers are paged (limit, offset; the page object says what follows). "
                        f"{endpoint.date_parameter}: " + ("the rows of the partitions dated start..end, never after as_of"
                                     if endpoint.kind == "day" else "the partition of that date"))
    return {"summary": summary, "description": description, "responses": responses, "openapi_extra": extra,
            "response_class": Response}



def finish(document: dict) -> dict:
    """The generated document, completed: the key's security scheme, and without FastAPI's ``422``
    (the API answers a bad parameter with ``400``) and its unused schemas."""
    document.setdefault("components", {})["securitySchemes"] = {
        SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key",
                          "description": "created with `nexus-assets keys create`; never in the query string"}}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document["components"].get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if not schemas:
        document["components"].pop("schemas", None)
    return document
