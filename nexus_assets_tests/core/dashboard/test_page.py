"""render_page without a browser: panels, numbers against the stored tables, escaping, CSP, determinism."""

import base64
import dataclasses
import datetime as dt
import hashlib
import re
import time
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.dashboard import PANELS, InputError, page_path, plotly_js_path, render_page
from nexus_assets.core.dashboard.markup import BOOTSTRAP_JS
from nexus_assets_tests.core.dashboard.reference import assert_page_shows, expected_values, html_values
from nexus_assets_tests.core.dashboard.tables import HOSTILE, HOSTILE_NAME, page_inputs


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []  # (tag, attrs)
        self.scripts = []  # (attrs, text)
        self._in_script = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = (dict(attrs), [])

    def handle_data(self, data):
        if self._in_script is not None:
            self._in_script[1].append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script[0], "".join(self._in_script[1])))
            self._in_script = None


def parse(html):
    tags = _Tags()
    tags.feed(html)
    tags.close()
    return tags


def test_every_panel_is_a_section_with_a_stable_id(inputs):
    tags = parse(render_page(inputs))
    sections = [a for t, a in tags.tags if t == "section"]
    assert [a["data-panel"] for a in sections] == list(PANELS)
    assert [a["id"] for a in sections] == [f"panel-{name}" for name in PANELS]


@pytest.mark.parametrize("day_index", [2, 65, 110, 125, -1])
def test_every_number_equals_the_stored_tables(history, day_index):
    """From the warm-up (no forecasts) through the search's first days to the last day."""
    inputs = page_inputs(history, history.dates[day_index].date())
    assert_page_shows(html_values(render_page(inputs)), expected_values(inputs))


def test_the_comparison_fails_when_a_stored_value_differs(inputs):
    html = render_page(inputs)
    statistics = inputs.statistics.copy()
    statistics.loc[statistics["statistic"] == "sharpe", "value"] += 1e-12
    changed = dataclasses.replace(inputs, statistics=statistics)
    with pytest.raises(AssertionError, match="sharpe"):
        assert_page_shows(html_values(html), expected_values(changed))


def test_rows_of_other_dates_are_ignored(history, inputs):
    """The caller may pass wider tables than the day's partition: the page is the same."""
    other = page_inputs(history, history.dates[-2].date())
    wider = dataclasses.replace(
        inputs,
        signals=pd.concat([other.signals, inputs.signals], ignore_index=True),
        slopes=pd.concat([inputs.slopes, other.slopes], ignore_index=True),
        statistics=pd.concat([other.statistics.assign(value=0.0), inputs.statistics], ignore_index=True),
        leaderboard=pd.concat([other.leaderboard.assign(objective=-9.0), inputs.leaderboard], ignore_index=True),
        ensembles=pd.concat([other.ensembles, inputs.ensembles], ignore_index=True),
    )
    assert render_page(wider) == render_page(inputs)


def test_same_inputs_give_byte_identical_pages_whatever_the_row_order(inputs):
    first = render_page(inputs)
    assert render_page(inputs) == first
    rng = np.random.default_rng(3)

    def shuffled(frame):
        return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)

    reordered = dataclasses.replace(
        inputs, slopes=shuffled(inputs.slopes), trades=shuffled(inputs.trades), daily=shuffled(inputs.daily),
        leaderboard=shuffled(inputs.leaderboard), ensembles=shuffled(inputs.ensembles),
        ensemble_window=shuffled(inputs.ensemble_window), signals=shuffled(inputs.signals),
    )
    assert render_page(reordered) == first


def test_hostile_strings_are_text_never_markup(hostile_inputs):
    html = render_page(hostile_inputs)
    tags = parse(html)
    assert HOSTILE not in html and HOSTILE_NAME not in html
    assert not [t for t, _ in tags.tags if t in ("img", "b", "iframe", "object", "embed")]
    assert not [(t, name) for t, attrs in tags.tags for name in attrs if name.startswith("on")]
    # the only scripts: the shared plotly.js, the JSON data blocks and the hashed bootstrap
    for attrs, body in tags.scripts:
        if "src" in attrs:
            assert attrs["src"] == "../" + plotly_js_path() and not body
        elif attrs.get("type") == "application/json":
            assert "<" not in body and ">" not in body and "&" not in body
        else:
            assert body == BOOTSTRAP_JS
    # shown as text where it belongs (the parser unescapes entities)
    values = html_values(html)
    assert any(v["field"] == "best_child" and v["text"] == HOSTILE for v in values)
    title = re.search(r"<title>(.*)</title>", html).group(1)
    assert title.startswith("&quot;&gt;&lt;script&gt;")
    assert_page_shows(values, expected_values(hostile_inputs))


def test_hostile_strings_in_figures_are_escaped_for_plotly(hostile_inputs):
    """plotly renders a subset of HTML in labels: upstream strings enter figures escaped."""
    import json

    html = render_page(hostile_inputs)
    blocks = re.findall(r'<script type="application/json" id="figure-forecast">(.*?)</script>', html)
    figure = json.loads(blocks[0])
    labels = json.dumps(figure)
    assert "&lt;img src=x onerror=alert(1)&gt;" in labels and HOSTILE not in labels


def test_content_security_policy_allows_only_the_bootstrap_and_the_site(inputs):
    html = render_page(inputs)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1).replace("&#x27;", "'")
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    digest = base64.b64encode(hashlib.sha256(BOOTSTRAP_JS.encode()).digest()).decode()
    assert directives["script-src"] == f"'self' 'sha256-{digest}'"
    assert directives["default-src"] == "'none'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe-eval" not in policy and "http" not in policy and "*" not in policy
    inline = [body for attrs, body in parse(html).scripts if "src" not in attrs and attrs.get("type") != "application/json"]
    assert inline == [BOOTSTRAP_JS]


def test_no_external_origin_and_relative_links(history):
    inputs = page_inputs(history, history.dates[-5].date())
    html = render_page(inputs)
    tags = parse(html)
    urls = [attrs.get("href") or attrs.get("src") for t, attrs in tags.tags if attrs.get("href") or attrs.get("src")]
    assert urls and all("//" not in url and not url.startswith("/") for url in urls)
    assert "http://" not in html and "https://" not in html
    nav = {attrs["data-nav"]: attrs["href"] for t, attrs in tags.tags if t == "a" and "data-nav" in attrs}
    day = inputs.date
    assert nav["prev"] == f"../{page_path(inputs.asset, inputs.previous_date)}"
    assert nav["next"] == f"../{page_path(inputs.asset, inputs.next_date)}"
    assert nav["history"] == f"../asset={inputs.asset}/index.html"
    assert nav["index"] == "../index.html"
    assert f"date={day.isoformat()}" not in nav["prev"]


def test_previous_page_defaults_to_the_last_observation_before_the_date(inputs):
    html = render_page(dataclasses.replace(inputs, previous_date=None, next_date=None))
    nav = {attrs["data-nav"]: attrs.get("href") for t, attrs in parse(html).tags if "data-nav" in attrs}
    earlier = inputs.daily["date"][inputs.daily["date"] < pd.Timestamp(inputs.date)].max().date()
    assert nav["prev"] == f"../{page_path(inputs.asset, earlier)}"
    assert "next" not in nav


def test_no_credential_reaches_a_page(inputs, monkeypatch):
    secret = "qml-secret-0123456789abcdef"
    monkeypatch.setenv("QML_API_KEY", secret)
    monkeypatch.setenv("QML_API_BASE_URL", f"https://user:{secret}@qml.example")
    html = render_page(inputs)
    assert secret not in html and "QML_API" not in html and "example" not in html


def test_warm_up_page_explains_its_empty_panels(warmup_inputs):
    html = render_page(warmup_inputs)
    assert [a["data-panel"] for t, a in parse(html).tags if t == "section"] == list(PANELS)
    assert "No signal on this date" in html
    assert "No ensemble forecast on this date (warm-up)" in html
    assert "No eligible configuration on this date" in html
    assert 'id="chart-price"' in html and 'id="chart-forecast"' not in html


def test_empty_tables_render(inputs):
    empty = {name: getattr(inputs, name).iloc[0:0] for name in
             ("signals", "slopes", "statistics", "trades", "daily", "leaderboard", "ensembles", "ensemble_window")}
    html = render_page(dataclasses.replace(inputs, **empty))
    assert [a["data-panel"] for t, a in parse(html).tags if t == "section"] == list(PANELS)
    assert 'data-figure="' not in html


def test_a_missing_column_is_named(inputs):
    with pytest.raises(InputError, match=r"daily: missing column\(s\) equity"):
        render_page(dataclasses.replace(inputs, daily=inputs.daily.drop(columns=["equity"])))
    with pytest.raises(InputError, match=r"daily.date: expected naive datetime64 dates, got datetime64\[ns, UTC\]"):
        render_page(dataclasses.replace(inputs, daily=inputs.daily.assign(date=inputs.daily["date"].dt.tz_localize("UTC"))))
    with pytest.raises(InputError, match="datetime.date"):
        render_page(dataclasses.replace(inputs, date=dt.datetime(2018, 1, 2)))


def test_any_datetime64_unit_is_read(inputs):
    coarse = dataclasses.replace(inputs, daily=inputs.daily.astype({"date": "datetime64[s]"}),
                                 signals=inputs.signals.astype({"date": "datetime64[us]"}))
    assert render_page(coarse) == render_page(inputs)


def test_nan_values_show_as_missing_not_as_invalid_json(inputs):
    statistics = inputs.statistics.assign(value=np.nan)
    daily = inputs.daily.copy()
    daily.loc[daily.index[-3], "equity"] = np.nan
    page = dataclasses.replace(inputs, statistics=statistics, daily=daily)
    html = render_page(page)
    assert "NaN" not in html and "Infinity" not in html
    assert_page_shows(html_values(html), expected_values(page))


def as_arrays(inputs):
    """``inputs`` with every table given as column arrays (``frame[name].to_numpy()``), as the
    dashboard step reads them."""
    tables = {field.name: getattr(inputs, field.name) for field in dataclasses.fields(inputs)}
    return dataclasses.replace(inputs, **{name: {c: frame[c].to_numpy() for c in frame.columns}
                                          for name, frame in tables.items() if isinstance(frame, pd.DataFrame)})


def test_column_arrays_render_the_same_page_as_frames(history, inputs, warmup_inputs, hostile_inputs):
    models = pd.DataFrame({"horizon": np.array([1, 5], dtype="int64"), "symbol": ["m1", "m2"],
                           "algorithm": pd.array(["ridge", None], dtype="str"), "code_version": ["v1", "v1"]})
    statistics = inputs.statistics.assign(value=np.nan)
    daily = inputs.daily.copy()
    daily.loc[daily.index[-3], "equity"] = np.nan
    trades = inputs.trades.copy()
    trades.loc[trades.index[:2], "status"] = None  # a missing text: NaN in a frame's str column and its array
    pages = [inputs, warmup_inputs, hostile_inputs, page_inputs(history, history.dates[100].date()),
             dataclasses.replace(inputs, child_models=models, statistics=statistics, daily=daily, trades=trades)]
    for page in pages:
        arrays = as_arrays(page)
        assert isinstance(arrays.signals, dict)
        assert render_page(arrays) == render_page(page)


def test_one_page_renders_well_within_a_second(inputs):
    render_page(inputs)
    started = time.perf_counter()
    render_page(inputs)
    assert time.perf_counter() - started < 1.0


def test_the_leaderboard_shows_each_configuration_once(inputs):
    """The search ranks (horizons, threshold, combination); thresholds that change no position tie,
    so the top of the board can be one configuration six times. The page shows each configuration
    once, at its best rank, with the other thresholds it was ranked at."""
    board = inputs.leaderboard.sort_values("rank").reset_index(drop=True)
    configs = ([("1,5,8,13", "low_variance", t) for t in (0.4, 0.5)] + [("1,3,13", "mean", t) for t in (0.5, 0.4)]
               + [("1,3", "mean", t) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
               + [("1,8", "median", t) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
               + [(h, "median", 0.0) for h in ("1,3,8", "1,5,8", "1,3,5", "1,13")])
    board[["horizons", "combination", "threshold"]] = pd.DataFrame(configs[:len(board)], columns=[0, 1, 2]).to_numpy()
    board["threshold"] = board["threshold"].astype(float)
    html = render_page(dataclasses.replace(inputs, leaderboard=board))
    panel = html[html.index('data-panel="search"'):]
    rows = re.findall(r'<tr data-rank="(\d+)" data-ranks="([\d,]+)">.*?data-field="horizons">([^<]*)<.*?'
                      r'data-field="combination">([^<]*)<.*?data-field="other_thresholds">([^<]*)<', panel)
    assert rows[:5] == [
        ("1", "1,2", "1,5,8,13", "low_variance", "0.500"),
        ("3", "3,4", "1,3,13", "mean", "0.400"),
        ("5", "5,6,7,8,9,10", "1,3", "mean", "0.100, 0.200, 0.300, 0.400, 0.500"),
        ("11", "11,12,13,14,15,16", "1,8", "median", "0.100, 0.200, 0.300, 0.400, 0.500"),
        ("17", "17", "1,3,8", "median", ""),
    ]
    assert len({(r[2], r[3]) for r in rows}) == len(rows) == 8
    assert_page_shows(html_values(html), expected_values(dataclasses.replace(inputs, leaderboard=board)))


# -- days without data (issue 15, point 5) --------------------------------------------------------


def _after_friday(history, days, day_status):
    """The page of the day ``days`` after the last Friday of ``history``, as the pipeline stores it:
    nothing of that day (no forecast, signal or search), the history up to the Friday."""
    friday = [d for d in history.dates if d.weekday() == 4][-2].date()
    base = page_inputs(history, friday)
    day = friday + dt.timedelta(days=days)
    status = dataclasses.replace(base.status, partition_key=f"{base.asset}|{day}", day_status=day_status)
    return friday, dataclasses.replace(base, date=day, status=status, previous_date=day - dt.timedelta(days=1),
                                       next_date=day + dt.timedelta(days=1))


def _note(html):
    match = re.search(r'<div class="day-note" role="note" data-day-status="(\w+)"><strong>([^<]*)</strong>([^<]*)'
                      r'(?:<a href="([^"]+)" data-nav="last_data">([\d-]+)</a>)?', html)
    return match and match.groups()


@pytest.mark.parametrize("days, recorded, status, said", [
    (1, "no_session", "no_session", "no trading session"),
    (2, None, "no_session", "no trading session"),  # no record: the exchange calendar knows Sundays
    (3, "holiday", "holiday", "holiday: upstream published no rows"),
    (3, "unpublished", "unpublished", "not yet published"),
])
def test_a_day_without_data_says_what_the_day_is(history, days, recorded, status, said):
    friday, inputs = _after_friday(history, days, recorded)
    html = render_page(inputs)
    weekday = ("Saturday", "Sunday", "Monday")[days - 1]
    state, headline, _, href, last = _note(html)
    assert (state, headline) == (status, f"{weekday} {inputs.date}: {said}.")
    assert (href, last) == (f"../asset={inputs.asset}/date={friday}.html", friday.isoformat())
    assert "warm-up" not in html and "fewer than two horizons" not in html
    assert "No eligible configuration" not in html  # the search did not run: nothing fell back
    for what in ("No signal on this date", "No ensemble forecast on this date", "No horizon pairs on this date",
                 "No horizon search on this date"):
        assert f"{what}: " in html
    # the history up to the last session is still there, and every number equals the stored tables
    assert 'id="chart-price"' in html and 'id="chart-forecast"' not in html
    assert_page_shows(html_values(html), expected_values(inputs))


def test_a_day_with_data_has_no_day_note(inputs, warmup_inputs, history):
    assert _note(render_page(inputs)) is None
    warmup = render_page(warmup_inputs)  # a published day early in the history: the ensemble's warm-up
    assert _note(warmup) is None and "No ensemble forecast on this date (warm-up)." in warmup
    _, unknown = _after_friday(history, 3, None)  # a Monday without rows and without a record: unknown
    html = render_page(unknown)
    assert _note(html) is None and "warm-up" not in html and "No ensemble forecast on this date." in html


def test_the_last_day_with_data_is_read_as_of_the_page(history):
    """Point in time: rows after the page's date (the Monday after a Saturday page) change nothing."""
    friday, saturday = _after_friday(history, 1, "no_session")
    monday = page_inputs(history, friday + dt.timedelta(days=3))
    later = monday.ensemble_window[monday.ensemble_window["date"] > pd.Timestamp(friday)]
    wider = dataclasses.replace(saturday, daily=monday.daily,
                                ensemble_window=pd.concat([saturday.ensemble_window, later], ignore_index=True),
                                signals=monday.signals, slopes=monday.slopes, ensembles=monday.ensembles,
                                leaderboard=monday.leaderboard)
    assert len(later) and monday.daily["date"].max() > pd.Timestamp(friday)
    assert render_page(wider) == render_page(saturday)


def test_a_day_without_data_before_any_data_says_so(history):
    first = page_inputs(history, history.dates[0].date())
    empty = {name: getattr(first, name).iloc[0:0] for name in ("daily", "ensemble_window")}
    html = render_page(dataclasses.replace(first, **empty, date=first.date - dt.timedelta(days=1),
                                           status=dataclasses.replace(first.status, day_status="no_session")))
    assert "No earlier day has data yet." in html and 'data-nav="last_data"' not in html
