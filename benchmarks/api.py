"""The serving API under load on loopback: latency (p50, p99) and throughput, cold and warm.

Starts ``nexus-assets api`` (uvicorn, one process, access log off) on a free port of 127.0.0.1
over an already materialised data directory, with a throw-away instance folder and a key whose
rate limit is out of the way, then drives it from this process with N concurrent HTTP/1.1
keep-alive clients (asyncio streams: a client costs far less CPU than the server it measures).
Bounded: every phase stops at its request count or its time limit, whichever comes first.

Phases, all against the same server in one run:
  1. ``signal/<asset>?as_of=D``, each of the asset's dates once: **cold** (files and answers not
     yet cached), N concurrent clients;
  2. the same requests again, repeated: **warm**, N concurrent clients;
  3. ``health``, the same way (the floor: no key, no data);
  4. ``signals/<asset>?as_of=<last day>`` (the whole history, a year of partitions): one client,
     cold (a fresh server) and warm.
Beside latency, each phase reports the server's CPU time per request (from its process's CPU
counters): on a busy shared machine latency mostly measures waiting for a core, while the CPU time
says what a request costs (1000 / that = requests a second one free core would serve).
Targets (issue 12): signal p99 < 20 ms warm with 16 clients and >= 500 requests/s; signals for a
whole year < 100 ms.

    nexus-assets demo --start 2018-01-01 --end 2018-12-31     # one asset-year is enough
    NEXUS_DATA_DIR=./data python benchmarks/api.py [--asset 9001_SP500] [--clients 16] [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "nexus_assets.cli"]


def _start(env: dict, cwd: str) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen(CLI + ["api", "--port", "0", "--no-access-log"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    line = server.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:([0-9]+)/", line)
    if not match:
        server.kill()
        raise SystemExit(f"the server did not start: {line}{server.stderr.read()}")
    return server, int(match.group(1))


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


async def _client(port: int, key: str, paths: list[str], latencies: list[float], statuses: dict, deadline: float):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while paths and time.perf_counter() < deadline:
            path = paths.pop()
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length: *([0-9]+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _cpu(pid: int) -> float:
    """The server process's CPU seconds so far (user + system)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _load(port: int, key: str, paths: list[str], clients: int, seconds: float, pid: int) -> dict:
    cpu_before = _cpu(pid)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(paths))

    async def run() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_client(port, key, queue, latencies, statuses, deadline) for _ in range(clients)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    ordered = sorted(latencies)
    pick = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000) if ordered else (lambda q: float("nan"))
    cpu_ms = (_cpu(pid) - cpu_before) * 1000 / max(1, len(latencies))
    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed if elapsed else 0.0,
            "cpu_ms": cpu_ms,
            "p50": pick(0.50), "p99": pick(0.99), "max": pick(1.0), "statuses": statuses}


def _line(name: str, result: dict) -> str:
    return (f"{name:<34} {result['requests']:>6} req in {result['seconds']:6.2f} s  {result['rps']:7.0f} req/s  "
            f"p50 {result['p50']:7.2f} ms  p99 {result['p99']:7.2f} ms  max {result['max']:7.2f} ms  "
            f"server CPU {result['cpu_ms']:5.2f} ms/req  {result['statuses']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asset", default="9001_SP500", help="the catalog asset to query (default 9001_SP500)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients (default 16)")
    parser.add_argument("--requests", type=int, default=4000, help="requests per warm phase (default 4000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per phase (default 20 s)")
    args = parser.parse_args()
    data_dir = os.environ.get("NEXUS_DATA_DIR") or "data"
    folder = Path(data_dir) / "signals" / "signals" / f"asset={args.asset}"
    # the days with a signal (the ensemble's warm-up days have none: a 404 measures nothing)
    days = sorted(p.name[5:15] for p in folder.glob("date=*.parquet") if pq.ParquetFile(p).metadata.num_rows)
    if not days:
        raise SystemExit(f"no signals partitions under {folder}: materialise first (nexus-assets demo)")
    print(f"uptime    {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"data      {data_dir}: {args.asset}, {len(days)} days with a signal ({days[0]} .. {days[-1]}); {args.clients} clients")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DAGSTER_HOME": home, "PYTHONWARNINGS": "ignore"}
        key = subprocess.run(CLI + ["keys", "create", "--name", "bench", "--all", "--rate", "100000000/minute"],
                             capture_output=True, text=True, env=env, cwd=home, check=True).stdout.strip()
        # signals/<asset> with as_of = the last day: a year of partitions, one client, cold then warm
        server, port = _start(env, home)
        try:
            year = f"/api/v1/signals/{args.asset}?as_of={days[-1]}&limit=10000"
            cold_year = _load(port, key, [year], 1, args.seconds, server.pid)
            warm_year = _load(port, key, [year] * 50, 1, args.seconds, server.pid)
        finally:
            _stop(server)
        server, port = _start(env, home)  # a fresh server: nothing cached
        try:
            one_day = [f"/api/v1/signal/{args.asset}?as_of={d}" for d in days]
            cold = _load(port, key, list(one_day), args.clients, args.seconds, server.pid)
            warm_paths = (one_day * (args.requests // len(one_day) + 1))[: args.requests]
            _load(port, key, list(one_day), args.clients, args.seconds, server.pid)  # every answer cached once more
            warm = _load(port, key, warm_paths, args.clients, args.seconds, server.pid)
            health = _load(port, key, ["/api/v1/health"] * args.requests, args.clients, args.seconds, server.pid)
        finally:
            _stop(server)
    print(_line(f"signal?as_of cold ({args.clients} clients)", cold))
    print(_line(f"signal?as_of warm ({args.clients} clients)", warm))
    print(_line(f"health ({args.clients} clients)", health))
    print(_line("signals year cold (1 client)", cold_year))
    print(_line("signals year warm (1 client)", warm_year))
    print(f"uptime    {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"targets   signal warm p99 < 20 ms: {'met' if warm['p99'] < 20 else 'NOT met'}; >= 500 req/s: "
          f"{'met' if warm['rps'] >= 500 else 'NOT met'}; signals year < 100 ms warm: "
          f"{'met' if warm_year['p50'] < 100 else 'NOT met'} (cold {cold_year['p50']:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
