"""Threads for independent pieces of work that release the GIL (numpy, Arrow, Parquet, file IO).

Results always come back in input order, so outputs never depend on the thread count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["usable_cores", "worker_threads", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_threads() -> int:
    """``NEXUS_THREADS``, else the usable cores (at most 8)."""
    configured = os.environ.get("NEXUS_THREADS", "").strip()
    if configured:
        return max(1, int(configured))
    return max(1, min(8, usable_cores()))


def ordered_map(function: Callable[[T], R], items: Iterable[T], *, threads: int | None = None) -> list[R]:
    """``[function(x) for x in items]``, spread over threads; the first exception is raised."""
    items = list(items)
    workers = min(threads or worker_threads(), len(items))
    if workers <= 1:
        return [function(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))
