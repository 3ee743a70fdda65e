"""What the ML layer costs: per model, per instrument-year, at Crude-Oil scale, and in the main job.

    python benchmarks/ml_training.py                       # every section
    python benchmarks/ml_training.py --section job --job-rounds 3
    python benchmarks/ml_training.py --section crude --crude-days 261

Sections (docs/ml.md#cost):

- ``models``: for each bundled sandbox series, the CPU time (user + sys) of one training (MLP +
  logistic baseline + ONNX export, the catalog's defaults) as the median of ``--fits`` trainings on
  successive 28-day training days of 2018, the features of the whole history, and one
  verified-model prediction pass over a year's rows; then the training CPU per instrument-year for
  a few ``ml_retrain_days`` cadences (fits per year x horizons x median fit).
- ``crude``: a Crude-Oil-scale ``api`` project (QDT's 1866_Crude_Oil: ``--crude-models`` child
  models x ``--crude-horizons`` horizons a day, exchange days, every row a stored ``qml_models``
  partition written by the store's own writer): the time to read its close history from those
  partitions (what ``features`` and ``ml_models`` do in every run), its features, and one model's
  training and a year's prediction on it. Reading grows with the stored days; training is capped
  by the 750-pair window.
- ``job``: the README's main job (``dagster asset materialize`` of every asset of ``nexus_main``)
  for one bundled instrument: a backfill of the year but its last day, then the daily run of the
  last day, each in a fresh child process with a fresh DAGSTER_HOME and data folder, with the ML
  steps and without them (``features``, ``ml_models``, ``ml_predictions``, ``ml_signals``),
  alternating, ``--job-rounds`` rounds; medians, and the ML steps' added wall and CPU time.

The load average is printed with the figures: CPU time runs high on a loaded machine, wall time
more so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_training import train_direction_model, training_anchor
from nexus_assets.defs.ml import _sandbox_volume
from nexus_assets.ml_registry import load_model, write_model
from nexus_assets.qml.sandbox import SERIES, load_prices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Row, logged, timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HORIZONS = (1, 5)
ML_ASSETS = ("features", "ml_models", "ml_predictions", "ml_signals")


def _cpu() -> float:
    return time.process_time()  # user + sys of this process, every thread


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def models_section(fits: int) -> None:
    medians = {}
    for series in SERIES:
        volume = _sandbox_volume(series)
        close = load_prices(series)
        start = _cpu()
        frame = feature_frame(close, volume)
        features_cpu = _cpu() - start
        names = model_features(volume is not None)
        train_direction_model(frame, names, asset="bench", horizon=1, as_of=dt.date(2017, 12, 4))  # imports
        cpu, last = [], None
        with tempfile.TemporaryDirectory() as folder:
            for k in range(fits):
                day = training_anchor(dt.date(2018, 1, 1), 28) + dt.timedelta(days=28 * k)
                start = _cpu()
                model = train_direction_model(frame, names, asset="bench", horizon=HORIZONS[k % 2], as_of=day)
                cpu.append(_cpu() - start)
                last = write_model(folder, model.manifest, model.onnx)
            year = frame[(frame["date"] >= "2018-01-01") & (frame["date"] <= "2018-12-31")][names].to_numpy()
            start = _cpu()
            loaded = load_model(folder, "bench", last["version"], features=names)
            loaded.probability_up(year)
            predict_cpu = _cpu() - start
        medians[series] = statistics.median(cpu)
        print(f"{series:7s} closes {len(close):5d}  fit cpu median {medians[series]:.3f} s (min {min(cpu):.3f}, "
              f"max {max(cpu):.3f}, n={len(cpu)})  features {features_cpu:.3f} s  "
              f"load+predict {len(year)} rows {predict_cpu:.3f} s")
    fit = statistics.median(medians.values())
    for every in (7, 28, 56):
        count = len({training_anchor(dt.date(2018, 1, 1) + dt.timedelta(days=i), every) for i in range(365)}) * len(HORIZONS)
        print(f"ml_retrain_days {every:3d}: {count:3d} fits per instrument-year ~ {count * fit:.1f} s training CPU")


def crude_section(days: int, models: int, horizons: int) -> None:
    from nexus_assets.catalog import bundled_catalog_path, load_catalog
    from nexus_assets.defs.ml import price_history
    from nexus_assets.defs.partitions import partition_key
    from nexus_assets.defs.storage import PartitionFrames, partition_path, write_parquet_atomic

    entry = load_catalog(str(bundled_catalog_path("qdt")))["1866_Crude_Oil"]
    rng = np.random.default_rng(1866)
    dates = pd.bdate_range(entry.start_date, periods=days)
    prices = 70.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, days)))
    parents = [f"{4380 + 4 * h}.0" for h in range(horizons)]
    symbols = np.array([f"{parents[h]}_{i}" for h in range(horizons) for i in range(models)], dtype=object)
    n_predict = np.repeat(np.arange(1, horizons + 1, dtype=np.int64), models)
    with tempfile.TemporaryDirectory(prefix="nexus-ml-crude-") as folder:
        paths, written, started = {}, 0, time.perf_counter()
        for k, day in enumerate(dates):
            frame = pd.DataFrame({
                "symbol": symbols, "time": np.full(len(symbols), day.to_datetime64()).astype("datetime64[ns]"),
                "n_predict": n_predict, "close_predict": prices[k] * np.exp(rng.normal(0.0, 0.012, len(symbols))),
                "target_var_price": np.full(len(symbols), prices[k]), "yn_p": np.nan, "yn_actual": np.nan})
            path = partition_path(folder, ["qml_models"], partition_key(entry.key, day.date()))
            written += write_parquet_atomic(path, frame)
            paths[day.date()] = path
        print(f"crude: {days} stored days x {len(symbols):,} rows ({written / 2**20:.0f} MiB of qml_models) written in "
              f"{time.perf_counter() - started:.0f} s")
        frames = PartitionFrames({}, listing=lambda asset: dict(paths))
        last = dates[-1].date()
        wall, cpu = time.perf_counter(), _cpu()
        close, volume = price_history(entry, frames, last)
        read_wall, read_cpu = time.perf_counter() - wall, _cpu() - cpu
        cpu = _cpu()
        frame = feature_frame(close, volume)
        features_cpu = _cpu() - cpu
        names = model_features(volume is not None)
        anchor = training_anchor(last, 7)
        train_direction_model(frame, names, asset=entry.key, horizon=1, as_of=anchor)  # imports
        fits = []
        for horizon in HORIZONS:
            cpu = _cpu()
            model = train_direction_model(frame, names, asset=entry.key, horizon=horizon, as_of=anchor)
            fits.append(_cpu() - cpu)
        if model is None:
            print(f"crude: {len(close)} closes are too few to train with the defaults (about 185 priced days)")
            return
        with tempfile.TemporaryDirectory() as registry:
            stored = write_model(registry, model.manifest, model.onnx)
            cpu = _cpu()
            load_model(registry, entry.key, stored["version"], features=names).probability_up(frame[names].to_numpy()[-251:])
            predict_cpu = _cpu() - cpu
        print(f"crude: close history read from {days} partitions {read_wall:.2f} s wall / {read_cpu:.2f} s CPU "
              f"({1000 * read_wall / days:.1f} ms a stored day); features {features_cpu:.3f} s; one training "
              f"({model.manifest['training_window']['rows']} pairs) {statistics.median(fits):.3f} s CPU "
              f"(h{HORIZONS[0]} {fits[0]:.3f}, h{HORIZONS[1]} {fits[1]:.3f}); load + predict 251 rows {predict_cpu:.3f} s")


def _materialize(assets: list[str], key: str, first: dt.date, last: dt.date) -> list[str]:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "nexus_assets.definitions",
               "--select", ",".join(assets), "--partition-range", f"{key}|{first}...{key}|{last}"]
    return logged(command)


def job_section(rounds: int, key: str) -> int:
    from nexus_assets.catalog import bundled_catalog_path, load_catalog
    from nexus_assets.definitions import MAIN_JOB, defs

    entry = load_catalog(str(bundled_catalog_path()))[key]
    first, last = entry.start_date, entry.end_date
    everything = [k.to_user_string() for k in sorted(defs.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys)]
    variants = {"with the ML steps": everything, "without them": [a for a in everything if a not in ML_ASSETS]}
    missing = set(ML_ASSETS) - set(everything)
    if missing:
        raise SystemExit(f"the main job has no {sorted(missing)}: update ML_ASSETS")
    print(f"job: {key} {first}..{last}, {len(everything)} assets; backfill {first}..{last - dt.timedelta(days=1)}, "
          f"then the daily run of {last}")
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory(prefix="nexus-ml-job-") as tmp:
        for repeat in range(rounds):
            for name, assets in variants.items():
                folder = Path(tmp) / f"{name.split()[0]}-{repeat}"
                home = folder / "home"
                home.mkdir(parents=True)
                shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
                env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_"))}
                env.update(DAGSTER_HOME=str(home), NEXUS_DATA_DIR=str(folder / "data"), PYTHONWARNINGS="ignore")
                for label, argv in ((f"backfill, {name}", _materialize(assets, key, first, last - dt.timedelta(days=1))),
                                    (f"daily run, {name}", _materialize(assets, key, last, last))):
                    result = timed(label, argv, env, folder)
                    if result[0].returncode:
                        print(result[0].stdout)
                        return 1
                    rows.setdefault(label, Row(label)).add(*result)
                    m, cpu, before, after = result
                    print(f"  round {repeat + 1}: {label:32s} {m.seconds:6.1f} s wall {cpu:6.1f} s CPU "
                          f"{m.peak_rss_mb:5.0f} MB  load {before:.1f} -> {after:.1f}", flush=True)
    print(f"{'median of ' + str(rounds):44s} {'wall s':>8s} {'CPU s':>8s}")
    for row in rows.values():
        print(f"  {row.label:42s} {row.seconds:8.1f} {row.cpu:8.1f}")
    for run in ("backfill", "daily run"):
        with_ml, without = rows[f"{run}, with the ML steps"], rows[f"{run}, without them"]
        print(f"ML steps' added time, {run}: {with_ml.seconds - without.seconds:+.1f} s wall "
              f"({100 * (with_ml.seconds / without.seconds - 1):+.0f}%), {with_ml.cpu - without.cpu:+.1f} s CPU "
              f"({100 * (with_ml.cpu / without.cpu - 1):+.0f}%)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", default="models,crude,job", help="comma-separated: models, crude, job")
    parser.add_argument("--fits", type=int, default=8)
    parser.add_argument("--crude-days", type=int, default=261, help="stored exchange days (261: a year)")
    parser.add_argument("--crude-models", type=int, default=10_000, help="child models per horizon")
    parser.add_argument("--crude-horizons", type=int, default=10)
    parser.add_argument("--job-rounds", type=int, default=3)
    parser.add_argument("--asset", default="9001_SP500", help="the bundled instrument of the job section")
    args = parser.parse_args()
    sections = {s.strip() for s in args.section.split(",")}
    print(f"machine: {os.cpu_count()} CPUs; load average {_load()}")
    code = 0
    if "models" in sections:
        models_section(args.fits)
    if "crude" in sections:
        crude_section(args.crude_days, args.crude_models, args.crude_horizons)
    if "job" in sections:
        code = job_section(args.job_rounds, args.asset)
    print(f"load average {_load()}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
