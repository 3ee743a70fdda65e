"""Writing the dashboard site's files (its layout is :mod:`nexus_assets.core.dashboard.site`).

``<site>`` is a local path or an fsspec URL (``s3://bucket/nexus/dashboard``): a local file is
written under a hidden temporary name in its folder and renamed over the target (readers see the
old file or the new one); an object store gets a single PUT (both by
:func:`nexus_assets.atomic.write_bytes_atomic`, as the Parquet store). Many files at once
(:func:`write_site_files`, a run's pages) are staged together and made durable with one sync
(:func:`nexus_assets.atomic.write_many_atomic`), not one ``fsync`` and one folder listing per file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from upath import UPath

from nexus_assets.atomic import write_bytes_atomic, write_many_atomic
from nexus_assets.core.dashboard.site import plotly_js_bytes, plotly_js_path

__all__ = ["write_site_file", "write_site_files", "write_site_assets"]


def write_site_file(site_root: str | os.PathLike[str] | UPath, relative: str, data: bytes | str,
                    *, skip_unchanged: bool = False) -> UPath:
    """Write ``data`` to ``<site_root>/<relative>`` atomically; return the path written.

    With ``skip_unchanged`` an existing file with exactly these bytes is left alone (no write, no
    new modification time).
    """
    payload = _bytes(data)
    target = _target(site_root, relative)
    if skip_unchanged and _same_bytes(target, payload):
        return target
    write_bytes_atomic(target, payload)
    return target


def write_site_files(site_root: str | os.PathLike[str] | UPath,
                     files: Iterable[tuple[str, bytes | str]]) -> list[UPath]:
    """Write each ``(relative, data)`` of ``files`` under ``site_root``, each atomically as
    :func:`write_site_file` does, all made durable by one sync; return the paths, in order."""
    items = [(_target(site_root, relative), _bytes(data)) for relative, data in files]
    write_many_atomic(items)
    return [path for path, _ in items]


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _target(site_root: str | os.PathLike[str] | UPath, relative: str) -> UPath:
    return UPath(site_root).joinpath(*relative.split("/"))


def _same_bytes(target: UPath, payload: bytes) -> bool:
    try:
        return target.stat().st_size == len(payload) and target.read_bytes() == payload
    except FileNotFoundError:
        return False


def write_site_assets(site_root: str | os.PathLike[str] | UPath) -> UPath:
    """Put the shared plotly.js into the site (idempotent: an identical copy is not rewritten)."""
    return write_site_file(site_root, plotly_js_path(), plotly_js_bytes(), skip_unchanged=True)
