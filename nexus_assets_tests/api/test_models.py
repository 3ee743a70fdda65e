"""The model endpoints (docs/api.md#models-and-predictions): ``/models`` lists the registry's
manifests within the key's scope, ``/predict/<asset>?date=`` the stored ml_predictions beside the
ml_signals of that date, with the other routes' auth, errors and ETags. The data is written
straight into a temporary data directory (the stored layout), so these tests need no pipeline run."""

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.api.app import create_app
from nexus_assets.api.keys import KeyStore
from nexus_assets.api.store import Store
from nexus_assets.catalog import load_catalog
from nexus_assets.core.contract import ML_PREDICTIONS
from nexus_assets.core.ml_signals import ml_signals
from nexus_assets.defs.partitions import partition_key
from nexus_assets.defs.storage import partition_path, write_parquet_atomic
from nexus_assets.ml_registry import write_model
from nexus_assets_tests.core.ml_data import ml_predictions
from nexus_assets_tests.defs.conftest import sandbox_catalog_text

SP, VIX = "9001_SP500", "9004_VIX"
DAY = dt.date(2025, 1, 20)  # a day with a model (the seeded data's first 8 days have none)
NO_MODEL_DAY = dt.date(2025, 1, 2)


def manifest(asset: str, version: str, horizon: int, valid_from: str) -> dict:
    return {"version": version, "asset": asset, "horizon": horizon, "valid_from": valid_from,
            "trained_on": valid_from, "source": "trained", "features": ["return_1", "rsi_14"],
            "training_window": {"first": "2024-01-02", "last": valid_from}, "hyperparameters": {"seed": 0},
            "validation": {"brier": 0.25}, "libraries": {"scikit-learn": "1.6"}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "catalog.toml").write_text(sandbox_catalog_text(keys=(SP, VIX)))
    catalog = load_catalog(root / "catalog.toml")
    data = str(root / "data")
    predictions = ml_predictions(days=20, seed=3)
    signals = ml_signals(predictions, threshold=0.6)
    for asset in (SP, VIX):
        for stamp in sorted(set(predictions["date"]))[:-1]:  # the last day: predictions only
            day = stamp.date()
            write_parquet_atomic(partition_path(data, ["ml_predictions"], partition_key(asset, day)),
                                 ML_PREDICTIONS.validate(predictions[predictions["date"] == stamp].reset_index(drop=True)))
            write_parquet_atomic(partition_path(data, ["ml_signals"], partition_key(asset, day)),
                                 signals[signals["date"] == stamp].reset_index(drop=True))
        last = sorted(set(predictions["date"]))[-1]
        write_parquet_atomic(partition_path(data, ["ml_predictions"], partition_key(asset, last.date())),
                             predictions[predictions["date"] == last].reset_index(drop=True))
    write_model(data, manifest(SP, "2025-01-13-h1", 1, "2025-01-13"), b"model one")
    write_model(data, manifest(SP, "2025-01-13-h5", 5, "2025-01-13"), b"model five")
    write_model(data, manifest(VIX, "2025-01-13-h1", 1, "2025-01-13"), b"model vix")
    write_model(data, manifest("not_in_catalog", "x1", 1, "2025-01-13"), b"stray")
    keys = KeyStore(root / "instance")
    app = create_app(catalog=catalog, store=Store(data), keys=keys, clock=lambda: DAY)
    return {"app": app, "data": data, "predictions": predictions, "signals": signals,
            "all": keys.create("all", None, "100000/minute"), "sp": keys.create("sp", (SP,), "100000/minute"),
            "slow": keys.create("slow", None, "2/minute")}


@pytest.fixture(scope="module")
def client(served):
    from fastapi.testclient import TestClient

    with TestClient(served["app"], raise_server_exceptions=False) as test_client:
        yield test_client


def get(client, served, path, key="all", **headers):
    return client.get(f"/api/v1/{path}", headers={"X-API-Key": served[key], **headers})


def test_models_lists_the_manifests_the_key_may_read(client, served):
    every = get(client, served, "models").json()
    assert every["endpoint"] == "models" and every["total"] == 3
    assert [(m["asset"], m["version"]) for m in every["models"]] == [
        (SP, "2025-01-13-h1"), (SP, "2025-01-13-h5"), (VIX, "2025-01-13-h1")]  # no asset outside the catalog
    first = every["models"][0]
    assert first["features"] == ["return_1", "rsi_14"] and len(first["sha256"]) == 64 and first["file"] == "model.onnx"
    scoped = get(client, served, "models", key="sp").json()
    assert {m["asset"] for m in scoped["models"]} == {SP}


def test_models_etag_changes_when_a_model_is_registered(client, served, tmp_path):
    before = get(client, served, "models")
    assert get(client, served, "models", **{"If-None-Match": before.headers["ETag"]}).status_code == 304
    write_model(served["data"], manifest(VIX, "2025-01-20-h5", 5, "2025-01-20"), b"another")
    after = get(client, served, "models")
    assert after.headers["ETag"] != before.headers["ETag"] and after.json()["total"] == 4


def test_models_refuses_parameters_keys_in_the_query_and_missing_keys(client, served):
    assert get(client, served, "models?asset=x").json()["code"] == "BAD_PARAMETER"
    assert client.get("/api/v1/models").status_code == 401
    assert client.get(f"/api/v1/models?key={served['all']}").json()["code"] == "KEY_IN_QUERY"


def test_predict_joins_the_days_predictions_and_signals(client, served):
    body = get(client, served, f"predict/{SP}?date={DAY}").json()
    assert body["as_of"] == DAY.isoformat() and body["asset"] == SP
    rows = pd.DataFrame(body["data"])
    assert list(rows.columns) == ["date", "horizon", "model_version", "model_sha256", "probability_up", "confidence",
                                  "price", "threshold", "signal", "position", "reason"]
    want = served["signals"][served["signals"]["date"] == pd.Timestamp(DAY)]
    assert rows["horizon"].tolist() == want["horizon"].tolist() == [1, 5]
    assert rows["signal"].tolist() == want["signal"].tolist()
    assert rows["probability_up"].tolist() == pytest.approx(want["probability_up"].tolist())
    assert (rows["model_version"] != "").all()


def test_predict_on_a_day_without_a_model_says_so(client, served):
    rows = get(client, served, f"predict/{SP}?date={NO_MODEL_DAY}").json()["data"]
    assert [(r["model_version"], r["probability_up"], r["signal"], r["reason"]) for r in rows] == [
        ("", None, "HOLD", "no_model")] * 2


def test_predict_errors_have_the_common_shape(client, served):
    cases = [
        (f"predict/{SP}?date=2024-01-01", 404, "DATE_NOT_MATERIALISED"),
        (f"predict/{SP}?date=2025-13-01", 400, "BAD_PARAMETER"),
        (f"predict/{SP}?as_of={DAY}", 400, "BAD_PARAMETER"),  # predict names its date `date`
        (f"predict/nope?date={DAY}", 404, "ASSET_NOT_FOUND"),
    ]
    for path, status, code in cases:
        response = get(client, served, path)
        assert response.status_code == status, path
        assert set(response.json()) == {"error", "code", "message", "timestamp"} and response.json()["code"] == code
    assert get(client, served, f"predict/{VIX}?date={DAY}", key="sp").json()["code"] == "FORBIDDEN"
    assert client.get(f"/api/v1/predict/{SP}?date={DAY}").status_code == 401


def test_predict_needs_both_partitions(client, served):
    last = max(served["predictions"]["date"]).date()  # ml_predictions stored, ml_signals not
    response = get(client, served, f"predict/{SP}?date={last}")
    assert response.status_code == 404 and response.json()["code"] == "DATE_NOT_MATERIALISED"
    latest = get(client, served, f"predict/{SP}").json()  # the default: the latest ml_signals date
    assert latest["as_of"] == (sorted(set(served["predictions"]["date"]))[-2]).date().isoformat()


def test_predict_in_csv_and_the_rate_limit(client, served):
    csv = get(client, served, f"predict/{SP}?date={DAY}&format=csv")
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.splitlines()[0].startswith("date,horizon")
    statuses = [get(client, served, "models", key="slow").status_code for _ in range(3)]
    assert statuses[:2] == [200, 200] and statuses[2] == 429


def test_ml_accuracy_route_is_documented(client, served):
    document = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/models", "/api/v1/predict/{asset}", "/api/v1/ml-accuracy/{asset}"} <= set(document["paths"])
    names = [p["name"] for p in document["paths"]["/api/v1/predict/{asset}"]["get"]["parameters"]]
    assert "date" in names and "as_of" not in names
    assert document["paths"]["/api/v1/models"]["get"]["parameters"] == []
