"""Walk-forward training: pairs against a naive reference, point in time, deterministic bytes,
ONNX equal to scikit-learn, the calendar-anchored cadence."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_training import (
    EPOCH,
    TrainingConfig,
    train_direction_model,
    training_anchor,
    training_pairs,
    training_rows,
    training_rows_sha256,
)

# Small and quick, same code paths as the catalog's defaults.
SMALL = TrainingConfig(max_iter=5, window=200, min_pairs=60)
AS_OF = dt.date(2020, 3, 2)


def _closes(seed: int = 11, n: int = 420) -> pd.Series:
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2018-09-03", periods=n)
    steps = rng.normal(0.0002, 0.012, n)
    steps[rng.choice(n, 40, replace=False)] = 0.0  # ties: an unchanged close is "not up"
    return pd.Series(100 * np.exp(np.cumsum(steps)), index=days)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return feature_frame(_closes())


NAMES = model_features(False)


def _naive_pairs(frame: pd.DataFrame, horizon: int, as_of: dt.date):
    xs, ys = [], []
    rows = [r for r in frame.itertuples(index=False) if r.date.date() <= as_of]
    for i, row in enumerate(rows):
        if i + horizon > len(rows) - 1:
            break
        x = [getattr(row, n) for n in NAMES]
        if any(np.isnan(v) for v in x):
            continue
        xs.append(x)
        ys.append(1 if rows[i + horizon].price > row.price else 0)
    return np.array(xs), np.array(ys)


@pytest.mark.parametrize("horizon", [1, 5])
def test_training_pairs_match_a_naive_reference(frame, horizon):
    x, y, dates = training_pairs(frame, NAMES, horizon, AS_OF)
    nx, ny = _naive_pairs(frame, horizon, AS_OF)
    np.testing.assert_array_equal(x, nx)
    np.testing.assert_array_equal(y, ny)
    assert dates.max() < pd.Timestamp(AS_OF) and len(dates) == len(y)
    assert 0 < y.mean() < 1


def test_training_is_point_in_time_and_deterministic(frame):
    """Rewriting every close after the training day changes neither the pairs nor the model's
    bytes; training twice gives the same bytes (the manifest's hash)."""
    first = train_direction_model(frame, NAMES, asset="X", horizon=5, as_of=AS_OF, config=SMALL)
    again = train_direction_model(frame, NAMES, asset="X", horizon=5, as_of=AS_OF, config=SMALL)
    closes = _closes()
    later = closes.index > pd.Timestamp(AS_OF)
    rewritten = closes.where(~later, closes * np.linspace(0.5, 1.7, len(closes)))
    changed = train_direction_model(feature_frame(rewritten), NAMES, asset="X", horizon=5, as_of=AS_OF, config=SMALL)
    digest = hashlib.sha256(first.onnx).hexdigest()
    assert hashlib.sha256(again.onnx).hexdigest() == digest
    assert hashlib.sha256(changed.onnx).hexdigest() == digest
    assert first.manifest == changed.manifest
    later_model = train_direction_model(feature_frame(rewritten), NAMES, asset="X", horizon=5,
                                        as_of=AS_OF + dt.timedelta(days=35), config=SMALL)
    assert hashlib.sha256(later_model.onnx).hexdigest() != digest  # the test can tell models apart


_TRAIN_IN_A_PROCESS = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from nexus_assets_tests.core.test_ml_training import AS_OF, NAMES, SMALL, _closes
from nexus_assets.core.features import feature_frame
from nexus_assets.core.ml_training import train_direction_model
model = train_direction_model(feature_frame(_closes()), NAMES, asset="X", horizon=5, as_of=AS_OF, config=SMALL)
print(hashlib.sha256(model.onnx).hexdigest())
"""


@pytest.mark.slow  # two fresh processes
def test_the_model_file_has_the_same_bytes_in_every_process():
    """Processes with different string-hash seeds (as two runs of the pipeline have) write the same
    model bytes: skl2onnx's opset list once followed the seed's order of a set (seed 116 listed
    'ai.onnx.ml' first, seed 1 the main domain: about 3 processes in 100 wrote other bytes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    script = _TRAIN_IN_A_PROCESS.format(tests=root)
    digests = set()
    for seed in ("1", "116"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.add(done.stdout.strip())
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_onnx_predictions_equal_scikit_learn(frame):
    model = train_direction_model(frame, NAMES, asset="X", horizon=1, as_of=AS_OF, config=SMALL)
    x, _, _ = training_pairs(frame, NAMES, 1, AS_OF)
    session = ort.InferenceSession(model.onnx, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"features": x.astype(np.float32)})
    onnx_p = [o for o in outputs if np.asarray(o).ndim == 2][0][:, 1]
    sk_p = model.pipeline.predict_proba(x)[:, 1]
    np.testing.assert_allclose(onnx_p, sk_p, atol=2e-6)
    assert sk_p.std() > 1e-3  # not a constant model


def test_the_manifest_describes_the_split_and_both_models(frame):
    model = train_direction_model(frame, NAMES, asset="X", horizon=5, as_of=AS_OF, config=SMALL)
    m = model.manifest
    window = m["training_window"]
    assert window["rows"] == SMALL.window and window["purged_rows"] == 5
    assert window["fit_rows"] + window["purged_rows"] + window["validation_rows"] == window["rows"]
    assert window["last"] < AS_OF.isoformat() and window["first"] < window["validation_first"]
    assert set(m["validation"]) == {"mlp", "baseline_logistic"}
    for scores in m["validation"].values():
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["brier"] <= 1 and scores["rows"] == window["validation_rows"]
    assert m["hyperparameters"]["hidden_layers"] == [64, 32, 16] and m["features"] == NAMES
    assert {"scikit-learn", "skl2onnx", "onnxruntime"} <= set(m["libraries"])


def test_too_few_pairs_train_nothing(frame):
    assert train_direction_model(frame, NAMES, asset="X", horizon=1, as_of=dt.date(2018, 11, 1), config=SMALL) is None


@pytest.mark.parametrize("every", [1, 7, 28, 45])
def test_training_anchor_is_fixed_on_the_calendar(every):
    day = dt.date(2017, 12, 25)
    for offset in range(120):
        d = day + dt.timedelta(days=offset)
        anchor = training_anchor(d, every)
        assert anchor <= d and (d - anchor).days < every and (anchor - EPOCH).days % every == 0
    if every == 7:
        assert training_anchor(day, 7).weekday() == 0


def test_the_manifest_fingerprints_its_training_rows(frame):
    """The rows' hash in the manifest is the hash of the rows known by the training day: equal when
    recomputed, unchanged by later prices, different when a stored day was missing at training time (a
    backfill out of order), so ml_models trains such a model again (defs.ml._needs_training)."""
    names = model_features(False)
    model = train_direction_model(frame, names, asset="1_A", horizon=1, as_of=AS_OF, config=SMALL)
    recorded = model.manifest["training_window"]["sha256"]
    assert recorded == training_rows_sha256(*training_rows(frame, names, 1, AS_OF, SMALL))
    later = _closes().copy()
    later[later.index > pd.Timestamp(AS_OF)] *= 1.5
    assert recorded == training_rows_sha256(*training_rows(feature_frame(later), names, 1, AS_OF, SMALL))
    gap = _closes().drop(pd.Timestamp("2019-06-03"))
    assert recorded != training_rows_sha256(*training_rows(feature_frame(gap), names, 1, AS_OF, SMALL))
