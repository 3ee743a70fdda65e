"""Dashboard rendering: one page, and the whole site of the bundled catalog-year, measured.

On seeded synthetic tables shaped like the stored ones (nexus_assets_tests/core/dashboard/
tables.py: 5 horizons, 68 child models, two signal variants, the follow-the-signal simulation;
by the last day a page holds ~365 daily rows per signal, tens of trades per signal and basis and a
20-row leaderboard):
  1. one page: ``render_page`` of an asset's last (largest) day, repeated; median and max;
  2. the site: 4 assets x 365 dates = 1,460 pages, rendered and written atomically, then each
     asset's history page, the index and the shared plotly.js. Slicing the synthetic history
     into each day's tables (the stored partitions, which the pipeline reads from Parquet) is
     timed apart from the build.
Figures to reach: one page <= 1 s, the site <= 60 s.

    python benchmarks/dashboard.py                 # site in a temporary folder, removed after
    python benchmarks/dashboard.py --site /tmp/s   # keep the site (e.g. for the screenshots script)
    python benchmarks/dashboard.py --site /tmp/s --pages 5 --repeat 3   # a quick small site to look at
    python benchmarks/dashboard.py --assets 1      # one instrument's 365 pages (the demo's share per asset)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nexus_assets.core.dashboard import (  # noqa: E402
    AssetSummary,
    history_path,
    page_path,
    render_history,
    render_index,
    render_page,
    summarise,
)
from nexus_assets.site_files import write_site_assets, write_site_file  # noqa: E402
from nexus_assets_tests.core.dashboard.tables import page_inputs, synthetic_history  # noqa: E402

ASSETS = (
    ("9001_SP500", "S&P 500 (sandbox)", "Equity Index", 2700.0),
    ("9002_NASDAQ", "NASDAQ Composite (sandbox)", "Equity Index", 7000.0),
    ("9003_WTI_Crude", "WTI Crude Oil spot (sandbox)", "Commodity", 60.0),
    ("9004_VIX", "CBOE Volatility Index (sandbox)", "Volatility", 14.0),
)
DAYS = 365


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, help="build the site here and keep it")
    parser.add_argument("--repeat", type=int, default=21, help="renders of the single page")
    parser.add_argument("--pages", type=int, default=0, help="build only each asset's last N pages (0: all)")
    parser.add_argument("--days", type=int, default=DAYS, help="dates per asset (the figures to reach need 365)")
    parser.add_argument("--assets", type=int, default=len(ASSETS), choices=range(1, len(ASSETS) + 1),
                        help="how many of the catalog's assets to build (default: all)")
    args = parser.parse_args()

    started = time.perf_counter()
    histories = [synthetic_history(asset=key, display_name=name, category=category, calendar="crypto", days=args.days,
                                   seed=number, start_price=price)
                 for number, (key, name, category, price) in enumerate(ASSETS[:args.assets])]
    generated = time.perf_counter() - started

    largest = page_inputs(histories[0], histories[0].dates[-1].date())
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        html = render_page(largest)
        times.append(time.perf_counter() - t0)
    page_kb = len(html.encode()) / 1024

    with tempfile.TemporaryDirectory(prefix="nexus-dashboard-") as tmp:
        site = args.site or Path(tmp) / "site"
        slicing = build = build_cpu = 0.0
        renders = []
        t_site, c_site = time.perf_counter(), time.process_time()
        write_site_assets(site)
        build, build_cpu = time.perf_counter() - t_site, time.process_time() - c_site
        summaries = []
        for history in histories:
            days = []
            for day in history.dates[-args.pages:] if args.pages else history.dates:
                t0 = time.perf_counter()
                inputs = page_inputs(history, day.date())
                t1, c1 = time.perf_counter(), time.process_time()
                page = render_page(inputs)
                t2 = time.perf_counter()
                write_site_file(site, page_path(history.asset, inputs.date), page)
                days.append(summarise(inputs))
                t3, c3 = time.perf_counter(), time.process_time()
                slicing += t1 - t0
                build += t3 - t1
                build_cpu += c3 - c1
                renders.append(t2 - t1)
            summary = AssetSummary(history.asset, history.display_name, history.category, history.calendar,
                                   "fresh", f"fresh through {history.dates[-1].date()}", tuple(days))
            summaries.append(summary)
            t0, c0 = time.perf_counter(), time.process_time()
            write_site_file(site, history_path(history.asset), render_history(summary))
            build += time.perf_counter() - t0
            build_cpu += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        write_site_file(site, "index.html", render_index(summaries))
        build += time.perf_counter() - t0
        build_cpu += time.process_time() - c0
        wall = time.perf_counter() - t_site
        files = sum(len(files) for _, _, files in os.walk(site))
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(site) for f in fs) / 2**20

    pages = len(renders)
    print(f"synthetic histories: {len(histories)} assets x {args.days} days, generated in {generated:.1f} s")
    print(f"{'what':<68}{'seconds':>10}")
    print(f"{f'one page, render_page (largest day; median of {args.repeat})':<68}{statistics.median(times):>10.4f}")
    print(f"{f'one page, render_page (largest day; max of {args.repeat})':<68}{max(times):>10.4f}")
    print(f"{f'one page, render_page (median over all {pages} pages)':<68}{statistics.median(renders):>10.4f}")
    print(f"{f'site: {pages} pages + histories + index + plotly.js, render and write':<68}{build:>10.2f}")
    print(f"{'site: the same, CPU seconds of this process':<68}{build_cpu:>10.2f}")
    print(f"{'site: slicing the synthetic history into each day tables (not built)':<68}{slicing:>10.2f}")
    print(f"{'site: wall time of the loop (both of the above)':<68}{wall:>10.2f}")
    print(f"largest page {page_kb:.0f} KB; site {files} files, {size_mb:.0f} MB"
          + (f", kept at {site}" if args.site else ""))
    ok = statistics.median(times) <= 1.0 and build <= 60.0
    print("figures to reach (page <= 1 s, site <= 60 s):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
