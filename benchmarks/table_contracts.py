"""What the IO manager's contract check costs, next to what it guards: the Parquet serialisation.

Reads every stored partition under a data dir (e.g. one written by ``nexus-assets demo``), then
times, per table, the vectorised check the IO manager runs before each write
(``core.contract.table_problems``), pandera's own lazy validation of the same frames, and the
serialisation to Parquet bytes.

    NEXUS_DATA_DIR=./data python benchmarks/table_contracts.py
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from nexus_assets.core.contract import STORED_TABLES, table_problems
from nexus_assets.defs.storage import _parquet_bytes


def _frames(root: Path) -> dict[str, list[pd.DataFrame]]:
    out: dict[str, list[pd.DataFrame]] = {}
    for path in sorted(root.rglob("date=*.parquet")):
        parts = path.relative_to(root).parts
        table = parts[1] if not parts[1].startswith("asset=") else parts[0]
        if table in STORED_TABLES:
            out.setdefault(table, []).append(pd.read_parquet(path))
    return out


def _seconds(function, frames) -> float:
    started = time.perf_counter()
    for frame in frames:
        function(frame)
    return time.perf_counter() - started


def _pandera(schema):
    def run(frame):
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors:
            pass
    return run


def main() -> int:
    root = Path(os.environ.get("NEXUS_DATA_DIR", "data"))
    frames = _frames(root)
    if not frames:
        print(f"no stored partitions under {root}; run nexus-assets demo first", file=sys.stderr)
        return 1
    print(f"{'table':18} {'files':>6} {'rows':>10} {'check ms':>9} {'pandera ms':>11} {'parquet ms':>11} {'check/parquet':>14}")
    totals = [0.0, 0.0, 0.0]
    for table, group in sorted(frames.items()):
        schema = STORED_TABLES[table]
        assert all(not table_problems(schema, f) for f in group), table
        check = _seconds(functools.partial(table_problems, schema), group)
        slow = _seconds(_pandera(schema), group)
        write = _seconds(_parquet_bytes, group)
        totals = [totals[0] + check, totals[1] + slow, totals[2] + write]
        rows = sum(len(f) for f in group)
        print(f"{table:18} {len(group):6d} {rows:10,d} {check * 1e3:9.0f} {slow * 1e3:11.0f} {write * 1e3:11.0f} "
              f"{check / write:13.0%}")
    print(f"{'all':18} {'':6} {'':10} {totals[0] * 1e3:9.0f} {totals[1] * 1e3:11.0f} {totals[2] * 1e3:11.0f} "
          f"{totals[0] / totals[2]:13.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
