"""The dashboard's ML panel: the day's ML signal per horizon, its record and accuracy as stored,
days without a model said plainly, every string escaped, and the slope panels untouched."""

import dataclasses
import re

import numpy as np
import pandas as pd

from nexus_assets.core.dashboard import render_page
from nexus_assets.core.metrics import RECORD_INPUT_COLUMNS, record
from nexus_assets.core.ml_accuracy import accuracy
from nexus_assets.core.ml_signals import ml_signals
from nexus_assets_tests.core.dashboard.reference import assert_page_shows, expected_values, html_values
from nexus_assets_tests.core.dashboard.tables import HOSTILE
from nexus_assets_tests.core.ml_data import ml_predictions


def with_ml(inputs, *, days=80, version=None):
    """``inputs`` with the ML tables of its date: seeded predictions shifted to end on that date."""
    predictions = ml_predictions(days=days, seed=21)
    predictions["date"] = predictions["date"] + (pd.Timestamp(inputs.date) - predictions["date"].max())
    if version is not None:
        predictions.loc[predictions["model_version"] != "", "model_version"] = version
    signals = ml_signals(predictions, threshold=0.6)
    day = inputs.date
    tables = record(signals[list(RECORD_INPUT_COLUMNS)], as_of=[day], calendar="exchange", cost_bps=5.0,
                    horizons=[1, 5])[day]
    scores = accuracy(signals, as_of=[day])[day]
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
