"""The site's layout on disk, its shared plotly.js, and atomic writes of its files.

::

    <site>/index.html                              every asset's latest page (render_index)
    <site>/assets/plotly-<version>.min.js          one shared copy of plotly.js (write_site_assets)
    <site>/asset=<asset>/index.html                the asset's history, a calendar (render_history)
    <site>/asset=<asset>/date=<YYYY-MM-DD>.html    one page per asset and date (render_page)

Pages link each other and plotly.js by relative URLs, so a site works from any folder, from
``file://`` and behind any static server, without network. ``<site>`` is a local path or an fsspec
URL (``s3://bucket/nexus/dashboard``): a local file is written under a hidden temporary name in its
folder and renamed over the target (readers see the old file or the new one); an object store
gets a single PUT (both by :func:`nexus_assets.atomic.write_bytes_atomic`, as the Parquet store).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from importlib import resources
from urllib.parse import quote

from upath import UPath

from nexus_assets.atomic import write_bytes_atomic

__all__ = [
    "INDEX",
    "page_path",
    "history_path",
    "plotly_js_path",
    "plotly_js_version",
    "write_site_file",
    "write_site_assets",
]

INDEX = "index.html"


def page_path(asset: str, date: dt.date) -> str:
    """The page of ``asset`` on ``date``, relative to the site root."""
    return f"asset={asset}/date={date.isoformat()}.html"


def history_path(asset: str) -> str:
    """The history (calendar) page of ``asset``, relative to the site root."""
    return f"asset={asset}/{INDEX}"


@functools.cache
def plotly_js_version() -> str:
    """The version of the plotly.js bundled with the installed plotly package."""
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def plotly_js_path() -> str:
    """The shared plotly.js, relative to the site root."""
    return f"assets/plotly-{plotly_js_version()}.min.js"


def url(relative: str) -> str:
    """A relative path as a URL path (each segment percent-encoded; ``=`` kept for readability)."""
    return quote(relative, safe="/=")


def _plotly_js_bytes() -> bytes:
    bundled = resources.files("plotly").joinpath("package_data/plotly.min.js")
    if bundled.is_file():
        return bundled.read_bytes()
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def write_site_file(site_root: str | os.PathLike[str] | UPath, relative: str, data: bytes | str,
                    *, skip_unchanged: bool = False) -> UPath:
    """Write ``data`` to ``<site_root>/<relative>`` atomically; return the path written.

    With ``skip_unchanged`` an existing file with exactly these bytes is left alone (no write, no
    new modification time).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    target = UPath(site_root).joinpath(*relative.split("/"))
    if skip_unchanged and _same_bytes(target, payload):
        return target
    write_bytes_atomic(target, payload)
    return target


def _same_bytes(target: UPath, payload: bytes) -> bool:
    try:
        return target.stat().st_size == len(payload) and target.read_bytes() == payload
    except FileNotFoundError:
        return False


def write_site_assets(site_root: str | os.PathLike[str] | UPath) -> UPath:
    """Put the shared plotly.js into the site (idempotent: an identical copy is not rewritten)."""
    return write_site_file(site_root, plotly_js_path(), _plotly_js_bytes(), skip_unchanged=True)
