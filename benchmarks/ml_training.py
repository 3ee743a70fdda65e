"""What the ML layer's training and prediction cost per model and per instrument-year (docs/ml.md#cost).

For each bundled sandbox series: the CPU time (user + sys) of one training (MLP + logistic
baseline + ONNX export, the catalog's defaults) as the median of ``--fits`` trainings on
successive 28-day training days of 2018, the features of the whole history, and one
verified-model prediction pass over a year's rows; then the training CPU per instrument-year
for a few ``ml_retrain_days`` cadences (fits per year x horizons x median fit). The load
average is printed with the figures: CPU time runs high on a loaded machine.

    python benchmarks/ml_training.py [--fits 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile

from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_training import train_direction_model, training_anchor
from nexus_assets.defs.ml import _sandbox_volume
from nexus_assets.ml_registry import load_model, write_model
from nexus_assets.qml.sandbox import SERIES, load_prices

HORIZONS = (1, 5)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=8)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
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
            for k in range(args.fits):
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
        fits = len({training_anchor(dt.date(2018, 1, 1) + dt.timedelta(days=i), every) for i in range(365)}) * len(HORIZONS)
        print(f"ml_retrain_days {every:3d}: {fits:3d} fits per instrument-year ~ {fits * fit:.1f} s training CPU")
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")


if __name__ == "__main__":
    main()
