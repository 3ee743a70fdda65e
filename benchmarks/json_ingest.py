"""Ingest a 1.2-million-row, ~200 MB JSON history from `nexus-assets qml-server`, measured.

Side by side, in one run, each in a fresh child process (peak RSS sampled over the process tree):
  1. the project's client, JSON route: the fast path (Arrow's JSON reader over blocks of the
     spooled body, what real upstream's bodies take);
  2. the same, the fast path turned off: the streaming parser (ijson into typed chunks), which
     reads every body the fast path cannot vouch for;
  3. the project's client, Parquet route;
  4. the naive way (``requests.get(...).json()`` then ``pd.DataFrame``), as the old fetch script did;
  5. an idle interpreter with the same imports (the floor).

    python benchmarks/json_ingest.py            # full size
    python benchmarks/json_ingest.py --days 60  # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, table  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY = "bench-key-not-secret"
PROJECT = 8101
START = dt.date(2025, 1, 1)

CLIENT = f"""
import datetime as dt, sys, time
from nexus_assets.qml import client
from nexus_assets.qml.client import QMLClient
if sys.argv[2] == "json-streaming":  # the fast path turned off, as for a body it cannot vouch for
    def _refuse(*args):
        raise client._NotFast
    client._fast_json_rows = _refuse
days = [dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(int(sys.argv[3]))]
t = time.perf_counter()
pull = QMLClient(sys.argv[1], "{KEY}", prefer_parquet=sys.argv[2] == "parquet").pull({PROJECT}, days)
print(f"rows={{len(pull.rows)}} parse_seconds={{time.perf_counter() - t:.1f}} "
      f"frame_mb={{pull.rows.memory_usage(deep=True).sum() / 1e6:.0f}}")
"""

NAIVE = f"""
import sys, time, requests, pandas as pd
t = time.perf_counter()
rows = requests.get(sys.argv[1] + "/get_qml_models/{PROJECT}", params={{"from_date": sys.argv[2], "to_date": sys.argv[3]}},
                    headers={{"qml-api-key": "{KEY}"}}, timeout=600).json()
frame = pd.DataFrame(rows)
frame["time"] = pd.to_datetime(frame["time"], format="%a, %d %b %Y %H:%M:%S GMT")
print(f"rows={{len(frame)}} parse_seconds={{time.perf_counter() - t:.1f}}")
"""

IDLE = "import pandas, requests, ijson, pyarrow.parquet, nexus_assets.qml.client; print('rows=0')"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=370)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()

    env = dict(os.environ, QML_API_KEY=KEY, PYTHONWARNINGS="ignore")
    server = subprocess.Popen(
        [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", str(args.port),
         "--catalog", str(HERE / "catalogs" / "bitcoin_scale.toml")],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{args.port}"
        print(server.stdout.readline().strip())
        end = START + dt.timedelta(days=args.days - 1)
        t = time.perf_counter()
        warm = requests.get(f"{url}/get_qml_models/{PROJECT}", params={"from_date": START, "to_date": end},
                            headers={"qml-api-key": KEY}, timeout=900)
        requests.get(f"{url}/get_qml_models/{PROJECT}", params={"from_date": START, "to_date": end, "format": "parquet"},
                     headers={"qml-api-key": KEY}, timeout=900)
        print(f"server: JSON payload {len(warm.content) / 1e6:.0f} MB, generated and cached in {time.perf_counter() - t:.1f}s")
        del warm
        results = [
            measure("client, JSON (fast path: Arrow over blocks)", [sys.executable, "-c", CLIENT, url, "json", str(args.days)], env),
            measure("client, JSON streaming parser (ijson chunks)",
                    [sys.executable, "-c", CLIENT, url, "json-streaming", str(args.days)], env),
            measure("client, Parquet", [sys.executable, "-c", CLIENT, url, "parquet", str(args.days)], env),
            measure("naive: response.json() + DataFrame", [sys.executable, "-c", NAIVE, url, str(START), str(end)], env),
            measure("idle interpreter with the same imports", [sys.executable, "-c", IDLE], env),
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    for m in results:
        if m.returncode != 0:
            print(m.stdout)
            return 1
        print(f"{m.label}: {m.stdout.strip().splitlines()[-1]}")
    print(table(results))
    streamed, naive, idle = results[0], results[3], results[4]
    print(f"JSON: streaming parser / fast path = {results[1].seconds / results[0].seconds:.1f}x wall; "
          f"peak RSS above idle {results[1].peak_rss_mb - idle.peak_rss_mb:.0f} MB (streaming) vs "
          f"{results[0].peak_rss_mb - idle.peak_rss_mb:.0f} MB (fast)")
    print(f"peak RSS above idle: streamed {streamed.peak_rss_mb - idle.peak_rss_mb:.0f} MB, "
          f"naive {naive.peak_rss_mb - idle.peak_rss_mb:.0f} MB "
          f"(naive / streamed = {(naive.peak_rss_mb - idle.peak_rss_mb) / max(1.0, streamed.peak_rss_mb - idle.peak_rss_mb):.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
