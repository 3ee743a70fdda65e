"""Dynamic quantile ensemble: fast path against the reference loop, and at Crude-Oil scale, measured.

Side by side, in one run, on seeded synthetic data shaped like real QDT tables (SyntheticProject's
default traits: near-copy children with exact direction-sequence ties, duplicated columns, churn,
missing horizon-days, days without a price; Bitcoin-like prices) + slice_horizons:
  1. One Bitcoin-like horizon (h = 3, 700 models x 370 crypto days), nexus_v2 mode: the reference
     loop (nexus_assets_tests/core/reference_ensembles.py, a per-date pandas loop as the old script,
     ordering models with pandas' default sort) against the fast path on the same slices, each in
     a fresh child process: the fast path 5 times, the reference once, the fast path 5 times again
     (the machine is shared; interleaving evens out load). The reference's wall time is compared
     with the fast path's median. Every (date, horizon) forecast is compared within 1e-9 relative;
     every difference is listed with its diagnosed cause. The fixture's tie structure is printed
     (share of children sharing a direction sequence, windows with an exact tie at a top-n
     boundary), and the reference is run a second time with a stable sort, the tie order earlier
     releases used, to show how many forecasts the tie order decides.
  2. Crude-Oil scale (10 horizons x 10,000 models x 370 trading days, ~37M slices rows): one
     asset's full history with the fast path, nexus_v2 then point_in_time, each in a fresh child
     process that reads the slices from Parquet (symbols dictionary-encoded, i.e. categorical)
     and runs the ensemble once; wall time and peak RSS sampled over the process tree.
Data generation is timed separately.

    python benchmarks/ensemble.py            # full; the reference loop alone takes ~7 minutes
    python benchmarks/ensemble.py --quick    # smaller shapes, ~1 minute
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _measure import measure, table  # noqa: E402

from nexus_assets.core.slicing import horizon_frames, slice_horizons  # noqa: E402
from nexus_assets.qml.synthetic import SyntheticProject  # noqa: E402
from nexus_assets_tests.core import reference_ensembles as reference  # noqa: E402

FAST_REPEATS = 5  # in a process before, and in another after, the reference
REFERENCE_BUDGET_S = 15 * 60  # above this estimate the reference runs on a subset of dates


@dataclass(frozen=True)
class Shape:
    name: str
    project_id: int
    horizons: tuple[int, ...]
    models: int
    days: int
    calendar: str
    start: dt.date
    start_price: float

    def dates(self) -> pd.DatetimeIndex:
        if self.calendar == "crypto":
            return pd.date_range(self.start, periods=self.days, freq="D")
        return pd.bdate_range(self.start, periods=self.days)

    def label(self) -> str:
        return f"{len(self.horizons)} horizons x {self.models:,} models x {self.days} {self.calendar} days"


BITCOIN = Shape("Bitcoin h=3", 1860, (3,), 700, 370, "crypto", dt.date(2025, 1, 1), 90_000.0)
CRUDE = Shape("Crude_Oil", 1866, tuple(range(1, 11)), 10_000, 370, "exchange", dt.date(2024, 8, 1), 70.0)
QUICK_BITCOIN = Shape("Bitcoin h=3 (quick)", 1860, (3,), 300, 130, "crypto", dt.date(2025, 1, 1), 90_000.0)
QUICK_CRUDE = Shape("Crude_Oil (quick)", 1866, (1, 2, 3), 3_000, 200, "exchange", dt.date(2024, 8, 1), 70.0)

FAST_CHILD = """
import sys, time
import pandas as pd
from nexus_assets.core.ensembles import dynamic_quantile_ensemble
source, target, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
slices = pd.read_parquet(source)
dynamic_quantile_ensemble(slices[slices["horizon"] == slices["horizon"].min()].head(20000), mode="nexus_v2")  # warm
seconds = []
for _ in range(repeats):
    started = time.perf_counter()
    out = dynamic_quantile_ensemble(slices, mode="nexus_v2")
    seconds.append(time.perf_counter() - started)
out.to_parquet(target)
print(" ".join(f"{s:.3f}" for s in seconds))
"""

REFERENCE_CHILD = """
import sys, time
import pandas as pd
from nexus_assets_tests.core.reference_ensembles import LOOKBACK, reference_ensemble
source, target, budget, kind = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
kind = None if kind == "default" else kind  # default: pandas' default sort, as the old script
slices = pd.read_parquet(source)
dates = sorted(slices["date"].unique())
started = time.perf_counter()
reference_ensemble(slices, mode="nexus_v2", dates=dates[-3:], nexus_v2_sort=kind)  # probe: seconds per date
estimate = (time.perf_counter() - started) / 3 * (len(dates) - LOOKBACK)
if estimate <= budget:
    started = time.perf_counter()
    out = reference_ensemble(slices, mode="nexus_v2", nexus_v2_sort=kind)
    seconds, how = time.perf_counter() - started, f"full run (estimated {estimate:.0f} s beforehand)"
else:  # only if the full loop would take longer than the budget
    subset = dates[LOOKBACK :: max(1, round(estimate / budget))]
    started = time.perf_counter()
    out = reference_ensemble(slices, mode="nexus_v2", dates=subset, nexus_v2_sort=kind)
    part = time.perf_counter() - started
    seconds = part * (len(dates) - LOOKBACK) / len(subset)
    how = f"SUBSET of {len(subset)} dates ran in {part:.0f} s, EXTRAPOLATED to all dates"
out.to_parquet(target)
print(f"{seconds:.3f}|{how}")
"""

CRUDE_CHILD = """
import gc, sys, time
import pyarrow.parquet as pq
from nexus_assets.core.ensembles import dynamic_quantile_ensemble
path, mode = sys.argv[1], sys.argv[2]
started = time.perf_counter()
table = pq.read_table(path, read_dictionary=["symbol"])
slices = table.to_pandas(self_destruct=True, split_blocks=True)
del table
gc.collect()
loaded = time.perf_counter()
out = dynamic_quantile_ensemble(slices, mode=mode)
done = time.perf_counter()
print(f"rows_in={len(slices)} frame_mb={slices.memory_usage(deep=True).sum() / 2**20:.0f} "
      f"load_s={loaded - started:.1f} ensemble_s={done - loaded:.1f} rows_out={len(out)}")
"""


def generate(shape: Shape, path: Path) -> tuple[int, float]:
    """Write the shape's horizon slices to Parquet, 20 observation days at a time."""
    started = time.perf_counter()
    days = shape.dates()
    project = SyntheticProject(shape.project_id, horizons=shape.horizons, models_per_horizon=shape.models,
                               seed=shape.project_id, start=days[0].date(), end=days[-1].date(),
                               calendar=shape.calendar, start_price=shape.start_price)
    writer, rows = None, 0
    for lo in range(0, len(days), 20):
        chunk = days[lo : lo + 20]
        part = pa.Table.from_pandas(slice_horizons(project.rows(chunk[0].date(), chunk[-1].date())),
                                    preserve_index=False)
        writer = writer or pq.ParquetWriter(path, part.schema)
        writer.write_table(part)
        rows += part.num_rows
    writer.close()
    return rows, time.perf_counter() - started


def child(script: str, *args: str, env: dict[str, str]) -> str:
    """Run ``script`` in a fresh interpreter; return its last line of output."""
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


def diagnose(slices: pd.DataFrame, date: pd.Timestamp, h: int, fast_row: pd.Series) -> str:
    """Why the reference and the fast path differ on (date, h): replay the reference's choice."""
    frame = horizon_frames(slices[slices["horizon"] == h])[h]
    X, y = frame.forecasts, frame.actual
    i = X.index.get_loc(date)
    L, M = reference.LOOKBACK, X.shape[1]
    fit, val = reference.split(X.iloc[i - L : i], L)
    A_fit, A_val = reference.split(y.iloc[i - L : i], L)
    prev = A_fit.shift(1)
    mkt = (A_fit - prev) / prev
    pred_dir = np.sign(fit.sub(prev, axis=0))
    strat = pred_dir.mul(mkt, axis=0)
    metrics = pd.DataFrame({"mse": (fit.sub(A_fit, axis=0) ** 2).mean(), "dir_acc": pred_dir.eq(np.sign(mkt), axis=0).mean(),
                            "pnl": strat.sum(), "sharpe": reference.sharpe_of(strat)})
    orderings = reference.ranks_and_scores(metrics, kind=None)  # the old script's sort
    scores, best_key, best = {}, None, -np.inf
    for name in reference.STRATEGIES:
        for agg in reference.AGGREGATORS:
            for q in reference.QUANTILES:
                top = orderings[name][: max(1, int(M * q))]
                E = val[top].mean(axis=1) if agg == "mean" else val[top].median(axis=1)
                scores[(name, agg, q)] = score = reference.quality(E, A_val)
                if score > best:
                    best_key, best = (name, agg, q), score
    fast_key = (fast_row["strategy"], fast_row["aggregator"], fast_row["quantile"])
    if fast_key != best_key:
        if fast_key in scores and abs(scores[fast_key] - best) <= 1e-12 * max(1.0, abs(best)):
            return f"tie between equal-quality combinations: {best_key} {best!r} vs {fast_key} {scores[fast_key]!r}"
        return f"not a tie: reference best {best_key} {best!r}, fast winner {fast_key} {scores.get(fast_key)!r}"
    name, n = fast_key[0], max(1, int(M * fast_key[2]))
    ranks = pd.DataFrame({"mse": metrics["mse"].rank(pct=True), "acc": metrics["dir_acc"].rank(pct=True, ascending=False),
                          "pnl": metrics["pnl"].rank(pct=True, ascending=False),
                          "shp": metrics["sharpe"].rank(pct=True, ascending=False)})
    w = reference.STRATEGIES[name]
    ordered = (w[0] * ranks["mse"] + w[1] * ranks["acc"] + w[2] * ranks["pnl"] + w[3] * ranks["shp"]).sort_values()
    if n < M and ordered.iloc[n - 1] == ordered.iloc[n]:
        return f"same combination {fast_key}; tie in the {name} ordering at the top-{n} boundary"
    return f"same combination {fast_key}, no ordering tie at the top-{n} boundary: unexplained"


def tie_structure(slices: pd.DataFrame) -> list[str]:
    """How tie-heavy the fixture is, measured as on real QDT tables (nexus_v2 directions, fit rows)."""
    lines = []
    L, n_fit = reference.LOOKBACK, int(0.7 * reference.LOOKBACK)
    for h, frame in horizon_frames(slices).items():
        X, y = frame.forecasts.to_numpy(), frame.actual.to_numpy()
        prev = np.r_[np.nan, y[:-1]]
        direction = np.sign(X - prev[:, None])
        move = (y - prev) / prev
        shares, tied, groups = [], 0, []
        windows = range(L, len(X))
        for i in windows:
            fit = slice(i - L, i - L + n_fit)
            present = np.flatnonzero(~np.isnan(X[fit]).all(axis=0))
            keys = pd.Series([direction[fit][1:, c].tobytes() for c in present])
            shares.append(float((keys.map(keys.value_counts()) > 1).mean()))
            pnl = np.sort(-np.nansum(direction[fit] * move[fit, None], axis=0))  # Profit_Heavy's main term
            boundary = [max(1, int(X.shape[1] * q)) for q in reference.QUANTILES]
            hit = [int((pnl == pnl[n - 1]).sum()) for n in boundary if n < len(pnl) and pnl[n - 1] == pnl[n]]
            tied += bool(hit)
            groups += hit
        lines.append(f"h={h}: {X.shape[1]} models, {len(X)} rows; children sharing their direction sequence with "
                     f"another over a fit window: {np.mean(shares):.0%}; windows with an exact pnl tie at a top-n "
                     f"boundary: {tied / len(windows):.0%} (tied groups of {min(groups, default=0)} to "
                     f"{max(groups, default=0)} models, median {np.median(groups) if groups else 0:.0f})")
    return lines


def compare(fast: pd.DataFrame, ref: pd.DataFrame, slices: pd.DataFrame) -> list[str]:
    lines = []
    both = ref.merge(fast, on=["date", "horizon"], suffixes=("_ref", "_fast"), validate="one_to_one")
    a, b = both["forecast_ref"].to_numpy(float), both["forecast_fast"].to_numpy(float)
    agree = np.isclose(b, a, rtol=1e-9, atol=0.0, equal_nan=True)
    labels = ["strategy", "aggregator", "quantile", "n_selected"]
    same_labels = np.all([both[f"{c}_ref"].to_numpy() == both[f"{c}_fast"].to_numpy() for c in labels], axis=0)
    lines.append(f"(date, horizon) rows compared: {len(both)} (reference {len(ref)}, fast {len(fast)})")
    lines.append(f"forecasts within 1e-9 relative: {agree.sum()}/{len(both)} = {agree.mean():.4%}; "
                 f"bit-identical: {np.mean(a == b):.1%}")
    lines.append(f"same strategy/aggregator/quantile/n_selected: {same_labels.sum()}/{len(both)}")
    for _, row in both[~(agree & same_labels)].iterrows():
        fast_row = pd.Series({c: row[f"{c}_fast"] for c in labels})
        cause = diagnose(slices, row["date"], int(row["horizon"]), fast_row)
        lines.append(f"  DIFF {row['date'].date()} h={row['horizon']}: reference {row['forecast_ref']!r} "
                     f"{tuple(row[f'{c}_ref'] for c in labels)} vs fast {row['forecast_fast']!r} "
                     f"{tuple(row[f'{c}_fast'] for c in labels)} -> {cause}")
    if agree.all() and same_labels.all():
        lines.append("  no difference to explain")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller shapes (about a minute)")
    parser.add_argument("--skip-crude", action="store_true", help="only part 1 (Bitcoin scale, parity and ratio)")
    args = parser.parse_args()
    bitcoin, crude = (QUICK_BITCOIN, QUICK_CRUDE) if args.quick else (BITCOIN, CRUDE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}, pandas {pd.__version__}")
    with tempfile.TemporaryDirectory(prefix="nexus-ensemble-bench-") as tmp:
        btc_path, crude_path = Path(tmp) / "bitcoin.parquet", Path(tmp) / "crude.parquet"
        rows, seconds = generate(bitcoin, btc_path)
        print(f"generated {bitcoin.name} ({bitcoin.label()}): {rows:,} slices rows in {seconds:.1f} s")
        if not args.skip_crude:
            rows, seconds = generate(crude, crude_path)
            print(f"generated {crude.name} ({crude.label()}): {rows:,} slices rows in {seconds:.1f} s "
                  f"({crude_path.stat().st_size / 2**20:.0f} MB Parquet)")

        # 1. Bitcoin scale: reference loop vs fast path, nexus_v2 mode, each in a fresh process
        fast_path, ref_path = Path(tmp) / "fast.parquet", Path(tmp) / "reference.parquet"
        stable_path = Path(tmp) / "reference_stable.parquet"
        print("\ntie structure of the fixture (real Bitcoin: 14-36 % of children, 56-92 % of windows, groups of 4-80):")
        for line in tie_structure(pd.read_parquet(btc_path)):
            print("  " + line)
        before = [float(x) for x in child(FAST_CHILD, str(btc_path), str(fast_path), str(FAST_REPEATS), env=env).split()]
        seconds, how = child(REFERENCE_CHILD, str(btc_path), str(ref_path), str(REFERENCE_BUDGET_S), "default",
                             env=env).split("|")
        ref_seconds = float(seconds)
        after = [float(x) for x in child(FAST_CHILD, str(btc_path), str(fast_path), str(FAST_REPEATS), env=env).split()]
        fast_median = statistics.median(before + after)
        print(f"\n== {bitcoin.name} scale, nexus_v2 mode ({bitcoin.label()}) ==")
        print(f"reference loop: {ref_seconds:.1f} s wall ({how})")
        print("fast path: " + ", ".join(f"{s:.2f}" for s in before) + " s before the reference; "
              + ", ".join(f"{s:.2f}" for s in after) + " s after")
        print(f"fast path median {fast_median:.2f} s (min {min(before + after):.2f} s); "
              f"reference / fast median = {ref_seconds / fast_median:.0f}x "
              f"(/ fast min = {ref_seconds / min(before + after):.0f}x)")
        for line in compare(pd.read_parquet(fast_path), pd.read_parquet(ref_path), pd.read_parquet(btc_path)):
            print(line)
        child(REFERENCE_CHILD, str(btc_path), str(stable_path), str(REFERENCE_BUDGET_S), "stable", env=env)
        stable, old_script = pd.read_parquet(stable_path), pd.read_parquet(ref_path)
        same = np.isclose(stable["forecast"], old_script["forecast"], rtol=1e-9, atol=0.0, equal_nan=True)
        print(f"a stable tie order (earlier releases) agrees with the old script on {same.mean():.2%} of forecasts "
              f"({(~same).sum()} of {len(same)} decided by the tie order)")

        # 2. Crude-Oil scale: one asset's full history, both modes, each in a fresh process
        if args.skip_crude:
            return 0
        print(f"\n== {crude.name} scale ({crude.label()}), fast path, one child process per mode ==")
        results = []
        for mode in ("nexus_v2", "point_in_time"):
            m = measure(f"{crude.name}: load Parquet + ensemble, {mode}",
                        [sys.executable, "-c", CRUDE_CHILD, str(crude_path), mode], env=env)
            if m.returncode != 0:
                print(m.stdout[-3000:])
                return 1
            print(f"{mode}: {m.stdout.strip()}")
            results.append(m)
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
