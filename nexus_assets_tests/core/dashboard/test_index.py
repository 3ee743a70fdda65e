"""The site index and the per-asset history calendar."""

import datetime as dt
import re

from nexus_assets.core.dashboard import AssetSummary, DaySummary, render_history, render_index, summarise
from nexus_assets_tests.core.dashboard.reference import html_values
from nexus_assets_tests.core.dashboard.tables import HOSTILE, HOSTILE_NAME, page_inputs


def asset(key="9001_SP500", days=(), **overrides):
    fields = dict(asset=key, display_name=f"{key} name", category="Equity Index", calendar="exchange",
                  freshness="fresh", freshness_detail="fresh through 2018-10-05", days=tuple(days))
    fields.update(overrides)
    return AssetSummary(**fields)


def day(date, signal="BULLISH", net=0.6):
    return DaySummary(date, signal, net, "moderate", "NEUTRAL", 0.0)


def links(html):
    return dict(re.findall(r'<a href="([^"]+)"[^>]*data-nav="(\w+)"', html))


def test_summarise_reads_both_variants_of_the_day(inputs):
    summary = summarise(inputs)
    rows = inputs.signals.set_index("variant")
    assert summary.date == inputs.date
    assert (summary.signal, summary.net_prob, summary.tier) == (
        rows.loc["raw", "signal"], rows.loc["raw", "net_prob"], rows.loc["raw", "tier"])
    assert (summary.optimised_signal, summary.optimised_net_prob) == (
        rows.loc["optimised", "signal"], rows.loc["optimised", "net_prob"])


def test_summarise_a_day_without_signal(warmup_inputs):
    summary = summarise(warmup_inputs)
    assert summary.signal is None and summary.net_prob is None and summary.optimised_signal is None


def test_index_links_each_assets_latest_page_and_history():
    days = [day(dt.date(2018, 3, d)) for d in (5, 2, 6)]
    html = render_index([asset("9002_NASDAQ", days[:2], freshness="late"), asset("9001_SP500", days)])
    assert html.index('data-asset="9001_SP500"') < html.index('data-asset="9002_NASDAQ"')
    hrefs = re.findall(r'<a href="([^"]+)" data-nav="(\w+)"', html)
    assert hrefs == [("asset=9001_SP500/date=2018-03-06.html", "latest"), ("asset=9001_SP500/index.html", "history"),
                     ("asset=9002_NASDAQ/date=2018-03-05.html", "latest"), ("asset=9002_NASDAQ/index.html", "history")]
    values = {(v["field"], v["value"]) for v in html_values(html)}
    assert ("freshness", "late") in values and ("freshness", "fresh") in values and ("signal", "BULLISH") in values
    assert "script-src 'none'" in html.replace("&#x27;", "'")


def test_index_is_deterministic_whatever_the_order():
    a, b = asset("9001_SP500", [day(dt.date(2018, 3, 2)), day(dt.date(2018, 3, 5))]), asset("9002_NASDAQ")
    assert render_index([a, b]) == render_index([b, a])
    assert render_index([a]) == render_index([asset("9001_SP500", [day(dt.date(2018, 3, 5)), day(dt.date(2018, 3, 2))])])


def test_index_of_an_asset_without_pages_and_of_nothing():
    assert "none yet" in render_index([asset()])
    assert "No pages yet." in render_index([])


def test_history_is_a_calendar_linking_every_page():
    days = [day(dt.date(2018, 1, 31), "BEARISH", -0.5), day(dt.date(2018, 3, 1), None, None), day(dt.date(2018, 1, 2))]
    html = render_history(asset(days=days))
    assert re.findall(r"<h3>(\w+ \d{4})</h3>", html) == ["January 2018", "February 2018", "March 2018"]
    dated = re.findall(r'<a href="([^"]+)" class="([\w-]+)" title="([^"]+)" data-date="([\d-]+)"', html)
    assert dated == [
        ("../asset=9001_SP500/date=2018-01-02.html", "BULLISH", "2018-01-02: BULLISH +0.600", "2018-01-02"),
        ("../asset=9001_SP500/date=2018-01-31.html", "BEARISH", "2018-01-31: BEARISH -0.500", "2018-01-31"),
        ("../asset=9001_SP500/date=2018-03-01.html", "no-signal", "2018-03-01: no signal", "2018-03-01"),
    ]
    assert links(html) == {"../index.html": "index", "../asset=9001_SP500/date=2018-03-01.html": "latest"}


def test_hostile_names_are_escaped_on_index_and_history():
    hostile = asset(display_name=HOSTILE_NAME, category=HOSTILE, calendar=HOSTILE, freshness=HOSTILE,
                    freshness_detail=HOSTILE, days=[DaySummary(dt.date(2018, 3, 2), HOSTILE, 0.5, HOSTILE, HOSTILE, 0.1)])
    for html in (render_index([hostile]), render_history(hostile)):
        assert HOSTILE not in html and HOSTILE_NAME not in html
        assert "<img" not in html and "<b " not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_summaries_of_real_pages_feed_the_index(history):
    days = tuple(summarise(page_inputs(history, d.date())) for d in history.dates[-3:])
    html = render_index([asset(days=days)])
    assert f"date={history.dates[-1].date().isoformat()}.html" in html


def test_the_index_presents_the_latest_day_with_data_not_a_weekend_or_holiday():
    friday = day(dt.date(2018, 3, 30), "BEARISH", -0.5)
    later = [DaySummary(dt.date(2018, 3, 31), None, None, None, None, None, "no_session"),
             DaySummary(dt.date(2018, 4, 1), None, None, None, None, None, None),  # a Sunday, no record
             DaySummary(dt.date(2018, 4, 2), None, None, None, None, None, "holiday")]
    html = render_index([asset(days=[day(dt.date(2018, 3, 29)), friday, *later])])
    assert re.search(r'data-field="latest_date">([\d-]+)<', html).group(1) == "2018-03-30"
    assert links(html)["asset=9001_SP500/date=2018-03-30.html"] == "latest"
    assert ('data-field="signal" data-value="BEARISH"' in html) and "no signal" not in html
    last = re.search(r'<a href="([^"]+)" data-nav="last_page">([^<]*)</a>', html).groups()
    assert last == ("asset=9001_SP500/date=2018-04-02.html", "Monday 2018-04-02: holiday: upstream published no rows")
    assert "data through 2018-03-30" in html
    history = render_history(asset(days=[friday, *later]))
    assert links(history)["../asset=9001_SP500/date=2018-03-30.html"] == "latest"
    assert "history of 4 pages (1 day with data)" in history


def test_only_days_without_data_have_no_latest_state():
    html = render_index([asset(days=[DaySummary(dt.date(2018, 3, 31), None, None, None, None, None, "no_session")])])
    assert "none yet" in html and 'data-nav="latest"' not in html and 'data-nav="last_page"' in html


def test_the_history_tells_days_without_a_session_from_neutral_days():
    days = [day(dt.date(2018, 4, 2), "NEUTRAL", 0.1),
            DaySummary(dt.date(2018, 4, 3), None, None, None, None, None, "published"),  # the warm-up
            DaySummary(dt.date(2018, 4, 4), None, None, None, None, None, "holiday"),
            DaySummary(dt.date(2018, 4, 5), None, None, None, None, None, "unpublished"),
            DaySummary(dt.date(2018, 4, 7), None, None, None, None, None, "no_session"),
            DaySummary(dt.date(2018, 4, 8), None, None, None, None, None, None)]  # a Sunday, no record
    cells = re.findall(r'class="([\w-]+)" title="([^"]+)" data-date="([\d-]+)"', render_history(asset(days=days)))
    assert cells == [
        ("NEUTRAL", "2018-04-02: NEUTRAL +0.100", "2018-04-02"),
        ("no-signal", "2018-04-03: no signal (fewer than two horizons have a forecast)", "2018-04-03"),
        ("holiday", "Wednesday 2018-04-04: holiday: upstream published no rows", "2018-04-04"),
        ("unpublished", "Thursday 2018-04-05: not yet published", "2018-04-05"),
        ("no-session", "Saturday 2018-04-07: no trading session", "2018-04-07"),
        ("no-session", "Sunday 2018-04-08: no trading session", "2018-04-08"),
    ]


def test_summaries_record_what_the_day_is(inputs):
    import dataclasses

    assert summarise(inputs).day_status == "published"
    saturday = dataclasses.replace(inputs, date=dt.date(2018, 3, 31),
                                   status=dataclasses.replace(inputs.status, day_status=None))
    assert summarise(saturday).day_status == "no_session"  # no record: the exchange calendar
    holiday = dataclasses.replace(inputs, status=dataclasses.replace(inputs.status, day_status="holiday"))
    assert summarise(holiday).day_status == "holiday"
