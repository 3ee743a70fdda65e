"""The dashboard: static HTML pages rendered from the stored tables (pure; no Dagster).

``render_page`` turns one asset's tables as of one date into one self-contained page, and
``render_index`` and ``render_history`` build the site's index and each asset's calendar, all as
text; :mod:`nexus_assets.site_files` writes them. Layout of a site:
:mod:`nexus_assets.core.dashboard.site`; what a page shows and how numbers are rounded:
:mod:`.page` and :mod:`.formatting`; the security rules: :mod:`.markup`.
"""

from __future__ import annotations

from nexus_assets.core.dashboard.index import render_history, render_index, summarise
from nexus_assets.core.dashboard.inputs import (
    REQUIRED_COLUMNS,
    AssetSummary,
    DataStatus,
    DaySummary,
    InputError,
    PageInputs,
    data_status,
    summary_json,
)
from nexus_assets.core.dashboard.page import PANELS, render_page
from nexus_assets.core.dashboard.site import (
    INDEX,
    history_path,
    page_path,
    plotly_js_path,
)

__all__ = [
    "PageInputs",
    "DataStatus",
    "data_status",
    "DaySummary",
    "AssetSummary",
    "InputError",
    "REQUIRED_COLUMNS",
    "PANELS",
    "render_page",
    "render_index",
    "render_history",
    "summarise",
    "summary_json",
    "page_path",
    "history_path",
    "plotly_js_path",
    "INDEX",
]
