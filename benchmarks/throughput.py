"""Backfill throughput: a Bitcoin-sized year through `metrics`, with and without Dagster, measured.

Side by side, in one run, each in a fresh child process with a fresh DAGSTER_HOME and data dir
(the qml-server serves benchmarks/catalogs/bitcoin_scale.toml, 4 horizons x 810 models, over
loopback; the pipeline pulls it as `source = "api"`, JSON route, as real QML is pulled):
  1. baseline (with --baseline REV): the README's command at git revision REV, i.e. "today" before
     the throughput work, in a temporary worktree with that revision's own dagster.yaml;
  2. the README's command on this checkout:
       dagster asset materialize -m nexus_assets.definitions \\
           --select qml_models,horizon_slices,horizon_ensembles,horizon_search,signals,metrics \\
           --partition-range "<asset>|<first>...<asset>|<day before last>"
     then the daily run: the same command for the last day alone;
  3. the same work on the core without Dagster (pull, validate, slice, ensemble, search, signals,
     metrics, one Parquet file per asset table and day with the same writer);
and Dagster's share per asset partition: (2 - 3) / (assets x days).

    python benchmarks/throughput.py --baseline f05b75c
    python benchmarks/throughput.py --days 120     # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key-not-secret"
ASSET, START = "8101_Synth_Bitcoin", dt.date(2025, 1, 1)
ASSETS = ("qml_models", "horizon_slices", "horizon_ensembles", "horizon_search", "signals", "metrics")

CORE_ONLY = """
import datetime as dt, sys, time
from nexus_assets.settings import Settings
from nexus_assets.core.contract import HORIZON_SLICES, validate_qml_rows
from nexus_assets.core.ensembles import LOOKBACK
from nexus_assets.core.metrics import record
from nexus_assets.core.search import FOLD_LENGTH, N_FOLDS, horizon_search
from nexus_assets.core.signals import daily_signals
from nexus_assets.core.slicing import slice_horizons
from nexus_assets.core.periods import periods_per_year
from nexus_assets.defs.ensembles import ensembles_with_combinations
from nexus_assets.defs.partitions import split_by_day
from nexus_assets.defs.storage import partition_path
from nexus_assets.qml.client import QMLClient
import os
settings = Settings.from_env()
entry = settings.catalog()[sys.argv[1]]
root = settings.data_dir
days = [entry.start_date + dt.timedelta(days=i) for i in range(int(sys.argv[2]))]
seconds, files = {}, 0
def lap(name, t):
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
    return time.perf_counter()
from nexus_assets.atomic import write_many_atomic
from nexus_assets.core.parallel import ordered_map
from nexus_assets.defs.storage import _parquet_bytes
def write(asset, table, frames):  # as the IO manager writes a step's output: serialise all, publish together
    global files
    paths = [partition_path(root, [asset] + ([table] if table else []), f"{entry.key}|{day}") for day in days]
    blobs = ordered_map(_parquet_bytes, [frames[day] for day in days])
    write_many_atomic(list(zip(paths, blobs))); files += len(paths)
t = time.perf_counter()
pull = QMLClient(os.environ["QML_API_BASE_URL"], os.environ["QML_API_KEY"]).pull(entry.project_id, days)
validate_qml_rows(pull.rows).raise_if_failed(entry.key)
by_day = pull.by_day()
t = lap("pull + contract", t)
slices = HORIZON_SLICES.validate(slice_horizons(pull.rows, entry.start_date))
t = lap("slice", t)
ens = ensembles_with_combinations(slices, mode=entry.selection_mode, lookback=LOOKBACK, dates=days)
t = lap("ensemble + combinations", t)
board = horizon_search(ens, dates=days, periods=periods_per_year(entry.calendar), cost_bps=entry.cost_bps,
                       n_folds=N_FOLDS, fold_length=FOLD_LENGTH)
t = lap("search", t)
winners = board[board["rank"] == 1]
sig = daily_signals(ens, threshold=entry.signal_threshold, winners=winners, min_deflated_sharpe=entry.min_deflated_sharpe)
t = lap("signals", t)
from nexus_assets.defs.metrics import _days_by_horizon_set  # the asset's grouping of as-of days
records = {}
for horizons, group in _days_by_horizon_set(sig["signals"], days, entry.horizons).items():
    records.update(record(sig["signals"], as_of=group, calendar=entry.calendar, cost_bps=entry.cost_bps, horizons=horizons))
t = lap("metrics", t)
import pandas as pd
empty = pull.rows.iloc[0:0]
write("qml_models", None, {d: by_day.get(d, empty) for d in days})
write("horizon_slices", None, split_by_day(slices, days))
write("horizon_ensembles", None, split_by_day(ens, days))
write("horizon_search", "leaderboard", split_by_day(board, days))
for name in ("signals", "slopes"):
    write("signals", name, split_by_day(sig[name], days))
for name in ("statistics", "trades", "daily"):
    write("metrics", name, {d: records[d][name] for d in days})
t = lap("Parquet writes", t)
print("files=%d " % files + " ".join(f"{k.replace(' ', '_')}={v:.1f}s" for k, v in seconds.items()))
"""


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


def _shell(command: list[str]) -> list[str]:
    quoted = " ".join(f"'{part}'" for part in command)
    return ["bash", "-c", f"{quoted} > run.log 2>&1 || {{ tail -40 run.log; exit 1; }}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="REV", help="git revision to measure side by side (before the change)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--port", type=int, default=8798)
    args = parser.parse_args()
    last = START + dt.timedelta(days=args.days - 1)
    partitions = len(ASSETS) * (args.days - 1)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="nexus-throughput-") as tmp:
        tmp = Path(tmp)
        catalog = _catalog(tmp)
        server = subprocess.Popen(
            [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", str(args.port),
             "--catalog", str(REPO / "benchmarks" / "catalogs" / "bitcoin_scale.toml")],
            env=dict(os.environ, QML_API_KEY=KEY, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
        results, notes = [], []
        try:
            url = f"http://127.0.0.1:{args.port}"
            print(server.stdout.readline().strip())
            import requests

            t = time.perf_counter()  # the server generates and caches the history on first request
            requests.get(f"{url}/get_qml_models/8101", params={"from_date": START, "to_date": last},
                         headers={"qml-api-key": KEY}, timeout=900)
            print(f"server warmed in {time.perf_counter() - t:.1f}s")
            codes = [("this checkout", REPO)]
            if args.baseline:
                base = tmp / "baseline"
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.baseline],
                               check=True, capture_output=True)
                codes.insert(0, (f"baseline {args.baseline}", base))
            try:
                for name, code in codes:
                    folder = tmp / name.replace(" ", "_")
                    env = _env(folder, url, code, catalog)
                    python = sys.executable
                    results.append(measure(f"{name}: backfill {args.days - 1} days x {len(ASSETS)} assets",
                                           _shell(_command(python, START, last - dt.timedelta(days=1))), env, str(folder)))
                    results.append(measure(f"{name}: daily run (1 day)", _shell(_command(python, last, last)), env, str(folder)))
                    files = len(list((folder / "data").glob("**/date=*.parquet")))
                    notes.append(f"{name}: {files} Parquet files")
                folder = tmp / "core_only"
                env = _env(folder, url, REPO, catalog)
                command = [sys.executable, "-c", CORE_ONLY, ASSET, str(args.days - 1)]
                results.append(measure(f"core without Dagster: {args.days - 1} days", command, env, str(folder)))
            finally:
                if args.baseline:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline")], capture_output=True)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    for m in results:
        if m.returncode != 0:
            print(f"FAILED: {m.label}\n{m.stdout[-3000:]}")
            return 1
    print(table(results))
    for line in notes:
        print(line)
    core = results[-1]
    print(f"core without Dagster: {core.stdout.strip()}")
    ours = next(m for m in results if m.label.startswith("this checkout: backfill"))
    print(f"this checkout / core = {ours.seconds / core.seconds:.2f}x; Dagster's share "
          f"{(ours.seconds - core.seconds) * 1000 / partitions:.1f} ms per asset partition ({partitions} asset partitions)")
    if args.baseline:
        base = results[0]
        print(f"baseline / this checkout (backfill) = {base.seconds / ours.seconds:.2f}x; baseline's Dagster share "
              f"{(base.seconds - core.seconds) * 1000 / partitions:.1f} ms per asset partition")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
