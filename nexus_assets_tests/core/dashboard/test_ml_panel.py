"""The dashboard's ML panel: the day's ML signal per horizon, its record and accuracy as stored,
days without a model said plainly, every string escaped, and the slope panels untouched."""

import dataclasses
import datetime as dt
import html as html_module
import re

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.dashboard import render_page
from nexus_assets.core.metrics import RECORD_INPUT_COLUMNS, record
from nexus_assets.core.ml_accuracy import accuracy
from nexus_assets.core.ml_signals import ml_signals
from nexus_assets_tests.core.dashboard.reference import assert_page_shows, expected_values, html_values
from nexus_assets_tests.core.dashboard.tables import HOSTILE, page_inputs
from nexus_assets_tests.core.ml_data import ml_predictions


def ml_tables(last_prediction, as_of, *, days=80, version=None):
    """Seeded ML signals whose predictions end on ``last_prediction``, and the record (``statistics``
    tables) and accuracy (``ml_accuracy`` / ``ml_calibration``) of those signals as of ``as_of``."""
    predictions = ml_predictions(days=days, seed=21)
    predictions["date"] = predictions["date"] + (pd.Timestamp(last_prediction) - predictions["date"].max())
    if version is not None:
        predictions.loc[predictions["model_version"] != "", "model_version"] = version
    signals = ml_signals(predictions, threshold=0.6)
    tables = record(signals[list(RECORD_INPUT_COLUMNS)], as_of=[as_of], calendar="exchange", cost_bps=5.0,
                    horizons=[1, 5])[as_of]
    return signals, tables, accuracy(signals, as_of=[as_of])[as_of]


def with_ml(inputs, *, days=80, version=None):
    """``inputs`` with the ML tables of its date: seeded predictions shifted to end on that date."""
    day = inputs.date
    signals, tables, scores = ml_tables(day, day, days=days, version=version)
    statistics = pd.concat([inputs.statistics, tables["statistics"]], ignore_index=True)
    return dataclasses.replace(inputs, statistics=statistics, ml_signals=signals[signals["date"] == pd.Timestamp(day)],
                               ml_accuracy=scores["ml_accuracy"], ml_calibration=scores["ml_calibration"]), signals, tables


def ml_section(html: str) -> str:
    return re.search(r'<section id="panel-ml".*?</section>', html, re.S).group(0)


def values(section: str, field: str) -> list[str]:
    return re.findall(rf'data-field="{field}" data-value="([^"]*)"', section)


def test_the_panel_shows_the_stored_signal_record_and_accuracy(inputs):
    page_inputs, signals, tables = with_ml(inputs)
    section = ml_section(render_page(page_inputs))
    today = signals[signals["date"] == pd.Timestamp(inputs.date)].sort_values("horizon")
    assert re.findall(r'data-field="signal" data-value="([A-Z]+)"', section) == today["signal"].tolist()
    assert values(section, "probability_up") == [repr(float(p)) for p in today["probability_up"]]
    assert values(section, "confidence") == [repr(float(c)) for c in today["confidence"]]
    for version in today["model_version"]:
        assert f">{version}<" in section
    stats = tables["statistics"]
    total = stats[(stats["signal"] == "ml_h5") & (stats["basis"] == "point_in_time")
                  & (stats["statistic"] == "total_return")]["value"].iloc[0]
    assert re.search(rf'data-statistic="total_return".*?data-signal="ml_h5".*?data-value="{re.escape(repr(float(total)))}"',
                     section, re.S)
    pooled = page_inputs.ml_accuracy[page_inputs.ml_accuracy["scope"] == "all"]
    assert values(section, "hit_rate")[0] == repr(float(pooled["hit_rate"].iloc[0]))
    assert "Calibration" in section and 'data-table="ml_calibration"' in section


def test_every_number_on_the_page_is_the_stored_one(inputs):
    """The page-wide reference (every panel, ML included): each stored value once, nothing else."""
    page_inputs, _, _ = with_ml(inputs)
    html = render_page(page_inputs)
    assert_page_shows(html_values(html), expected_values(page_inputs))
    assert any(e.panel == "ml" and e.field == "hit_rate" for e in expected_values(page_inputs))


def test_a_day_without_a_model_says_so(inputs):
    page_inputs, _, _ = with_ml(inputs, days=6)  # the seeded data's first 8 days have no model
    section = ml_section(render_page(page_inputs))
    assert "No model serves on this date yet" in section
    assert "no model serves on this date" in section  # each card's reason
    assert values(section, "probability_up") == ["", ""]


def without_prediction(page, last_prediction):
    """``page`` (a day without ML rows) with its stored ML tables: predictions up to
    ``last_prediction``, an empty ml_signals partition of the day, the record and accuracy as of the day."""
    signals, tables, scores = ml_tables(last_prediction, page.date)
    statistics = pd.concat([page.statistics, tables["statistics"]], ignore_index=True)
    assert not (signals["date"] == pd.Timestamp(page.date)).any()
    return dataclasses.replace(page, statistics=statistics, ml_signals=signals.iloc[0:0],
                               ml_accuracy=scores["ml_accuracy"], ml_calibration=scores["ml_calibration"]), tables


def shows_the_record_and_accuracy(page, tables):
    """The ML panel of ``page`` shows no card, but the stored record, accuracy and calibration of
    each ML horizon of the day; and every number on the page is the stored one."""
    html = render_page(page)
    section = ml_section(html)
    assert 'data-field="signal"' not in section and 'class="cards"' not in section
    stats = tables["statistics"]
    for h in (1, 5):
        total = stats[(stats["signal"] == f"ml_h{h}") & (stats["basis"] == "point_in_time")
                      & (stats["statistic"] == "total_return")]["value"].iloc[0]
        assert re.search(rf'data-statistic="total_return".*?data-signal="ml_h{h}"[^>]*><span data-field="value" '
                         rf'data-value="{re.escape(repr(float(total)))}"', section, re.S)
    pooled = page.ml_accuracy[page.ml_accuracy["scope"] == "all"]
    assert values(section, "hit_rate")[:1] == [repr(float(pooled["hit_rate"].iloc[0]))]
    assert 'data-table="ml_record"' in section and 'data-table="ml_calibration"' in section
    assert "<th>ML h1</th><th>ML h5</th>" in section
    assert_page_shows(html_values(html), expected_values(page))
    return section


def lead(section: str) -> str:
    return html_module.unescape(re.search(r'<h2>ML signal</h2><p class="empty">([^<]*)</p>', section).group(1))


@pytest.mark.parametrize("days, recorded, why", [
    (1, "no_session", "there is no trading session on this day"),
    (2, None, "there is no trading session on this day"),  # no record: the exchange calendar knows Sundays
    (3, "holiday", "it is a holiday (upstream published no rows for it)"),
    (3, "unpublished", "upstream has not published this day yet"),
])
def test_a_day_without_a_session_shows_the_ml_record_as_of_the_day(history, days, recorded, why):
    """A weekend or a holiday has no ML prediction (nothing to predict from), but its metrics
    partition holds the ML record and accuracy as of the day: the panel shows them, and says why."""
    friday = [d for d in history.dates if d.weekday() == 4][-2].date()
    base = page_inputs(history, friday)
    day = friday + dt.timedelta(days=days)
    status = dataclasses.replace(base.status, partition_key=f"{base.asset}|{day}", day_status=recorded)
    slope_record = base.statistics.assign(date=pd.Timestamp(day))  # the metrics partition of the day
    page = dataclasses.replace(base, date=day, status=status, statistics=slope_record)
    page, tables = without_prediction(page, friday)
    section = shows_the_record_and_accuracy(page, tables)
    assert lead(section) == f"No ML prediction on this date: {why}. The ML record and accuracy below are as of this date."


def test_a_session_without_a_price_shows_the_ml_record_as_of_the_day(inputs, history):
    """A session published with a null target_var_price (the contract's "not yet known") has no
    features, so no ML prediction; its record and accuracy as of the day are still shown."""
    no_price = dataclasses.replace(inputs, signals=inputs.signals.assign(price=np.nan),
                                   ensembles=inputs.ensembles.assign(price=np.nan))
    page, tables = without_prediction(no_price, history.dates[-2].date())
    section = shows_the_record_and_accuracy(page, tables)
    assert lead(section) == (
        "No ML prediction on this date: its price is not yet known (upstream's rows for it carry no target_var_price), "
        "and the ML steps predict only from a known close. The ML record and accuracy below are as of this date.")


def test_a_day_without_ml_rows_says_what_the_page_can_tell(inputs, warmup_inputs, history):
    """A priced session without ML rows (ml_predictions not materialised) and a day whose price the
    page cannot see (no signal or forecast rows yet) are worded apart; neither is guessed."""
    priced, _ = without_prediction(inputs, history.dates[-2].date())
    assert lead(ml_section(render_page(priced))).startswith(
        "No ML prediction on this date, though its price is known: its ml_signals partition holds no rows")
    unseen, _ = without_prediction(warmup_inputs, history.dates[1].date())
    assert lead(ml_section(render_page(unseen))).startswith(
        "No ML prediction on this date: its ml_signals partition holds no rows (no price was known for it, or "
        "ml_predictions was not materialised for it).")


def test_without_ml_inputs_the_panel_says_the_steps_have_not_run(inputs):
    section = ml_section(render_page(inputs))
    assert "has not run" in section


def test_strings_are_escaped(inputs):
    page_inputs, _, _ = with_ml(inputs, version=HOSTILE)
    html = render_page(page_inputs)
    section = ml_section(html)
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in section


def test_the_other_panels_are_unchanged_by_the_ml_panel(inputs):
    page_inputs, _, _ = with_ml(inputs)
    plain, ml = render_page(inputs), render_page(page_inputs)
    assert ml_section(plain) != ml_section(ml)
    assert plain.replace(ml_section(plain), "") == ml.replace(ml_section(ml), "")
    assert np.all([render_page(page_inputs) == ml])  # deterministic


def test_column_arrays_render_the_same_ml_panel_as_frames(inputs):
    page_inputs, _, _ = with_ml(inputs)
    arrays = dataclasses.replace(page_inputs, **{
        name: {c: frame[c].to_numpy() for c in frame.columns}
        for name in ("statistics", "ml_signals", "ml_accuracy", "ml_calibration")
        for frame in [getattr(page_inputs, name)]})
    assert ml_section(render_page(arrays)) == ml_section(render_page(page_inputs))
