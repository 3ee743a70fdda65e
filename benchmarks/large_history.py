"""Ingest a 5-million-row QML history from `nexus-assets qml-server`, measured.

The project (benchmarks/catalogs/large_history.toml) has 5 horizons x 1000 child models x 1004
days, about 5.01 million rows, about 0.9 GB as JSON. The servers run in their own processes; each
measured pull runs in a fresh child process (wall time, and peak RSS sampled over its process tree):

  1. the client, JSON route, the whole history (streamed with ijson into typed chunks);
  2. the client, Parquet route, the whole history;
  3. the client, JSON route, ONE day from a server that ignores from_date/to_date and sends the
     whole history anyway, as today's quantum_ml endpoint does (qml-server --faults, ignore_range):
     memory must not grow with the history;
  4. an idle interpreter with the same imports (the floor);
  5. with --dagster: `dagster asset materialize --select qml_models` over the whole history through
     the api source (the asset: pull, contract check, one Parquet file per day, Dagster's events).

    python benchmarks/large_history.py                      # 1 to 4 (about 6 minutes)
    python benchmarks/large_history.py --dagster            # and 5
    python benchmarks/large_history.py --chunk-rows 50000,100000,200000   # JSON chunk sizes to compare
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # this checkout's nexus_assets, whatever is installed
from _measure import measure, table  # noqa: E402

CATALOG = HERE / "catalogs" / "large_history.toml"
KEY = "bench-key-not-secret"
PROJECT = 8201
ASSET = "8201_Synth_Large"
START, END = dt.date(2023, 1, 1), dt.date(2025, 9, 30)

CLIENT = f"""
import datetime as dt, sys, time
import nexus_assets.qml.client as client
client._JSON_CHUNK_ROWS = int(sys.argv[5])
first, last = dt.date.fromisoformat(sys.argv[3]), dt.date.fromisoformat(sys.argv[4])
days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
t = time.perf_counter()
pull = client.QMLClient(sys.argv[1], "{KEY}", prefer_parquet=sys.argv[2] == "parquet", read_timeout=1800).pull({PROJECT}, days)
print(f"rows={{len(pull.rows)}} days={{len(days)}} seconds={{time.perf_counter() - t:.1f}} "
      f"frame_mb={{pull.rows.memory_usage(deep=True).sum() / 1e6:.0f}} watermark={{pull.watermark.date()}}")
"""

IDLE = "import pandas, requests, ijson, pyarrow.parquet, nexus_assets.qml.client; print('rows=0')"


def _server(port: int, env: dict[str, str], faults: Path | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", str(port), "--catalog", str(CATALOG)]
    if faults is not None:
        argv += ["--faults", str(faults)]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    print(server.stdout.readline().strip(), flush=True)
    return server


def _warm(url: str, params: dict[str, str]) -> tuple[float, float]:
    """Ask once so the server builds and caches the payload; (MB, seconds)."""
    started = time.perf_counter()
    response = requests.get(f"{url}/get_qml_models/{PROJECT}", params=params, headers={"qml-api-key": KEY}, timeout=3600)
    response.raise_for_status()
    return len(response.content) / 1e6, time.perf_counter() - started


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8811)
    parser.add_argument("--chunk-rows", default=None, help="client JSON chunk size(s), comma-separated (default: the client's)")
    parser.add_argument("--dagster", action="store_true", help="also materialise qml_models over the whole history")
    args = parser.parse_args()
    from nexus_assets.qml import client

    chunks = [int(c) for c in args.chunk_rows.split(",")] if args.chunk_rows else [client._JSON_CHUNK_ROWS]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QML_", "NEXUS_", "DAGSTER_HOME"))}
    env.update(QML_API_KEY=KEY, PYTHONWARNINGS="ignore", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    span = {"from_date": START.isoformat(), "to_date": END.isoformat()}
    results, notes = [], []
    with tempfile.TemporaryDirectory(prefix="nexus-large-") as tmp:
        faults = Path(tmp) / "faults.json"
        faults.write_text(json.dumps([{"kind": "ignore_range"}] * (1 + len(chunks))))  # one to warm the cache, one per pull
        server = _server(args.port, env)
        today = _server(args.port + 1, env, faults)
        try:
            url, today_url = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.port + 1}"
            for label, target, params in [
                ("JSON, whole history", url, span),
                ("Parquet, whole history", url, {**span, "format": "parquet"}),
                ("JSON, whole history for a one-day request (ignore_range)", today_url,
                 {"from_date": "2025-09-30", "to_date": "2025-09-30"}),
            ]:
                size, seconds = _warm(target, params)
                notes.append(f"server: {label}: {size:,.0f} MB built and cached in {seconds:.0f}s")
                print(notes[-1], flush=True)
            day = END.isoformat()
            results += [
                measure(f"client JSON, whole history, {rows:,}-row chunks",
                        [sys.executable, "-c", CLIENT, url, "json", START.isoformat(), day, str(rows)], env)
                for rows in chunks
            ]
            results += [
                measure("client Parquet, whole history",
                        [sys.executable, "-c", CLIENT, url, "parquet", START.isoformat(), day, str(chunks[0])], env),
                measure("idle interpreter with the same imports", [sys.executable, "-c", IDLE], env),
            ]
            results += [
                measure(f"client JSON, 1 day of a whole-history body, {rows:,}-row chunks",
                        [sys.executable, "-c", CLIENT, today_url, "json", day, day, str(rows)], env)
                for rows in chunks
            ]
            if args.dagster:
                home = Path(tmp) / "home"
                home.mkdir()
                shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
                api_catalog = Path(tmp) / "api.toml"
                api_catalog.write_text(
                    f'[[assets]]\nkey = "{ASSET}"\nproject_id = {PROJECT}\nname = "Synth_Large"\ndisplay_name = "Large"\n'
                    f'category = "Crypto"\ncalendar = "crypto"\nstart_date = {START}\nend_date = {END}\nsource = "api"\n'
                )
                dagster_env = dict(env, DAGSTER_HOME=str(home), QML_API_BASE_URL=url, NEXUS_CATALOG=str(api_catalog),
                                   NEXUS_DATA_DIR=str(Path(tmp) / "data"))
                results.append(measure(
                    "Dagster: materialize qml_models (Parquet route), whole history",
                    [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "nexus_assets.definitions",
                     "--select", "qml_models", "--partition-range", f"{ASSET}|{START}...{ASSET}|{END}"],
                    dagster_env, str(REPO),
                ))
                files = list((Path(tmp) / "data" / "qml_models").glob("asset=*/date=*.parquet"))
                notes.append(f"Dagster run wrote {len(files)} qml_models files, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB")
        finally:
            _stop(server)
            _stop(today)
    for m in results:
        if m.returncode != 0:
            print(m.stdout[-4000:])
            return 1
        if m.stdout.strip():
            print(f"{m.label}: {m.stdout.strip().splitlines()[-1][:200]}")
    print("\n".join(notes))
    print(table(results))
    idle = next(m for m in results if m.label.startswith("idle"))
    for m in results:
        if m is not idle:
            print(f"  {m.label}: {m.peak_rss_mb - idle.peak_rss_mb:,.0f} MB above idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
