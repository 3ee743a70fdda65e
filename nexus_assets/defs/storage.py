"""One IO manager for every asset: Hive-style Parquet, one file per asset x date partition.

Layout: ``<root>/<asset key>/asset=<asset>/date=<YYYY-MM-DD>.parquet``. Each file also holds its
rows' own columns, so the whole tree reads as one dataset (DuckDB ``read_parquet(...,
hive_partitioning=true)``, Polars ``scan_parquet``, Spark). Writes are atomic: a local file is
written under a hidden temporary name in the same folder and renamed over the target; an object
store (``s3://`` and other fsspec roots) gets a single PUT, which is atomic there.

Assets hand over ``{partition key: DataFrame}`` (a range run stores one file per key); inputs
come back the same way, in key order, skipping partitions missing at the start of history when
the input says ``allow_missing_partitions``.
"""

from __future__ import annotations

import glob
import io
import os
import time
import uuid
from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext
from upath import UPath

from nexus_assets.defs.partitions import split_key

__all__ = ["ParquetPartitionIOManager", "partition_path", "write_parquet_atomic", "read_parquet"]


def partition_path(root: str, asset_key_path: list[str], partition: str | None) -> UPath:
    base = UPath(root).joinpath(*asset_key_path)
    if partition is None:
        return base / "data.parquet"
    asset, day = split_key(partition)
    return base / f"asset={asset}" / f"date={day.isoformat()}.parquet"


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    # Fixed writer options and no index: the same frame always gives the same bytes.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def write_parquet_atomic(path: UPath, frame: pd.DataFrame) -> int:
    """Write ``frame`` to ``path`` so that readers see the old file or the new one, never a part."""
    data = _parquet_bytes(frame)
    if path.protocol in ("", "file", "local"):
        local = os.fspath(path.path if hasattr(path, "path") else path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        _remove_stale_temps(local)
        temp = os.path.join(os.path.dirname(local), f".{os.path.basename(local)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, local)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return len(data)


_STALE_TEMP_SECONDS = 3600


def _remove_stale_temps(local: str) -> None:
    """Remove hidden temp files of ``local`` left by killed writers (an hour old: never a live one)."""
    pattern = os.path.join(glob.escape(os.path.dirname(local)), f".{glob.escape(os.path.basename(local))}.*.tmp")
    for temp in glob.glob(pattern):
        try:
            if time.time() - os.path.getmtime(temp) > _STALE_TEMP_SECONDS:
                os.remove(temp)
        except FileNotFoundError:
            pass


def read_parquet(path: UPath) -> pd.DataFrame:
    with path.open("rb") as handle:
        return pq.read_table(handle).to_pandas()


class ParquetPartitionIOManager(ConfigurableIOManager):
    """Parquet per partition under ``base_dir`` (a local path or an fsspec URL such as ``s3://bucket/nexus``)."""

    base_dir: str

    def _path(self, asset_key_path: list[str], partition: str | None) -> UPath:
        return partition_path(self.base_dir, asset_key_path, partition)

    def handle_output(self, context: OutputContext, obj: Mapping[str, pd.DataFrame] | pd.DataFrame) -> None:
        key_path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            if not isinstance(obj, pd.DataFrame):
                raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame, got {type(obj).__name__}")
            write_parquet_atomic(self._path(key_path, None), obj)
            return
        keys = sorted(context.asset_partition_keys)
        if isinstance(obj, pd.DataFrame) and len(keys) == 1:
            obj = {keys[0]: obj}
        if not isinstance(obj, Mapping) or sorted(obj) != keys:
            got = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(
                f"{context.asset_key.to_user_string()}: the asset must return one DataFrame per partition key "
                f"of the run; expected {keys[:3]}... ({len(keys)} keys), got {str(got)[:200]}"
            )
        written = sum(write_parquet_atomic(self._path(key_path, k), obj[k]) for k in keys)
        context.add_output_metadata(
            {"files_written": len(keys), "bytes_written": written, "root": str(UPath(self.base_dir).joinpath(*key_path))}
        )

    def load_input(self, context: InputContext) -> Mapping[str, pd.DataFrame] | pd.DataFrame:
        key_path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            return read_parquet(self._path(key_path, None))
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions", False))
        frames: dict[str, pd.DataFrame] = {}
        for key in sorted(context.asset_partition_keys):
            path = self._path(key_path, key)
            if not path.exists():
                if allow_missing:
                    continue
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} partition {key} is not materialised ({path}); "
                    "materialise it first (same partition range, upstream asset selected)"
                )
            frames[key] = read_parquet(path)
        return frames
