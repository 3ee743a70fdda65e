"""Generated pages in a real browser: headless Chromium (Debian's package) driven by Playwright.

The site is served from a loopback HTTP server (and once from ``file://``); every request is
checked to stay on it. Skipped when Playwright or Chromium is missing, except in CI (``CI=true``),
where that fails: install with ``apt-get install -y chromium`` and ``pip install -e '.[test]'``.
"""

import dataclasses
import datetime as dt
import os
import threading

import pytest

from nexus_assets.core.dashboard import (
    PANELS,
    AssetSummary,
    history_path,
    page_path,
    render_history,
    render_index,
    render_page,
    summarise,
)
from nexus_assets.core.dashboard.screenshots import find_chromium, launch
from nexus_assets.serving import site_server
from nexus_assets.site_files import write_site_assets, write_site_file
from nexus_assets_tests.core.dashboard.reference import COLLECT_JS, assert_page_shows, expected_values
from nexus_assets_tests.core.dashboard.tables import HOSTILE, HOSTILE_NAME, page_inputs

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

IN_CI = os.environ.get("CI", "").lower() == "true"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 900}
WATCH_CSP = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""
# Functions, not expression strings: Playwright polls a string with eval, which the pages' CSP forbids.
CHARTS_DRAWN = ("() => Array.from(document.querySelectorAll('[data-figure]')).every("
                "d => d.getAttribute('data-rendered') === 'true' || d.classList.contains('chart-missing'))")


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "Chromium is not installed (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _unavailable()
    if reason:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


HOSTILE_ASSET = "9999_HOSTILE"
SHALLOW_ASSET = "9002_SHALLOW"  # the last page with drawdowns of at most 1.85%: fine-grained ticks


@pytest.fixture(scope="module")
def site(tmp_path_factory, history, hostile_inputs, warmup_inputs):
    """Pages of the last three days, the weekend after them, a warm-up page, a hostile page, a page
    of shallow drawdowns; index, histories, plotly.js."""
    root = tmp_path_factory.mktemp("site")
    write_site_assets(root)
    pages = {}
    for day in history.dates[-3:]:
        pages[day.date()] = page_inputs(history, day.date())
    pages[warmup_inputs.date] = warmup_inputs
    last = pages[history.dates[-1].date()]
    saturday = last.date + dt.timedelta(days=(5 - last.date.weekday()) % 7 or 7)
    pages[saturday] = dataclasses.replace(  # as stored: nothing of the day, the history up to the last session
        last, date=saturday, previous_date=saturday - dt.timedelta(days=1), next_date=None,
        status=dataclasses.replace(last.status, day_status="no_session"),
        **{name: getattr(last, name).iloc[0:0] for name in ("signals", "slopes", "leaderboard", "ensembles")})
    summary = AssetSummary(history.asset, history.display_name, history.category, history.calendar, "fresh",
                           "fresh through the last day", tuple(summarise(p) for p in pages.values()))
    for inputs in pages.values():
        write_site_file(root, page_path(inputs.asset, inputs.date), render_page(inputs))
    hostile = dataclasses.replace(hostile_inputs, asset=HOSTILE_ASSET)
    write_site_file(root, page_path(HOSTILE_ASSET, hostile.date), render_page(hostile))
    hostile_summary = AssetSummary(HOSTILE_ASSET, HOSTILE_NAME, HOSTILE, HOSTILE, HOSTILE, HOSTILE, (summarise(hostile),))
    for asset in (summary, hostile_summary):
        write_site_file(root, history_path(asset.asset), render_history(asset))
    write_site_file(root, "index.html", render_index([summary, hostile_summary]))
    shallow = last.daily.assign(drawdown=last.daily.groupby("signal").cumcount() * -0.0185 / len(last.daily) * 2)
    write_site_file(root, page_path(SHALLOW_ASSET, last.date),
                    render_page(dataclasses.replace(last, asset=SHALLOW_ASSET, daily=shallow)))
    return root, pages, hostile


@pytest.fixture(scope="module")
def server(site):
    # the site's own server, so the pages load under its headers (CSP with frame-ancestors, nosniff)
    httpd = site_server(site[0], "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


class Visit:
    """One page load in a tab, with everything it logged, requested or tried to open."""

    def __init__(self, page, url, *, origin=None):
        self.page, self.context, self.origin = page, page.context, origin
        self.console, self.errors, self.dialogs, self.requests = [], [], [], []
        self.handlers = {
            "console": lambda m: self.console.append(f"{m.type}: {m.text}"),
            "pageerror": lambda e: self.errors.append(str(e)),
            "dialog": lambda d: (self.dialogs.append(d.message), d.dismiss()),
            "request": lambda r: self.requests.append(r.url),
        }
        for event, handler in self.handlers.items():
            page.on(event, handler)
        self.response = page.goto(url)
        page.wait_for_load_state("load")
        page.wait_for_function(CHARTS_DRAWN, timeout=30_000)

    def problems(self):
        """Console errors and warnings, script errors, CSP violations, dialogs, off-site requests."""
        out = [m for m in self.console if m.split(":")[0] in ("error", "warning", "assert")]
        out += [f"pageerror: {e}" for e in self.errors]
        out += [f"csp: {v}" for v in self.page.evaluate("window.__violations")]
        out += [f"dialog: {d}" for d in self.dialogs]
        if self.origin:
            out += [f"request off site: {u}" for u in self.requests if not u.startswith(self.origin + "/")]
        return out

    def close(self):
        for event, handler in self.handlers.items():
            self.page.remove_listener(event, handler)
        self.handlers = {}


@pytest.fixture(scope="module")
def tabs(browser):
    """One tab per (viewport, colour scheme), shared by the module's tests: a tab that navigates
    keeps plotly.js (4.7 MB) parsed and cached, which a fresh context would parse again (seconds
    on a slow machine). Every visit is a new navigation with its own logs."""
    made = {}

    def get(viewport, scheme):
        key = (viewport["width"], viewport["height"], scheme)
        if key not in made:
            context = browser.new_context(viewport=viewport, color_scheme=scheme)
            page = context.new_page()
            page.add_init_script(WATCH_CSP)
            made[key] = page
        return made[key]

    yield get
    for page in made.values():
        page.context.close()


@pytest.fixture
def visit(tabs):
    opened = []

    def open_page(url, *, viewport=LAPTOP, scheme="light", origin=None):
        page = tabs(viewport, scheme)
        for earlier in opened:
            if earlier.page is page:
                earlier.close()  # the tab moves on: stop recording for the earlier load
        page.emulate_media(color_scheme=scheme)  # a test may have switched it
        opened.append(Visit(page, url, origin=origin))
        return opened[-1]

    yield open_page
    for v in opened:
        v.close()


def last_day(site):
    return max(d for d in site[1] if site[1][d].signals.shape[0])


def test_page_loads_clean_and_draws_every_chart(site, server, visit):
    inputs = site[1][last_day(site)]
    v = visit(f"{server}/{page_path(inputs.asset, inputs.date)}", origin=server)
    assert v.response.status == 200
    assert v.problems() == []
    assert v.page.eval_on_selector_all("section[data-panel]", "s => s.map(e => e.dataset.panel)") == list(PANELS)
    charts = v.page.eval_on_selector_all(
        "[data-figure]", "ds => ds.map(d => [d.id, d.classList.contains('js-plotly-plot'),"
                         " d.querySelectorAll('svg.main-svg').length, d.getBoundingClientRect().height])")
    assert [c[0] for c in charts] == ["chart-forecast", "chart-price", "chart-equity", "chart-slopes"]
    assert all(plotted and svgs >= 1 and height > 200 for _, plotted, svgs, height in charts), charts
    assert v.page.locator(".js-plotly-plot .scatterlayer .trace").count() > 5
    assert v.page.locator(".js-plotly-plot .heatmaplayer image").count() == 1


def test_numbers_in_the_page_equal_the_stored_tables(site, server, visit):
    for day in (last_day(site), min(site[1])):
        inputs = site[1][day]
        v = visit(f"{server}/{page_path(inputs.asset, inputs.date)}")
        assert_page_shows(v.page.evaluate(COLLECT_JS), expected_values(inputs))


def test_charts_hold_the_stored_series(site, server, visit):
    inputs = site[1][last_day(site)]
    v = visit(f"{server}/{page_path(inputs.asset, inputs.date)}")
    equity = dict(v.page.evaluate("document.getElementById('chart-equity').data.map(t => [t.name, t.y])"))
    for signal in ("raw", "optimised"):
        daily = inputs.daily[inputs.daily["signal"] == signal].sort_values("date")
        assert equity[f"{signal} equity"] == daily["equity"].tolist()
        assert equity[f"{signal} drawdown"] == daily["drawdown"].tolist()
    fan = dict(v.page.evaluate("document.getElementById('chart-forecast').data.map(t => [t.name, t.y])"))
    rows = inputs.ensembles.sort_values("horizon")
    assert fan["ensemble forecast"][1:] == rows["forecast"].tolist()


def test_hostile_strings_are_shown_as_text(site, server, visit):
    hostile = site[2]
    v = visit(f"{server}/{page_path(HOSTILE_ASSET, hostile.date)}", origin=server)
    assert v.dialogs == [] and v.problems() == []
    assert v.page.evaluate("document.querySelectorAll('img, iframe, object, embed, h1 b').length") == 0
    handlers = v.page.evaluate(
        "Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)"
        ".filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name))")
    assert handlers == []
    assert v.page.evaluate("document.querySelectorAll('script').length") == 2 + 4  # plotly, bootstrap, 4 figures
    assert v.page.locator('[data-field="best_child"]').first.text_content() == HOSTILE
    assert v.page.locator('h1[data-field="display_name"]').text_content().startswith(HOSTILE_NAME)
    assert v.page.title().startswith(HOSTILE_NAME)
    assert v.page.locator('[data-statistic="<script>alert(3)</script>"] td').first.text_content() == "<script>alert(3)</script>"
    assert_page_shows(v.page.evaluate(COLLECT_JS), expected_values(hostile))


def test_a_weekend_page_says_so_and_links_the_last_session(site, server, visit):
    _, pages, _ = site
    saturday = max(pages)
    v = visit(f"{server}/{page_path(pages[saturday].asset, saturday)}", origin=server)
    assert v.problems() == []
    note = v.page.locator(".day-note")
    assert note.is_visible() and note.text_content().startswith(f"Saturday {saturday}: no trading session.")
    friday = last_day(site)
    link = v.page.locator('a[data-nav="last_data"]')
    assert link.text_content() == friday.isoformat()
    assert v.context.request.get(link.evaluate("a => a.href")).status == 200
    assert v.page.locator("#chart-forecast").count() == 0 and v.page.locator("#chart-equity").count() == 1
    index = visit(f"{server}/index.html")
    assert index.page.locator('[data-field="latest_date"]').first.text_content() == friday.isoformat()


def test_the_drawdown_axis_draws_each_label_once(server, site, visit):
    """Drawdowns within 2%: plotly's own ticks under a whole-percent format read 0%, -1%, -1%, -2%."""
    v = visit(f"{server}/{page_path(SHALLOW_ASSET, last_day(site))}")
    labels = v.page.eval_on_selector_all("#chart-equity .y2tick text", "ts => ts.map(t => t.textContent)")
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert {label.replace("\u2212", "-") for label in labels} == {"0.0%", "-0.5%", "-1.0%", "-1.5%"}


def test_hostile_names_on_index_and_history_are_text(server, visit):
    for path in ("index.html", history_path(HOSTILE_ASSET)):
        v = visit(f"{server}/{path}", origin=server)
        assert v.problems() == []
        assert v.page.evaluate("document.querySelectorAll('img, b, script').length") == 0
        assert HOSTILE_NAME in v.page.locator("body").text_content()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_width_has_no_horizontal_overflow(site, server, visit, scheme):
    inputs = site[1][last_day(site)]
    for path in (page_path(inputs.asset, inputs.date), page_path(HOSTILE_ASSET, site[2].date), "index.html",
                 history_path(inputs.asset), page_path(inputs.asset, max(site[1]))):
        v = visit(f"{server}/{path}", viewport=PHONE, scheme=scheme)
        width = v.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] == PHONE["width"], (path, width)
        assert v.problems() == []


def _luminance(css_colour):
    r, g, b = (int(x) for x in css_colour[css_colour.index("(") + 1:css_colour.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.parametrize("scheme, dark", [("light", False), ("dark", True)])
def test_light_and_dark(site, server, visit, scheme, dark):
    inputs = site[1][last_day(site)]
    v = visit(f"{server}/{page_path(inputs.asset, inputs.date)}", scheme=scheme)
    body = _luminance(v.page.evaluate("getComputedStyle(document.body).backgroundColor"))
    text = _luminance(v.page.evaluate("getComputedStyle(document.body).color"))
    assert (body < 0.2 and text > 0.8) if dark else (body > 0.9 and text < 0.2)
    themes = v.page.eval_on_selector_all("[data-figure]", "ds => ds.map(d => [d.dataset.theme, d.layout.font.color])")
    assert themes and all(t == [scheme, "#e2e6ee" if dark else "#1f2430"] for t in themes)
    tick = v.page.locator("#chart-equity .xtick text").first
    fill = tick.evaluate("t => getComputedStyle(t).fill")
    assert (_luminance(fill) > 0.7) if dark else (_luminance(fill) < 0.3)


def test_the_theme_follows_the_system_when_it_changes(site, server, visit):
    inputs = site[1][last_day(site)]
    v = visit(f"{server}/{page_path(inputs.asset, inputs.date)}", scheme="light")
    v.page.emulate_media(color_scheme="dark")
    v.page.wait_for_function("() => document.getElementById('chart-price').dataset.theme === 'dark'")
    assert v.page.evaluate("document.getElementById('chart-price').layout.font.color") == "#e2e6ee"
    assert v.problems() == []


def test_pages_work_from_file_urls_offline(site, visit):
    root, pages, _ = site
    inputs = pages[last_day(site)]
    v = visit((root / page_path(inputs.asset, inputs.date)).as_uri())
    assert v.problems() == []
    assert v.page.locator("[data-rendered=true]").count() == 4
    assert all(u.startswith("file://") for u in v.requests)


def test_navigation_links_lead_to_pages(site, server, visit):
    _, pages, _ = site
    middle = sorted(d for d in pages if pages[d].signals.shape[0])[-2]
    v = visit(f"{server}/{page_path(pages[middle].asset, middle)}")
    hrefs = v.page.eval_on_selector_all("nav a[data-nav]", "as => as.map(a => [a.dataset.nav, a.href])")
    assert [name for name, _ in hrefs] == ["prev", "history", "index", "next"]
    for name, href in hrefs:
        assert v.context.request.get(href).status == 200, (name, href)
    index = visit(f"{server}/index.html", origin=server)
    assert index.problems() == []
    for href in index.page.eval_on_selector_all("a[data-nav]", "as => as.map(a => a.href)"):
        assert index.context.request.get(href).status == 200, href
    history = visit(f"{server}/{history_path(pages[middle].asset)}", origin=server)
    days = history.page.eval_on_selector_all("a[data-date]", "as => as.map(a => a.href)")
    assert len(days) == len(pages) and all(history.context.request.get(h).status == 200 for h in days)


def test_a_page_without_the_site_assets_says_what_is_missing(tmp_path, site, visit):
    inputs = site[1][last_day(site)]
    write_site_file(tmp_path, page_path(inputs.asset, inputs.date), render_page(inputs))
    v = visit((tmp_path / page_path(inputs.asset, inputs.date)).as_uri())
    assert v.page.locator(".chart-missing").count() == 4
    assert "shared plotly.js" in v.page.locator("#chart-price").text_content()
    assert [p for p in v.problems() if "ERR_FILE_NOT_FOUND" not in p] == []
