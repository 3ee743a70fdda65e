"""The site's layout: its paths and the bytes of its one shared plotly.js (written by
nexus_assets.site_files, tested in nexus_assets_tests/test_site_files.py)."""

import datetime as dt
from importlib import resources

from nexus_assets.core.dashboard import history_path, page_path, plotly_js_path
from nexus_assets.core.dashboard.site import plotly_js_bytes, plotly_js_version, url


def test_paths():
    assert page_path("9001_SP500", dt.date(2018, 3, 2)) == "asset=9001_SP500/date=2018-03-02.html"
    assert history_path("9001_SP500") == "asset=9001_SP500/index.html"
    assert plotly_js_path() == f"assets/plotly-{plotly_js_version()}.min.js"
    assert url("asset=<x y>/date=1.html") == "asset=%3Cx%20y%3E/date=1.html"


def test_plotly_js_is_the_installed_packages_copy():
    bundled = resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()
    assert plotly_js_bytes() == bundled
    assert f"plotly.js v{plotly_js_version()}".encode() in bundled[:200]
