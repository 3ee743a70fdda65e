"""The fault script of ``nexus-assets qml-server``: what a fault is, and what it does to an answer.

A script is a list of :class:`Fault` objects, consumed one per data request in order
(``QMLServer(faults=...)``, :meth:`~nexus_assets.qml.server.QMLServer.script`, or ``nexus-assets
qml-server --faults faults.json`` with a JSON list of fault objects, see :func:`load_faults`).
Transport faults misbehave on the wire (the server's handler plays them, with the bytes made
here: :func:`gzip_bomb`); response and payload faults serve ``/get_qml_models`` with other headers
or with rows transformed before serialisation (:func:`apply_fault`, :func:`parquet_bomb`), in
JSON and in Parquet alike.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexus_assets.core.contract import CONTRACT_VERSION, QML_COLUMNS
from nexus_assets.qml.client import CONTRACT_HEADER, WATERMARK_HEADER

__all__ = [
    "FAULT_KINDS",
    "TRANSPORT_FAULTS",
    "RESPONSE_FAULTS",
    "PAYLOAD_FAULTS",
    "ECHO_HEADERS",
    "TRUNCATED_BODY",
    "Fault",
    "Served",
    "load_faults",
    "apply_fault",
    "target_rows",
    "gzip_bomb",
    "parquet_bomb",
]

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

    Hostile upstream (an upstream that tries to leak the key, overwrite stored days or run unbounded):
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


def target_rows(rows: pd.DataFrame, fault: Fault) -> pd.Index:
    """Index labels of the rows a row-level fault touches: the first ``fault.rows`` (of ``fault.day``)."""
    chosen = rows if fault.day is None else rows[rows["time"] == pd.Timestamp(fault.day)]
    return chosen.index[: max(0, fault.rows)]


# One instant (midnight UTC of the row's day) in every form quantum_ml has been seen to send.
_TIME_FORMATS = (
    lambda t: t.strftime("%a, %d %b %Y %H:%M:%S GMT"),  # RFC 1123, as Flask renders a datetime
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
        return Served(pd.concat([rows, rows.loc[target_rows(rows, fault)]], ignore_index=True), watermark)
    if kind == "set_value" and name == "time":
        targets = target_rows(rows, fault)
        rows["time"] = rows["time"].astype("datetime64[us]")  # microseconds hold 9999-12-31, nanoseconds do not
        rows.loc[targets, "time"] = pd.Timestamp(dt.date.fromisoformat(str(fault.value))).as_unit("us")
        return Served(rows, watermark)
    if kind == "set_value":
        value = float(fault.value)
        rows[name] = rows[name].astype("float64")
        rows.loc[target_rows(rows, fault), name] = value
        return Served(rows, watermark, nan_columns=(name,) if math.isnan(value) else ())
    if kind == "conflicting_price":
        targets = target_rows(rows, fault)
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
        return Served(rows, watermark, duplicate_key=(name, decoy, tuple(rows.index.get_indexer(target_rows(rows, fault)))))
    if kind == "empty_day":
        day = pd.Timestamp(fault.day) if fault.day else (rows["time"].min() if len(rows) else None)
        return Served(rows[rows["time"] != day] if day is not None else rows, watermark)
    raise ValueError(f"fault {kind!r} does not transform a response")


# What ``truncate`` sends of a body announced twice as long: the start of a JSON array, then padding.
TRUNCATED_BODY = b'[{"symbol":"x"' + b" " * 4096


def gzip_bomb(size: int) -> Iterator[bytes]:
    """A gzip stream inflating to ``size`` bytes (``[``, whitespace, ``]``), compressed as it is
    produced: 1 MiB of it is held at a time."""
    gzip = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    yield gzip.compress(b"[")
    block, left = b" " * (1 << 20), max(0, size - 2)
    while left > 0:
        yield gzip.compress(block[: min(left, len(block))])
        left -= len(block)
    yield gzip.compress(b"]") + gzip.flush()


def parquet_bomb(row: pd.DataFrame, rows: int) -> bytes:
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
