"""The child-model panel shows each symbol's algorithm and version from the date's qml_model_metadata."""

import dataclasses
import re

import pandas as pd
import pytest

from nexus_assets.core.dashboard import InputError, render_page
from nexus_assets_tests.core.dashboard.tables import HOSTILE


def panel(html: str) -> str:
    return re.search(r'<section[^>]*data-panel="models".*?</section>', html, re.S).group(0)


def rows_of(html: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(horizon, symbol) -> (algorithm, version) as the panel's rows show them."""
    out = {}
    for row in re.findall(r"<tr data-horizon.*?</tr>", panel(html), re.S):
        horizon = re.search(r'data-horizon="(\d+)"', row).group(1)
        symbol = re.search(r'data-field="best_child" data-value="([^"]*)"', row).group(1)
        algorithm = re.search(r'data-field="algorithm">([^<]*)<', row).group(1)
        version = re.search(r'data-field="code_version">([^<]*)<', row).group(1)
        out[(horizon, symbol)] = (algorithm, version)
    return out


def described(inputs, **overrides) -> pd.DataFrame:
    shown = inputs.ensemble_window.dropna(subset=["best_child"])[["horizon", "best_child"]].drop_duplicates()
    return pd.DataFrame({
        "horizon": shown["horizon"].astype("int64").to_numpy(),
        "symbol": shown["best_child"].astype(str).to_numpy(),
        "algorithm": [overrides.get("algorithm", f"ridge-{i}") for i in range(len(shown))],
        "code_version": overrides.get("code_version", "sandbox-1"),
    })


def test_each_symbol_shows_its_algorithm_and_version(inputs):
    models = described(inputs)
    shown = rows_of(render_page(dataclasses.replace(inputs, child_models=models)))
    assert shown
    want = {(str(h), s): (a, v) for h, s, a, v in models.itertuples(index=False)}
    for key, value in shown.items():
        assert value == want[key], key


def test_a_model_not_described_for_the_date_shows_the_missing_mark(inputs):
    every = described(inputs)
    shown_first = rows_of(render_page(dataclasses.replace(inputs, child_models=every)))
    h, symbol = next(iter(shown_first))  # a symbol the panel shows, then left undescribed
    models = every[~((every["horizon"] == int(h)) & (every["symbol"] == symbol))]
    shown = rows_of(render_page(dataclasses.replace(inputs, child_models=models)))
    assert [k for k, v in shown.items() if v == ("\u2013", "\u2013")] == [(h, symbol)]
    assert set(rows_of(render_page(inputs)).values()) == {("\u2013", "\u2013")}  # no metadata at all


def test_upstream_text_is_escaped(inputs):
    html = render_page(dataclasses.replace(inputs, child_models=described(inputs, algorithm=HOSTILE,
                                                                          code_version=HOSTILE)))
    assert HOSTILE not in html and "&lt;" in panel(html)


def test_a_metadata_table_without_its_columns_is_named(inputs):
    with pytest.raises(InputError, match="child_models: missing column.*code_version"):
        render_page(dataclasses.replace(inputs, child_models=described(inputs).drop(columns="code_version")))


def fan_note(html: str) -> str:
    return re.search(r'<section[^>]*data-panel="forecast".*?</section>', html, re.S).group(0)


def test_the_fan_says_whose_forecast_it_shows(inputs):
    ours = fan_note(render_page(inputs))
    assert "dynamic quantile ensemble" in ours and "own forecast per horizon" not in ours
    upstream_rows = inputs.ensembles.assign(strategy="upstream", aggregator=None, quantile=float("nan"), n_selected=0,
                                            p05=float("nan"), p25=float("nan"), p75=float("nan"), p95=float("nan"))
    theirs = fan_note(render_page(dataclasses.replace(inputs, ensembles=upstream_rows)))
    assert "own forecast per horizon" in theirs and "dynamic quantile ensemble" not in theirs
