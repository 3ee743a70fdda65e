"""One-year backfill of the bundled sandbox catalog through qml_models and horizon_slices, measured.

Side by side, in one run, each in a fresh child process on a fresh data dir (peak RSS sampled over the process tree):
  1. `nexus-assets demo`: the README's main job, one in-process Dagster run per asset;
  2. `dagster asset materialize --partition-range` once per asset (4 runs), as a user backfills by hand;
  3. the same computation with no Dagster at all (pull, slice, validate, write Parquet), which shows
     how much of the wall time is Dagster's own bookkeeping (two SQLite events per partition).

    python benchmarks/backfill_year.py
    python benchmarks/backfill_year.py --skip-cli   # only 1 and 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

CORE_ONLY = """
import datetime as dt, sys
from nexus_assets.catalog import load_catalog
from nexus_assets.core.contract import HORIZON_SLICES, validate_qml_rows
from nexus_assets.core.slicing import slice_horizons
from nexus_assets.defs.storage import partition_path, write_parquet_atomic
from nexus_assets.qml.sources import pull_embedded
catalog, root = load_catalog(), sys.argv[1]
files = 0
for asset in catalog.assets:
    days = [asset.start_date + dt.timedelta(days=i) for i in range((asset.end_date - asset.start_date).days + 1)]
    pull = pull_embedded(asset, days)
    validate_qml_rows(pull.rows).raise_if_failed(asset.key)
    by_day = pull.by_day()
    slices = HORIZON_SLICES.validate(slice_horizons(pull.rows, asset.start_date))
    for day in days:
        key = f"{asset.key}|{day}"
        write_parquet_atomic(partition_path(root, ["qml_models"], key), by_day[day])
        write_parquet_atomic(partition_path(root, ["horizon_slices"], key), slices[slices["date"] == str(day)].reset_index(drop=True))
        files += 2
print(f"files={files}")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    from nexus_assets.catalog import load_catalog

    catalog = load_catalog()
    results = []
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp:
        def fresh(name: str) -> tuple[Path, dict[str, str]]:
            folder = Path(tmp) / name
            folder.mkdir()
            shutil.copyfile(REPO / "dagster.yaml", folder / "dagster.yaml")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_HOME"))}
            env.update(NEXUS_DATA_DIR=str(folder / "data"), PYTHONWARNINGS="ignore")
            return folder, env

        folder, env = fresh("demo")
        results.append(measure("Dagster, 4 runs: nexus-assets demo (4 assets x 365 days)",
                               [sys.executable, "-m", "nexus_assets.cli", "demo", "--log-level", "WARNING"], env, str(folder)))
        demo_files = len(list((folder / "data").glob("*/asset=*/date=*.parquet")))
        if not args.skip_cli:
            folder, env = fresh("cli")
            script = " && ".join(
                f"{sys.executable} -m dagster asset materialize -m nexus_assets.definitions --select qml_models,horizon_slices "
                f"--partition-range '{a.key}|{a.start_date}...{a.key}|{a.end_date}' > /dev/null 2>&1"
                for a in catalog.assets
            )
            results.append(measure(f"Dagster, {len(catalog.assets)} runs: dagster asset materialize per asset",
                                   ["bash", "-c", script], env, str(folder)))
        folder, env = fresh("core")
        results.append(measure("no Dagster: the same pull/slice/validate/write in a loop",
                               [sys.executable, "-c", CORE_ONLY, str(folder / "data")], env, str(folder)))
    for m in results:
        if m.returncode != 0:
            print(m.stdout[-3000:])
            return 1
    print(f"partition files written by the demo: {demo_files}")
    print(table(results))
    dagster, core = results[0], results[-1]
    print(f"Dagster run / plain loop = {dagster.seconds / core.seconds:.1f}x wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
