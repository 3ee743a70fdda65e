"""Walk-forward horizon search: every date of one asset-year, measured, and checked against the reference.

Side by side, in one run, on seeded synthetic horizon_ensembles frames (a persistent-drift price
model, forecasts for every horizon with the four within-horizon combinations, ~1% NaN forecasts
and ~1% missing rows), each variant in a fresh child process (wall time of every repeat, peak RSS
sampled over the process tree):
  1. Bitcoin-like: 10 horizons (1..10), 365 crypto dates searched, with 150 days of history before
     them, so every date of the year has its 5 folds of 30 observations (1,013 subsets x 6
     thresholds x 4 combinations = 24,312 configurations a date). The figure to reach: <= 10 s.
  2. the same year alone (no earlier history): the first 60 dates are warm-up, the next 90 have
     2 to 4 folds;
  3. one date only, the last of variant 1 (same frame): a daily partition computed on its own;
  4. exchange-like: 10 Fibonacci horizons (1 .. 180), 252 trading dates after 150 of history;
  5. 14 horizons (beyond the 12 searched exhaustively): the beam search, 365 crypto dates;
  6. an idle interpreter with the same imports (the RSS baseline).
Each child runs the search ``--repeats`` times (default 5) on every date of its year; the median
is reported. Then the slow per-date reference (nexus_assets_tests/core/reference_search.py) is
compared with the fast path of variant 1 on a few dates (labels exactly, objectives within 1e-9).

    python benchmarks/search.py              # ~4 minutes, most of it the reference
    python benchmarks/search.py --check-dates 1 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from _measure import measure, table  # noqa: E402

from nexus_assets.core.search import COMBINATIONS, THRESHOLDS, horizon_search  # noqa: E402
from nexus_assets_tests.core.reference_search import reference_search  # noqa: E402

TARGET_S = 10.0
LEAD_IN = 150  # days of history before the searched year: 5 folds of 30 returns need 150


@dataclass(frozen=True)
class Shape:
    name: str
    horizons: tuple[int, ...]
    dates: int  # searched
    lead_in: int
    calendar: str
    seed: int

    @property
    def periods(self) -> int:
        return 365 if self.calendar == "crypto" else 252

    def label(self) -> str:
        return (f"{len(self.horizons)} horizons x {self.dates} {self.calendar} date{'s' if self.dates > 1 else ''}"
                + (f" (+{self.lead_in} history)" if self.lead_in else " (year alone)"))


SHAPES = (
    Shape("bitcoin", tuple(range(1, 11)), 365, LEAD_IN, "crypto", 1860),
    Shape("bitcoin_year_alone", tuple(range(1, 11)), 365, 0, "crypto", 1860),
    Shape("bitcoin_one_date", tuple(range(1, 11)), 1, LEAD_IN + 364, "crypto", 1860),
    Shape("exchange", (1, 3, 5, 8, 13, 21, 34, 55, 89, 180), 252, LEAD_IN, "exchange", 1866),
    Shape("beam_14", (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30), 365, LEAD_IN, "crypto", 1625),
)

CHILD = """
import sys, time
import pandas as pd
from nexus_assets.core.search import horizon_search
path, first, periods, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
frame = pd.read_parquet(path)
dates = sorted(d for d in frame["date"].unique() if d >= pd.Timestamp(first))
seconds = []
for _ in range(repeats):
    started = time.perf_counter()
    board = horizon_search(frame, dates=dates, periods=periods, cost_bps=5.0)
    seconds.append(time.perf_counter() - started)
print(f"dates={len(dates)} dated_rows={board['date'].nunique()} rows={len(board)} "
      f"configs={board['candidates'].max()} methods={','.join(sorted(set(board['method'])))}")
print(" ".join(f"{s:.3f}" for s in seconds))
"""

IDLE = """
import pandas as pd
from nexus_assets.core.search import horizon_search
print("dates=0")
print("0")
"""


def ensembles_frame(shape: Shape) -> pd.DataFrame:
    """A horizon_ensembles-like frame: forecasts ride a persistent drift that is weakly predictive."""
    rng = np.random.default_rng(shape.seed)
    n_days = shape.lead_in + shape.dates
    start = pd.Timestamp("2024-06-01")
    days = pd.date_range(start, periods=n_days, freq="D" if shape.calendar == "crypto" else "B")
    drift = np.zeros(n_days)
    for i in range(1, n_days):
        drift[i] = 0.9 * drift[i - 1] + rng.normal(0, 0.0015)
    price = 100 * np.exp(np.cumsum(0.5 * np.r_[0.0, drift[:-1]] + rng.normal(0, 0.025, n_days)))
    H = len(shape.horizons)
    h = np.tile(np.array(shape.horizons, dtype="int64"), n_days)
    p = np.repeat(price, H)
    scale = np.sqrt(h)  # longer horizons are noisier
    trend = np.repeat(drift, H) * h
    n = len(h)
    frame = pd.DataFrame({
        "date": np.repeat(days, H),
        "horizon": h,
        "price": p,
        "forecast": p * (1 + trend + 0.004 * scale * rng.standard_normal(n)),
        "raw_mean": p * (1 + 0.8 * trend + 0.006 * scale * rng.standard_normal(n)),
        "raw_median": p * (1 + 0.8 * trend + 0.005 * scale * rng.standard_normal(n)),
        "low_variance": p * (1 + 0.5 * trend + 0.003 * scale * rng.standard_normal(n)),
        "strategy": "Balanced",
        "n_models": 810,
    })
    frame = frame[rng.random(n) >= 0.01].reset_index(drop=True)
    for column in COMBINATIONS.values():
        frame.loc[rng.random(len(frame)) < 0.01, column] = np.nan
    return frame


def first_searched(frame: pd.DataFrame, shape: Shape) -> pd.Timestamp:
    return sorted(frame["date"].unique())[shape.lead_in]


def check_reference(frame: pd.DataFrame, shape: Shape, n_dates: int) -> list[str]:
    """The fast path and the reference on ``n_dates`` dates spread over the year."""
    year = [d for d in sorted(frame["date"].unique()) if d >= first_searched(frame, shape)]
    picked = [year[i] for i in np.linspace(0, len(year) - 1, n_dates).round().astype(int)]
    options = {"periods": shape.periods, "cost_bps": 5.0}
    started = time.perf_counter()
    fast = horizon_search(frame, dates=picked, **options)
    fast_s = time.perf_counter() - started
    lines = [f"fast path on the same {n_dates} date(s): {fast_s:.2f} s"]
    labels = ["date", "rank", "horizons", "threshold", "combination", "n_folds", "trades", "candidates", "method"]
    for date in picked:
        started = time.perf_counter()
        want = reference_search(frame, dates=[date], **options)
        seconds = time.perf_counter() - started
        got = fast[fast["date"] == date].reset_index(drop=True)
        same = got[labels].equals(want[labels].astype(got[labels].dtypes.to_dict()))
        gap = np.max(np.abs(got["objective"] - want["objective"]) / np.abs(want["objective"])) if same else np.nan
        winner = got.iloc[0]
        lines.append(f"  {pd.Timestamp(date).date()}: reference {seconds:.1f} s; leaderboard labels identical: {same}; "
                     f"max relative objective gap {gap:.1e}; winner {winner['horizons']} / {winner['threshold']} / "
                     f"{winner['combination']} (objective {winner['objective']:.3f}, {winner['trades']} trades)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant (median reported; >= 3)")
    parser.add_argument("--check-dates", type=int, default=3, help="dates compared with the reference loop")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}, pandas {pd.__version__}")
    n_configs = (2**10 - 10 - 1) * len(THRESHOLDS) * len(COMBINATIONS)
    print(f"configurations a date with 10 horizons: 1,013 subsets x {len(THRESHOLDS)} thresholds x "
          f"{len(COMBINATIONS)} combinations = {n_configs:,}")
    results, lines, frames = [], [], {}
    with tempfile.TemporaryDirectory(prefix="nexus-search-bench-") as tmp:
        for shape in SHAPES:
            frame = frames[shape.name] = ensembles_frame(shape)
            path = Path(tmp) / f"{shape.name}.parquet"
            frame.to_parquet(path)
            m = measure(f"{shape.name}: {shape.label()}",
                        [sys.executable, "-c", CHILD, str(path), str(first_searched(frame, shape)), str(shape.periods),
                         str(args.repeats)], env=env)
            if m.returncode != 0:
                print(m.stdout[-3000:])
                return 1
            info, seconds = m.stdout.strip().splitlines()[-2:]
            runs = [float(s) for s in seconds.split()]
            median = statistics.median(runs)
            lines.append(f"{shape.name:19s} {shape.label():44s} median {median:6.2f} s  (runs: "
                         + ", ".join(f"{s:.2f}" for s in runs) + f")  {info}")
            results.append(m)
            if shape.name == "bitcoin":
                target = median
        results.append(measure("idle interpreter with the same imports", [sys.executable, "-c", IDLE], env=env))
    print("\n== horizon_search, every date of the year (fast path, one child process per variant) ==")
    print("\n".join(lines))
    print(f"\nfigure to reach: 10 horizons, one asset-year <= {TARGET_S:.0f} s: median {target:.2f} s "
          f"-> {'MET' if target <= TARGET_S else 'MISSED'}")
    print("\n" + table(results) + "\n(wall s: the whole child process, data load and every repeat included)")
    if args.check_dates > 0:
        print(f"\n== reference loop vs fast path, variant 1, {args.check_dates} date(s) ==")
        print("\n".join(check_reference(frames["bitcoin"], SHAPES[0], args.check_dates)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
