"""horizon_search -> signals -> metrics -> dashboard through Dagster: windows are enough, a daily run
reproduces the range backfill byte for byte, tables are stored as their own Hive datasets, and the
generated pages show the stored numbers (also in a real browser)."""

import datetime as dt
import os

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter

from nexus_assets.core.dashboard import PANELS, DataStatus, PageInputs
from nexus_assets.core.metrics import RECORD_INPUT_COLUMNS, record
from nexus_assets.core.ml_accuracy import accuracy
from nexus_assets.core.ml_signals import ml_signals
from nexus_assets.core.search import horizon_search
from nexus_assets.core.signals import daily_signals
from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.defs.search import FOLD_LENGTH, N_FOLDS
from nexus_assets_tests.core.dashboard.reference import assert_page_shows, expected_values, html_values
from nexus_assets_tests.defs.conftest import Pipeline, sandbox_catalog_text

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

ASSET = "9004_VIX"
FIRST, LAST = dt.date(2018, 1, 1), dt.date(2018, 8, 31)
DAYS = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
# pages are rendered for the last two months only (the page tests' days, a holiday and weekends):
# rendering every day of the range was a quarter of the fixture's cost and no test needs the earlier pages
PAGE_FIRST = dt.date(2018, 7, 1)
PAGE_DAYS = [d for d in DAYS if d >= PAGE_FIRST]


def table(pipe, asset_key, name, days=DAYS):
    frames = []
    for d in days:
        folder = pipe.data_dir / asset_key / name if name else pipe.data_dir / asset_key
        path = folder / f"asset={ASSET}" / f"date={d}.parquet"
        frames.append(pd.read_parquet(path))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    text = sandbox_catalog_text(keys=(ASSET,))  # VIX: exchange calendar, cost_bps 5, threshold 0.1
    pipe = Pipeline(tmp_path_factory.mktemp("range"), text)
    assert pipe.run(f"{ASSET}|{FIRST}", f"{ASSET}|{LAST}", through="metrics").success  # every step up to metrics
    job = pipe.defs.resolve_job_def(MAIN_JOB)
    pages = job.execute_in_process(  # then the pages of the last two months (and the model metadata they show)
        instance=pipe.instance, raise_on_error=False,
        asset_selection=[AssetKey("qml_model_metadata"), AssetKey("dashboard")],
        tags={RANGE_START_TAG: f"{ASSET}|{PAGE_FIRST}", RANGE_END_TAG: f"{ASSET}|{LAST}"})
    assert pages.success
    return pipe, text


def test_search_signals_metrics_equal_the_core_on_the_whole_history(backfill):
    pipe, _ = backfill
    ensembles = pd.concat([pd.read_parquet(pipe.file("horizon_ensembles", f"{ASSET}|{d}")) for d in DAYS],
                          ignore_index=True)
    board = horizon_search(ensembles, dates=DAYS, periods=252, cost_bps=5.0, n_folds=N_FOLDS,
                           fold_length=FOLD_LENGTH)
    stored_board = table(pipe, "horizon_search", "leaderboard")
    pd.testing.assert_frame_equal(stored_board, board.reset_index(drop=True))
    assert len(stored_board) and stored_board["rank"].max() == 20  # winners exist by summer
    winners = board[board["rank"] == 1]
    signals = daily_signals(ensembles, threshold=0.1, winners=winners)
    for name in ("signals", "slopes"):
        pd.testing.assert_frame_equal(table(pipe, "signals", name), signals[name])
    sig = signals["signals"]
    # the sandbox's winners are the best of 624 candidates on ~150 returns: none is significant
    # after deflation, so the optimised signal keeps the raw configuration (the catalog's default bar)
    assert set(sig["config_source"]) == {"catalog", "not_significant", "fallback"}
    assert (board.loc[board["rank"] == 1, "deflated_sharpe"] < 0.95).all()
    as_of = LAST
    slopes_only = record(sig, as_of=[as_of], calendar="exchange", cost_bps=5.0, horizons=[1, 3, 5, 8, 13])[as_of]
    ml = table(pipe, "ml_signals", None)
    both = pd.concat([sig[list(RECORD_INPUT_COLUMNS)], ml[list(RECORD_INPUT_COLUMNS)]], ignore_index=True)
    want = record(both, as_of=[as_of], calendar="exchange", cost_bps=5.0, horizons=[1, 3, 5, 8, 13])[as_of]
    for name in ("statistics", "trades", "daily"):
        got = pd.read_parquet(pipe.data_dir / "metrics" / name / f"asset={ASSET}" / f"date={as_of}.parquet")
        pd.testing.assert_frame_equal(got, want[name])
        slope_rows = got[got["signal"].isin(["raw", "optimised"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(slope_rows, slopes_only[name], check_exact=True)  # the ML rows change none
    stats = want["statistics"]
    assert {"point_in_time", "legacy"} == set(stats["basis"])
    assert ["raw", "optimised", "ml_h1", "ml_h5"] == list(dict.fromkeys(stats["signal"]))


def test_a_daily_run_reproduces_the_backfill_byte_for_byte(backfill):
    pipe, _ = backfill
    day = LAST
    outputs = [f"{asset_key}/{name}/asset={ASSET}/date={day}.parquet" for asset_key, names in
               (("horizon_search", ["leaderboard"]), ("signals", ["signals", "slopes"]),
                ("metrics", ["statistics", "trades", "daily", "ml_accuracy", "ml_calibration"])) for name in names]
    outputs.append(f"ml_signals/asset={ASSET}/date={day}.parquet")
    outputs.append(f"dashboard/asset={ASSET}/date={day}.html")  # a page is a pure function of its partitions
    before = {path: (pipe.data_dir / path).read_bytes() for path in outputs}
    result = pipe.run(f"{ASSET}|{day}", f"{ASSET}|{day}")  # what the daily schedule runs
    assert result.success
    for path in outputs:
        assert (pipe.data_dir / path).read_bytes() == before[path], path


def test_ml_signals_and_accuracy_equal_the_core_on_the_whole_history(backfill):
    pipe, _ = backfill
    predictions = table(pipe, "ml_predictions", None)
    signals = ml_signals(predictions, threshold=0.6)  # the catalog's default ml_signal_threshold
    pd.testing.assert_frame_equal(table(pipe, "ml_signals", None), signals)
    assert set(signals["signal"]) - {"HOLD"} and (signals["reason"] != "no_model").any()  # it acts, with models
    for day in (DAYS[40], LAST):
        want = accuracy(signals[signals["date"] <= pd.Timestamp(day)], as_of=[day])[day]
        for name in ("ml_accuracy", "ml_calibration"):
            got = pd.read_parquet(pipe.data_dir / "metrics" / name / f"asset={ASSET}" / f"date={day}.parquet")
            pd.testing.assert_frame_equal(got, want[name])
    meta = last_metadata(pipe, "metrics")
    assert "ml_h5_sharpe_ratio" in meta and "ml_h1_brier" in meta


def last_metadata(pipe, asset_key):
    """The metadata of ``asset_key``'s LAST partition (named: which partition of a range run is stored
    last is not part of the contract, and a warm-up day's signal metadata says there is no forecast)."""
    records = pipe.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_key), asset_partitions=[f"{ASSET}|{LAST}"]), limit=1).records
    return records[0].asset_materialization.metadata


def test_metadata_names_the_signal_and_the_record(backfill):
    pipe, _ = backfill
    meta = last_metadata(pipe, "metrics")
    assert "raw_sharpe_ratio" in meta and "last_30_trades_raw" in meta
    assert last_metadata(pipe, "signals")["signal"].value in ("BULLISH", "BEARISH", "NEUTRAL")


def stored_tables(pipe, asset_key, names, day):
    return {n: pd.read_parquet(pipe.data_dir / asset_key / n / f"asset={ASSET}" / f"date={day}.parquet") for n in names}


def test_dashboard_page_shows_the_stored_numbers_and_the_site_is_built(backfill):
    pipe, _ = backfill
    site = pipe.data_dir / "dashboard"
    day = dt.date(2018, 8, 30)
    html = (site / f"asset={ASSET}" / f"date={day}.html").read_text()
    assert (site / "index.html").is_file() and (site / f"asset={ASSET}" / "index.html").is_file()
    assert len(list((site / "assets").glob("plotly-*.min.js"))) == 1 and "cdn" not in html.lower()
    assert len(list(site.glob(f"asset={ASSET}/date=*.html"))) == len(PAGE_DAYS)  # a page per partition of the run
    for panel in PANELS:
        assert f'data-panel="{panel}"' in html
    ensembles = pd.concat([pd.read_parquet(pipe.file("horizon_ensembles", f"{ASSET}|{d}")) for d in DAYS
                           if d <= day], ignore_index=True)
    dates = ensembles["date"].drop_duplicates().sort_values().tail(30)
    inputs = PageInputs.from_partitions(
        asset=ASSET, display_name="x", category="x", calendar="exchange", date=day,
        signals=stored_tables(pipe, "signals", ["signals", "slopes"], day),
        metrics=stored_tables(pipe, "metrics", ["statistics", "trades", "daily", "ml_accuracy", "ml_calibration"], day),
        horizon_search=stored_tables(pipe, "horizon_search", ["leaderboard"], day),
        ensembles=ensembles[ensembles["date"] == pd.Timestamp(day)].reset_index(drop=True),
        ensemble_window=ensembles[ensembles["date"].isin(dates)].reset_index(drop=True),
        status=DataStatus(partition_key=f"{ASSET}|{day}", source="sandbox"),
        ml_signals=pd.read_parquet(pipe.data_dir / "ml_signals" / f"asset={ASSET}" / f"date={day}.parquet"),
    )
    # every number of every panel but the data status equals the stored tables, and nothing else is shown
    found = [f for f in html_values(html) if f["panel"] != "status"]
    assert_page_shows(found, [e for e in expected_values(inputs) if e.panel != "status"])
    status = {f["field"]: f["value"] for f in html_values(html) if f["panel"] == "status"}
    meta = pipe.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("qml_models"), asset_partitions=[f"{ASSET}|{day}"]), limit=1
    ).records[0].asset_materialization.metadata
    assert status["rows"] == str(meta["rows"].value) and status["models"] == str(meta["models"].value)
    assert meta["upstream_watermark"].value in html and status["freshness"] == "fresh"
    page_meta = pipe.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("dashboard"), asset_partitions=[f"{ASSET}|{day}"]), limit=1
    ).records[0].asset_materialization.metadata
    assert page_meta["page"].value == (site / f"asset={ASSET}" / f"date={day}.html").resolve().as_uri()


def test_generated_page_in_headless_chromium(backfill):
    from nexus_assets.core.dashboard.screenshots import find_chromium, launch

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or find_chromium() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Playwright or Chromium missing in CI (apt-get install -y chromium; pip install -e '.[test]')")
        pytest.skip("Playwright or Chromium missing")
    pipe, _ = backfill
    page_file = pipe.data_dir / "dashboard" / f"asset={ASSET}" / f"date={LAST}.html"
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page()
            problems = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(page_file.as_uri())
            page.wait_for_function("() => Array.from(document.querySelectorAll('[data-figure]')).every("
                                   "d => d.getAttribute('data-rendered') === 'true')", timeout=60_000)
            assert page.locator("[data-panel]").count() >= len(PANELS)
            assert page.locator(".js-plotly-plot svg").count() > 0
            assert problems == []
        finally:
            browser.close()


def test_pages_of_days_without_data_say_what_the_day_is(backfill):
    """A weekend and an exchange holiday, as qml_models recorded them: the page says what the day is
    and links the last day with data, the summary keeps the status, the calendar tells them apart."""
    import json
    import re

    pipe, _ = backfill
    folder = pipe.data_dir / "dashboard" / f"asset={ASSET}"
    for day, status, said, last in ((dt.date(2018, 8, 25), "no_session", "Saturday 2018-08-25: no trading session",
                                     "2018-08-24"),
                                    (dt.date(2018, 7, 4), "holiday",
                                     "Wednesday 2018-07-04: holiday: upstream published no rows", "2018-07-03")):
        html = (folder / f"date={day}.html").read_text()
        assert f'data-day-status="{status}"><strong>{said}.</strong>' in html
        assert f'<a href="../asset={ASSET}/date={last}.html" data-nav="last_data">{last}</a>' in html
        assert "warm-up" not in html
        assert json.loads((folder / f"date={day}.json").read_text())["day_status"] == status
        history = (folder / "index.html").read_text()
        assert re.search(rf'class="{status.replace("_", "-")}" title="[^"]*" data-date="{day}"', history)
    friday = (folder / "date=2018-08-24.html").read_text()
    assert 'class="day-note"' not in friday
    assert json.loads((folder / "date=2018-08-24.json").read_text())["day_status"] == "published"


def test_site_index_freshness_uses_the_latest_page_and_its_watermark(backfill, tmp_path):
    import shutil

    from nexus_assets.catalog import load_catalog
    from nexus_assets.defs.dashboard import rebuild_site

    pipe, _ = backfill
    site = tmp_path / "site"
    shutil.copytree(pipe.data_dir / "dashboard", site)
    catalog = load_catalog(pipe.catalog_path)
    index = rebuild_site(site, catalog, today=dt.date(2018, 9, 1))  # the morning after the last page
    html = (site / "index.html").read_text()
    assert 'data-field="freshness" data-value="fresh"' in html and "fresh through 2018-08-31" in html
    rebuild_site(site, catalog, today=dt.date(2018, 9, 12))  # eight sessions later, nothing new
    html = (site / "index.html").read_text()
    assert 'data-value="late"' in html and "latest materialised day 2018-08-31 is before the expected 2018-09-11" in html
    assert str(index).endswith("index.html")
