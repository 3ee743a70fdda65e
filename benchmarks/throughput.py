"""Backfill throughput: a Bitcoin-sized year through `metrics`, with and without Dagster, side by side.

    python benchmarks/throughput.py --baseline 14aeac3            # the issue-16 table, Parquet route
    python benchmarks/throughput.py --baseline 14aeac3 --baseline 681d95c --repeats 2   # two revisions side by side
    python benchmarks/throughput.py --baseline 14aeac3 --route json --repeats 3
    python benchmarks/throughput.py --days 120                     # quicker, no baseline

A qml-server on loopback serves benchmarks/catalogs/bitcoin_scale.toml (4 horizons x 810 models,
~1.08M rows for the year); the pipeline pulls it as `source = "api"`, by default over the Parquet
route (the client asks for it), with `--route json` over the JSON route (what today's QML sends).
Each row is a fresh child process with a fresh DAGSTER_HOME and data folder; each side runs a
backfill of the first `days - 1` days, then the daily run of the last day on top of it:
  - baseline (with --baseline REV, repeatable): the README's command at revision REV, on that
    revision's files (``git archive``) with its own dagster.yaml:
        dagster asset materialize -m nexus_assets.definitions \\
            --select qml_models,horizon_slices,horizon_ensembles,horizon_search,signals,metrics \\
            --partition-range "<asset>|<first>...<asset>|<day before last>"
    (`--route json` adds `--config-json` setting the QML resource's `prefer_parquet: false`, its URL
    and key named as environment variables);
  - this checkout: the same command;
  - core without Dagster (benchmarks/_core_pipeline.py): the same work with the project's own
    functions: the pull, the contract, each step reading its inputs back from the files the step
    before wrote (the IO manager's reader, windows and history rules), the same core calls, and the
    same files checked, serialised and published as the IO manager does. Left to the Dagster side:
    per-partition metadata, the restatement check, events, run bookkeeping.
The core side imports Dagster only because helpers it shares with the assets live in Dagster-layer
modules; it times that import and the table shows it, and "core" in the ratios is its wall time
minus that import (so the import is charged to Dagster, never hidden in the core).

Printed: each row's wall time (median over --repeats, and every repeat), CPU seconds (user + sys
of the child), peak RSS and the 1-minute load average before and after; then
  - baseline / this checkout (backfill): the speed-up, for each baseline;
  - this checkout / core: the cost of running the same work through Dagster;
  - Dagster's share per asset partition: (this checkout - core) / (6 assets x (days - 1)), every
    cost of the Dagster side (metadata included) counted; the same for each baseline;
  - whether the sides wrote the same files, each against this checkout (sha256 of every file, of a
    Parquet file's decoded table, first repeat): the files both sides wrote, then those only one
    side wrote (a baseline before the ML layer has no `ml_accuracy`/`ml_calibration` tables).
Ratios are printed for wall time and for CPU time (user + sys, all threads): on a loaded machine a
child's wall time mostly measures the wait for a core; its CPU time much less so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Row, logged, timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key-not-secret"
ASSET, START = "8101_Synth_Bitcoin", dt.date(2025, 1, 1)
ASSETS = ("qml_models", "horizon_slices", "horizon_ensembles", "horizon_search", "signals", "metrics")


def _catalog(folder: Path) -> Path:
    text = (REPO / "benchmarks" / "catalogs" / "bitcoin_scale.toml").read_text().replace('source = "synthetic"', 'source = "api"')
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("models_per_horizon", "seed", "horizons"))) + "\n"
    path = folder / "catalog.toml"
    path.write_text(text)
    return path


def _command(python: str, first: dt.date, last: dt.date) -> list[str]:
    return [python, "-m", "dagster", "asset", "materialize", "-m", "nexus_assets.definitions", "--select", ",".join(ASSETS),
            "--partition-range", f"{ASSET}|{first}...{ASSET}|{last}"]


def _env(folder: Path, url: str, code: Path, catalog: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QML_", "NEXUS_", "DAGSTER_")) and k != "PYTHONPATH"}
    home = folder / "home"
    home.mkdir(parents=True)
    shutil.copyfile(code / "dagster.yaml", home / "dagster.yaml")
    env.update(DAGSTER_HOME=str(home), NEXUS_DATA_DIR=str(folder / "data"), NEXUS_CATALOG=str(catalog),
               QML_API_BASE_URL=url, QML_API_KEY=KEY, PYTHONPATH=str(code), PYTHONWARNINGS="ignore")
    return env


def _core_command(python: str, first: dt.date, last: dt.date, route: str) -> list[str]:
    return [python, str(REPO / "benchmarks" / "_core_pipeline.py"), ASSET, first.isoformat(), last.isoformat(), "--route", route]


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _content_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _content_digest(path: Path) -> str:
    """sha256 of a file's bytes; of a Parquet file's table instead: a baseline older than the
    writer's options (dictionary encoding dropped after 77e6998) stores the same tables in other
    bytes. The table is written again with fixed plain options, which depend on the schema (its
    metadata included) and the values only (not on how the reader laid out its buffers: an Arrow
    IPC stream of two equal tables can differ in a validity bitmap's presence)."""
    if path.suffix != ".parquet":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pq.read_table(path), sink, compression="none", use_dictionary=False, write_statistics=False)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="REV", action="append", default=[],
                        help="git revision to measure side by side (before the change); repeat for several")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--route", choices=("parquet", "json"), default="parquet", help="how the pipeline pulls QML")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every row (median reported)")
    parser.add_argument("--port", type=int, default=8798)
    args = parser.parse_args()
    last = START + dt.timedelta(days=args.days - 1)
    partitions = len(ASSETS) * (args.days - 1)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; route {args.route}; "
          f"{args.repeats} repeat(s)")
    # Run config replaces the resource's configuration: the URL and key are named as environment
    # variables again (never their values).
    qml = {"base_url": {"env": "QML_API_BASE_URL"}, "api_key": {"env": "QML_API_KEY"}, "prefer_parquet": False}
    config = ["--config-json", json.dumps({"resources": {"qml": {"config": qml}}})] if args.route == "json" else []
    rows: dict[str, Row] = {}
    trees: dict[str, dict[str, str]] = {}
    core_imports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="nexus-throughput-") as tmp:
        tmp = Path(tmp)
        catalog = _catalog(tmp)
        server = subprocess.Popen(
            [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", str(args.port),
             "--catalog", str(REPO / "benchmarks" / "catalogs" / "bitcoin_scale.toml")],
            env=dict(os.environ, QML_API_KEY=KEY, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{args.port}"
            print(server.stdout.readline().strip())
            import requests

            t = time.perf_counter()  # the server generates and caches the history on first request
            requests.get(f"{url}/get_qml_models/8101", params={"from_date": START, "to_date": last},
                         headers={"qml-api-key": KEY}, timeout=900)
            print(f"server warmed in {time.perf_counter() - t:.1f}s")
            codes = []
            for rev in args.baseline:
                base = tmp / f"baseline-{rev}"  # the revision's files (git archive: no worktree registered)
                base.mkdir()
                archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True, capture_output=True)
                subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
                codes.append((f"baseline {rev}", base))
            codes.append(("this checkout", REPO))
            for repeat in range(args.repeats):
                for name, code in codes:
                    folder = tmp / f"{name.replace(' ', '_')}-{repeat}"
                    env = _env(folder, url, code, catalog)
                    steps = [(f"{name}: backfill {args.days - 1} days x {len(ASSETS)} assets",
                              _command(sys.executable, START, last - dt.timedelta(days=1)) + config),
                             (f"{name}: daily run (1 day)", _command(sys.executable, last, last) + config)]
                    for label, command in steps:
                        result = timed(label, logged(command), env, folder)
                        rows.setdefault(label, Row(label)).add(*result)
                        if result[0].returncode != 0:
                            print(f"FAILED: {label}\n{result[0].stdout[-3000:]}")
                            return 1
                    if repeat == 0:
                        trees[name] = _tree(folder / "data")
                folder = tmp / f"core_only-{repeat}"
                env = _env(folder, url, REPO, catalog)
                for label, first, end in ((f"core without Dagster: {args.days - 1} days", START, last - dt.timedelta(days=1)),
                                          ("core without Dagster: the last day (1 day)", last, last)):
                    result = timed(label, _core_command(sys.executable, first, end, args.route), env, folder)
                    if result[0].returncode != 0:
                        print(f"FAILED: {label}\n{result[0].stdout[-3000:]}")
                        return 1
                    rows.setdefault(label, Row(label)).add(*result)
                    if first == START:
                        core_imports.append(tuple(float(result[0].stdout.split(f"{name}=")[1].split("s")[0])
                                                  for name in ("dagster_import", "dagster_import_cpu")))
                        print(f"core (round {repeat + 1}): {result[0].stdout.strip()}")
                if repeat == 0:
                    trees["core without Dagster"] = _tree(folder / "data")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"\n{'what':58s} {'wall s':>7s} {'each repeat':>22s} {'cpu s':>6s} {'RSS MB':>7s} {'load':>11s}")
    for row in rows.values():
        each = ", ".join(f"{m.seconds:.1f}" for m, *_ in row.runs)
        loads = f"{min(b for *_, b, _ in row.runs):.1f}-{max(a for *_, a in row.runs):.1f}"
        rss = max(m.peak_rss_mb for m, *_ in row.runs)
        print(f"{row.label:58s} {row.seconds:7.1f} {each:>22s} {row.cpu:6.1f} {rss:7.0f} {loads:>11s}")
    core_import = statistics.median(wall for wall, _ in core_imports)
    core_import_cpu = statistics.median(cpu for _, cpu in core_imports)
    core_row = rows[f"core without Dagster: {args.days - 1} days"]
    ours = rows[f"this checkout: backfill {args.days - 1} days x {len(ASSETS)} assets"]
    bases = [(rev, rows[f"baseline {rev}: backfill {args.days - 1} days x {len(ASSETS)} assets"]) for rev in args.baseline]
    print(f"\ncore without Dagster, less its import of dagster ({core_import:.1f}s wall, {core_import_cpu:.1f}s CPU): "
          f"{core_row.seconds - core_import:.1f}s wall, {core_row.cpu - core_import_cpu:.1f}s CPU")
    for what, mine, core, pick in (("wall", ours.seconds, core_row.seconds - core_import, lambda row: row.seconds),
                                   ("CPU", ours.cpu, core_row.cpu - core_import_cpu, lambda row: row.cpu)):
        print(f"{what:4s}: this checkout / core = {mine / core:.2f}x (target <= 2x); Dagster's share (this checkout - core) / "
              f"{partitions} asset partitions = {(mine - core) * 1000 / partitions:.1f} ms per asset partition (target ~2 ms)"
              + "".join(f"; baseline {rev} / this checkout = {pick(row) / mine:.2f}x, its share "
                        f"{(pick(row) - core) * 1000 / partitions:.1f} ms" for rev, row in bases))
    daily = rows["this checkout: daily run (1 day)"]
    core_daily = rows["core without Dagster: the last day (1 day)"]
    print(f"daily run: this checkout {daily.seconds:.1f}s wall / {daily.cpu:.1f}s CPU; core {core_daily.seconds - core_import:.1f}s "
          f"/ {core_daily.cpu - core_import_cpu:.1f}s (less the dagster import)")
    reference = trees["this checkout"]  # every side against it: files on both sides, then files on one side only
    for name in (n for n in trees if n != "this checkout"):
        other = trees[name]
        differ = sorted(k for k in set(reference) & set(other) if reference[k] != other[k])
        only_ours, only_theirs = sorted(set(reference) - set(other)), sorted(set(other) - set(reference))
        print(f"files: {name} vs this checkout: {len(other)} vs {len(reference)} files; of the {len(set(reference) & set(other))} "
              f"on both sides " + ("all the same" if not differ else f"{len(differ)} differ, e.g. {differ[:3]}")
              + (f"; {len(only_ours)} only in this checkout (e.g. {only_ours[0]})" if only_ours else "")
              + (f"; {len(only_theirs)} only in {name} (e.g. {only_theirs[0]})" if only_theirs else ""))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
