"""Atomic file writes, for the Parquet store and the dashboard site alike.

A local file is written under a hidden temporary name in the same folder (fsync'd) and renamed
over the target, so readers see the old file or the new one, never a part; an object store
(``s3://`` and other fsspec roots) gets a single PUT, which is atomic there. A writer killed
mid-write leaves only its hidden temporary file, which the next write of that file removes (at
once when the temp's writer process is gone, else after an hour).
"""

from __future__ import annotations

import glob
import hashlib
import os
import socket
import time
import uuid

from upath import UPath

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: UPath, data: bytes) -> int:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    if path.protocol in ("", "file", "local"):
        local = os.fspath(path.path if hasattr(path, "path") else path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        _remove_stale_temps(local)
        temp = os.path.join(os.path.dirname(local), f"{_temp_prefix(local)}{os.getpid()}-{_HOST}-{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, local)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return len(data)


_STALE_TEMP_SECONDS = 3600
# Temp names carry the writer's pid and host, so a temp whose writer is gone can go at once.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(local: str) -> str:
    return f".{os.path.basename(local)}."


def _writer_gone(temp: str, prefix: str) -> bool:
    """Whether ``temp`` was written by a process of this host that no longer exists."""
    pid, _, rest = os.path.basename(temp)[len(prefix) :].partition("-")
    host = rest.partition("-")[0]
    if host != _HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def _remove_stale_temps(local: str) -> None:
    """Remove hidden temp files of ``local`` left by killed writers: those whose writer process is
    gone, and any an hour old (a writer on another host is never that slow)."""
    prefix = _temp_prefix(local)
    for temp in glob.glob(os.path.join(glob.escape(os.path.dirname(local)), f"{glob.escape(prefix)}*.tmp")):
        try:
            if _writer_gone(temp, prefix) or time.time() - os.path.getmtime(temp) > _STALE_TEMP_SECONDS:
                os.remove(temp)
        except FileNotFoundError:
            pass


