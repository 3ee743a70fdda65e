"""An answer as bytes: JSON (the default), CSV or Parquet.

Dates are ``YYYY-MM-DD`` strings in JSON and CSV (naive ``timestamp`` in Parquet, as stored);
a NaN or infinite number is JSON ``null`` (in CSV, NaN is an empty field, infinities ``inf``). Floats are written with the
shortest representation that reads back to the same double, so a client gets the stored values
exactly, whatever the format.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nexus_assets.api.queries import Answer

__all__ = ["FORMATS", "MEDIA_TYPES", "encode", "envelope"]

MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
FORMATS = tuple(MEDIA_TYPES)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dated(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d")
    return out


def envelope(answer: Answer) -> dict[str, Any]:
    """The JSON document of an answer (a table's page with its paging, or the document)."""
    if answer.document is not None:
        return answer.document
    params, frame = answer.params, answer.frame
    head: dict[str, Any] = {"endpoint": answer.endpoint}
    if answer.asset is not None:
        head.update(asset=answer.asset, as_of=_plain(answer.as_of))
    head.update({k: _plain(v) for k, v in answer.fields.items() if k != "judged_on"})
    following = params.offset + len(frame)
    head["page"] = {"offset": params.offset, "limit": params.limit, "returned": len(frame), "total": answer.total,
                    "next_offset": following if following < answer.total else None}
    head["columns"] = list(frame.columns)
    head["data"] = _dated(frame).to_dict("records")
    return head


def encode(answer: Answer, fmt: str) -> bytes:
    if fmt == "json":
        # orjson: NaN and infinities become null, floats the shortest exact repr
        return orjson.dumps(envelope(answer))
    if fmt == "csv":
        return _dated(answer.frame).to_csv(index=False, lineterminator="\n").encode()
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(answer.frame, preserve_index=False), sink, compression="zstd")
        return sink.getvalue()
    raise ValueError(f"unknown format {fmt!r}")
