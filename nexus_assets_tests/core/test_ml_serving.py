"""Which model serves a date, and predictions: the run's table equals day-by-day resolution, and
predictions on or before a date ignore every price after it."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import ML_PREDICTIONS, table_problems
from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_serving import ModelError, predictions_table, serving_table
from nexus_assets.core.ml_training import train_direction_model, training_anchor
from nexus_assets_tests.core.test_ml_training import SMALL, _closes

NAMES = model_features(False)
DAYS = [dt.date(2020, 2, 24) + dt.timedelta(days=i) for i in range(21)]


def _registry(frame: pd.DataFrame) -> tuple[list[dict], dict]:
    """Models of the three Mondays around DAYS (28-day cadence would be fewer: weekly here)."""
    manifests, models = [], {}
    for anchor in sorted({training_anchor(d, 7) for d in DAYS}):
        for h in (1, 5):
            model = train_direction_model(frame, NAMES, asset="A", horizon=h, as_of=anchor, config=SMALL)
            manifest = {**model.manifest, "sha256": f"sha-{model.manifest['version']}"}
            manifests.append(manifest)
            models[manifest["version"]] = SimpleNamespace(
                manifest=manifest, probability_up=lambda x, p=model.pipeline: p.predict_proba(x)[:, 1])
    return manifests, models


@pytest.fixture(scope="module")
def trained():
    frame = feature_frame(_closes())
    return frame, *_registry(frame)


def test_the_run_table_equals_resolving_each_day_alone(trained):
    _, manifests, _ = trained
    together = serving_table(manifests, "A", (1, 5), DAYS)
    alone = pd.concat([serving_table(manifests, "A", (1, 5), [d]) for d in DAYS], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone)
    first = serving_table(manifests, "A", (1, 5), [dt.date(2020, 2, 23)])
    assert first["model_version"].tolist() == ["", ""] and first["valid_from"].isna().all()
    assert together["trained_on_date"].sum() == 6  # three Mondays x two horizons


def test_predictions_are_point_in_time():
    closes = _closes()
    cut = pd.Timestamp(DAYS[10])
    rewritten = closes.where(closes.index <= cut, closes * 1.3)
    tables = []
    for series in (closes, rewritten):
        frame = feature_frame(series)
        manifests, models = _registry(frame)  # retrained on the rewritten prices too
        rows = frame[frame["date"].isin(pd.to_datetime(DAYS))]
        tables.append(predictions_table(rows, serving_table(manifests, "A", (1, 5), DAYS), models.__getitem__))
    whole, changed = tables
    assert table_problems(ML_PREDICTIONS, whole) == []
    on_or_before = whole["date"] <= cut
    pd.testing.assert_frame_equal(whole[on_or_before], changed[changed["date"] <= cut])
    assert not whole[~on_or_before].equals(changed[changed["date"] > cut])
    assert whole["probability_up"].notna().all()
    np.testing.assert_allclose(whole["confidence"], (whole["probability_up"] - 0.5).abs() * 2)


def test_no_model_warm_up_and_mismatches(trained):
    frame, manifests, models = trained
    days = [dt.date(2018, 9, 10), *DAYS[:3]]  # the first: features still warming up, no model yet
    rows = frame[frame["date"].isin(pd.to_datetime(days))]
    serving = serving_table(manifests, "A", (1, 5), days)
    table = predictions_table(rows, serving, models.__getitem__)
    early = table[table["date"] == pd.Timestamp(days[0])]
    assert early["model_version"].tolist() == ["", ""] and early["probability_up"].isna().all()
    assert early["confidence"].isna().all() and early["price"].notna().all()
    moved = serving.assign(model_sha256="another")
    with pytest.raises(ModelError, match="re-materialise ml_models"):
        predictions_table(rows, moved, models.__getitem__)
    wider = {v: SimpleNamespace(manifest={**m.manifest, "features": [*NAMES, "wall_clock_hour"]},
                                probability_up=m.probability_up) for v, m in models.items()}
    with pytest.raises(ModelError, match="wall_clock_hour"):
        predictions_table(rows, serving, wider.__getitem__)
