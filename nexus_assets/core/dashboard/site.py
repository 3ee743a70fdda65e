"""The site's layout: where each file goes, and the bytes of its shared plotly.js.

::

    <site>/index.html                              every asset's latest page (render_index)
    <site>/assets/plotly-<version>.min.js          one shared copy of plotly.js (plotly_js_bytes)
    <site>/asset=<asset>/index.html                the asset's history, a calendar (render_history)
    <site>/asset=<asset>/date=<YYYY-MM-DD>.html    one page per asset and date (render_page)

Pages link each other and plotly.js by relative URLs, so a site works from any folder, from
``file://`` and behind any static server, without network. The files are written, atomically, by
:mod:`nexus_assets.site_files` (this module only says where they go and what they hold).
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources
from urllib.parse import quote

__all__ = [
    "INDEX",
    "page_path",
    "history_path",
    "plotly_js_path",
    "plotly_js_version",
    "plotly_js_bytes",
    "url",
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


def plotly_js_bytes() -> bytes:
    """The shared plotly.js: the copy bundled with the installed plotly package."""
    bundled = resources.files("plotly").joinpath("package_data/plotly.min.js")
    if bundled.is_file():
        return bundled.read_bytes()
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")
