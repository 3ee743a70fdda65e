"""The throughput benchmark's "core without Dagster" side: the work of the README's command for
one catalog asset and a range of days, with the project's own functions and no Dagster run.

    python benchmarks/_core_pipeline.py ASSET FIRST LAST [--route parquet|json]

Settings come from the environment, as for the pipeline (NEXUS_DATA_DIR, NEXUS_CATALOG,
QML_API_BASE_URL, QML_API_KEY). Step by step, as the assets do it:
  - qml_models: one pull of the covered days (the same client and limits as the QML resource),
    the contract validation, the split by day;
  - every later step reads its inputs back from the files the step before it wrote, through the
    IO manager's own reader (``PartitionFrames``: the same mapped windows, the same history rules),
    calls the same core functions as the asset, and
  - every step's files are checked against their table contracts, serialised and published exactly
    as the IO manager does it (``_serialised`` on all cores, then ``_publish``: written together, and
    the tables kept for this process's reads of them).
Not done here, because they are the Dagster layer's: per-partition metadata (payload hashes,
counts, winners, the last trades), the restatement check (it reads the hashes recorded in
Dagster's event log), events, run bookkeeping.

Dagster itself is imported here only because the helpers shared with the assets live in modules
of the Dagster layer; the time that import takes is measured and printed (``dagster_import``), so
the benchmark can leave it out of this side (wall and CPU). Prints one line: ``files=N <step>=<seconds>s ...``.
"""

from __future__ import annotations

import time

_started, _cpu = time.perf_counter(), time.process_time()
import dagster  # noqa: E402,F401  (timed on purpose: see the module docstring)

DAGSTER_IMPORT, DAGSTER_IMPORT_CPU = time.perf_counter() - _started, time.process_time() - _cpu

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import pandas as pd  # noqa: E402

from nexus_assets.core import contract  # noqa: E402
from nexus_assets.core.contract import HORIZON_SLICES, empty_frame, empty_qml_rows, validate_qml_rows  # noqa: E402
from nexus_assets.core.ensembles import LOOKBACK, ensembles_with_combinations  # noqa: E402
from nexus_assets.core.metrics import days_by_horizon_set, record  # noqa: E402
from nexus_assets.core.ml_accuracy import accuracy  # noqa: E402
from nexus_assets.core.parallel import ordered_map  # noqa: E402
from nexus_assets.core.periods import periods_per_year  # noqa: E402
from nexus_assets.core.search import FOLD_LENGTH, N_FOLDS, horizon_search  # noqa: E402
from nexus_assets.core.signals import daily_signals  # noqa: E402
from nexus_assets.core.slicing import empty_slices, slice_horizons  # noqa: E402
from nexus_assets.defs.ensembles import ensemble_history_rows, ensemble_window_days  # noqa: E402
from nexus_assets.defs.metrics import METRIC_TABLES, RECORD_TABLES, record_window_days  # noqa: E402
from nexus_assets.defs.partitions import partition_key, per_horizon_observations, priced_observations, split_by_day  # noqa: E402
from nexus_assets.defs.search import search_window_days  # noqa: E402
from nexus_assets.defs.signals import SIGNAL_TABLES  # noqa: E402
from nexus_assets.defs.storage import PartitionFrames, _publish, _serialised, _stored_days, partition_path  # noqa: E402
from nexus_assets.qml.client import QMLClient  # noqa: E402
from nexus_assets.settings import Settings  # noqa: E402

gc.freeze()  # as nexus_assets.definitions does once everything is loaded: the same GC behaviour on both sides


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("asset")
    parser.add_argument("first", type=dt.date.fromisoformat)
    parser.add_argument("last", type=dt.date.fromisoformat)
    parser.add_argument("--route", choices=("parquet", "json"), default="parquet")
    args = parser.parse_args()
    settings = Settings.from_env()
    catalog = settings.catalog()
    entry = catalog[args.asset]
    key, root = entry.key, settings.data_dir
    days = [args.first + dt.timedelta(days=i) for i in range((args.last - args.first).days + 1)]
    seconds: dict[str, float] = {}
    files = 0

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - since
        return now

    def stored(asset: str, tables: tuple[str, ...]) -> dict:
        """Every stored partition of ``asset`` for this catalog asset, as the IO manager lists them."""
        folder = partition_path(root, [asset, *tables[-1:]], partition_key(key, days[0])).parent
        out = {}
        for day in _stored_days(folder):
            pk = partition_key(key, day)
            out[day] = {t: partition_path(root, [asset, t], pk) for t in tables} if tables else partition_path(root, [asset], pk)
        return out

    def window(asset: str, tables: tuple[str, ...] = (), history: int = 0, forward: int = 0) -> PartitionFrames:
        """The input as the IO manager hands it over: the stored partitions of the mapped window
        (the run's days, ``history`` days before and ``forward`` after), the rest by listing."""
        lo, hi = days[0] - dt.timedelta(days=history), days[-1] + dt.timedelta(days=forward)
        everything = stored(asset, tables)
        paths = {partition_key(key, day): path for day, path in sorted(everything.items()) if lo <= day <= hi}
        return PartitionFrames(paths, listing=lambda _asset: stored(asset, tables))

    def write(asset: str, outputs: dict, tables: tuple[str, ...] = ()) -> None:
        nonlocal files
        labels, frames, paths = [], [], []
        for day in days:
            pk = partition_key(key, day)
            for table in tables or (None,):
                frame = outputs[day][table] if tables else outputs[day]
                labels.append((pk, table or asset))
                frames.append(frame)
                paths.append(partition_path(root, [asset, *([table] if table else [])], pk))
        serialised = ordered_map(lambda item: _serialised(asset, *item[0], bool(tables), item[1]), list(zip(labels, frames)))
        _publish([(path, arrow, blob) for path, (arrow, blob) in zip(paths, serialised)])
        files += len(paths)

    t = time.perf_counter()
    covered = [d for d in days if entry.covers(d)]
    client = QMLClient(os.environ["QML_API_BASE_URL"], os.environ["QML_API_KEY"], prefer_parquet=args.route == "parquet",
                       deadline_seconds=settings.qml_pull_deadline_seconds, max_response_bytes=settings.qml_max_response_bytes)
    pull = client.pull(entry.project_id, covered)
    validate_qml_rows(pull.rows).raise_if_failed(key)
    pulled = pull.by_day()
    t = lap("pull", t)
    write("qml_models", {d: pulled[d] if d in pulled else empty_qml_rows() for d in days})
    t = lap("qml_models", t)

    qml = window("qml_models")
    rows = pd.concat(ordered_map(qml.__getitem__, [partition_key(key, d) for d in days]), ignore_index=True)
    slices = HORIZON_SLICES.validate(slice_horizons(rows, entry.start_date))
    write("horizon_slices", split_by_day(slices, days))
    t = lap("horizon_slices", t)

    history, forward = ensemble_window_days(catalog, LOOKBACK)
    nexus_v2 = entry.selection_mode == "nexus_v2"
    inputs = window("horizon_slices", history=history, forward=forward)
    slices = inputs.history(key, days, before=per_horizon_observations(lambda h: ensemble_history_rows(h, LOOKBACK)),
                            after=per_horizon_observations(lambda h: h) if nexus_v2 else None)
    slices = empty_slices() if slices is None else slices
    roster = None
    if nexus_v2:
        everything = inputs.everything(key, ["horizon", "symbol"])
        roster = None if everything is None else everything.drop_duplicates(ignore_index=True)
    ensembles = ensembles_with_combinations(slices, mode=entry.selection_mode, lookback=LOOKBACK, dates=days, roster=roster)
    write("horizon_ensembles", split_by_day(ensembles, days))
    t = lap("horizon_ensembles", t)

    ensembles = window("horizon_ensembles", history=search_window_days(catalog)).history(
        key, days, before=priced_observations(N_FOLDS * FOLD_LENGTH + 1))
    board = horizon_search(ensembles if ensembles is not None else empty_frame(contract.HORIZON_ENSEMBLES), dates=days,
                           periods=periods_per_year(entry.calendar), cost_bps=entry.cost_bps, n_folds=N_FOLDS,
                           fold_length=FOLD_LENGTH)
    write("horizon_search", {d: {"leaderboard": rows} for d, rows in split_by_day(board, days).items()}, ("leaderboard",))
    t = lap("horizon_search", t)

    frame = window("horizon_ensembles").concat(key)
    boards = window("horizon_search", ("leaderboard",)).concat(key, "leaderboard")
    winners = None if boards is None else boards[boards["rank"] == 1]
    tables = daily_signals(frame if frame is not None else empty_frame(contract.HORIZON_ENSEMBLES),
                           threshold=entry.signal_threshold, winners=winners, min_deflated_sharpe=entry.min_deflated_sharpe)
    per_table = {name: split_by_day(tables[name], days) for name in SIGNAL_TABLES}
    write("signals", {d: {name: per_table[name][d] for name in SIGNAL_TABLES} for d in days}, SIGNAL_TABLES)
    t = lap("signals", t)

    signals = window("signals", SIGNAL_TABLES, history=record_window_days(catalog)).concat(key, "signals")
    records = {}
    for horizons, group in days_by_horizon_set(signals, days, entry.horizons).items():
        records.update(record(signals if signals is not None else empty_frame(contract.SIGNALS), as_of=group,
                              calendar=entry.calendar, cost_bps=entry.cost_bps, horizons=horizons))
    # The ML steps are not in the selection, so, as the asset does then, the ML accuracy tables are
    # those of no ML signal (typed, empty), written beside the record.
    accuracies = accuracy(empty_frame(contract.ML_SIGNALS), as_of=days)
    write("metrics", {d: {**{name: records[d][name] for name in RECORD_TABLES}, **accuracies[d]} for d in days},
          METRIC_TABLES)
    lap("metrics", t)

    steps = " ".join(f"{k}={v:.1f}s" for k, v in seconds.items())
    print(f"files={files} dagster_import={DAGSTER_IMPORT:.2f}s dagster_import_cpu={DAGSTER_IMPORT_CPU:.2f}s {steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
