"""The model endpoints (docs/api.md#models-and-predictions): ``/models`` lists the registry's
manifests within the key's scope, ``/predict/<asset>?date=`` the stored ml_predictions beside the
ml_signals of that date, ``/ml-calibration/<asset>`` the metrics step's calibration table, and the
record routes' ``signal`` filter on the ML signals, with the other routes' auth, errors and ETags. The data is written
straight into a temporary data directory (the stored layout), so these tests need no pipeline run."""

import datetime as dt
import io
import json
import math
import re

import pandas as pd
import pytest

from nexus_assets.api.app import create_app
from nexus_assets.api.keys import KeyStore
from nexus_assets.api.store import Store
from nexus_assets.catalog import load_catalog
from nexus_assets.core.contract import ML_ACCURACY, ML_CALIBRATION, ML_PREDICTIONS
from nexus_assets.core.metrics import RECORD_INPUT_COLUMNS, record
from nexus_assets.core.ml_accuracy import accuracy
from nexus_assets.core.ml_signals import ml_signals
from nexus_assets.defs.partitions import partition_key
from nexus_assets.defs.storage import partition_path, write_parquet_atomic
from nexus_assets.ml_registry import write_model
from nexus_assets_tests.core.ml_data import ml_predictions
from nexus_assets_tests.defs.conftest import sandbox_catalog_text

SP, VIX = "9001_SP500", "9004_VIX"
DAY = dt.date(2025, 1, 20)  # a day with a model (the seeded data's first 8 days have none)
NO_MODEL_DAY = dt.date(2025, 1, 2)
SATURDAY = dt.date(2025, 1, 18)  # stored as the pipeline stores a day without a close: empty partitions
LATER = dt.date(2025, 1, 23)  # the latest metrics partition (DAY is the other)
RECORD_TABLES = ("statistics", "trades", "daily", "ml_accuracy", "ml_calibration")


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
        for name, frame in (("ml_predictions", predictions), ("ml_signals", signals)):
            write_parquet_atomic(partition_path(data, [name], partition_key(asset, SATURDAY)),
                                 frame.iloc[0:0].reset_index(drop=True))
        last = sorted(set(predictions["date"]))[-1]
        write_parquet_atomic(partition_path(data, ["ml_predictions"], partition_key(asset, last.date())),
                             predictions[predictions["date"] == last].reset_index(drop=True))
    # the metrics step's tables of SP for two days, from the core on the ML signals alone (at a lower
    # threshold than the catalog's, so that both horizons trade in these few days)
    active = ml_signals(predictions, threshold=0.3)
    for day in (DAY, LATER):
        known = active[active["date"] <= pd.Timestamp(day)]
        tables = {**record(known[list(RECORD_INPUT_COLUMNS)], as_of=[day], calendar="exchange", cost_bps=5.0,
                           horizons=[1, 5])[day], **accuracy(known, as_of=[day])[day]}
        ML_ACCURACY.validate(tables["ml_accuracy"])
        ML_CALIBRATION.validate(tables["ml_calibration"])
        for name in RECORD_TABLES:
            write_parquet_atomic(partition_path(data, ["metrics", name], partition_key(SP, day)), tables[name])
    write_model(data, manifest(SP, "2025-01-13-h1", 1, "2025-01-13"), b"model one")
    write_model(data, manifest(SP, "2025-01-13-h5", 5, "2025-01-13"), b"model five")
    write_model(data, manifest(VIX, "2025-01-13-h1", 1, "2025-01-13"), b"model vix")
    write_model(data, manifest("not_in_catalog", "x1", 1, "2025-01-13"), b"stray")
    keys = KeyStore(root / "instance")
    app = create_app(catalog=catalog, store=Store(data), keys=keys, clock=lambda: DAY)
    return {"app": app, "data": data, "predictions": predictions, "signals": signals,
            "all": keys.create("all", None, "100000/minute"), "sp": keys.create("sp", (SP,), "100000/minute"),
            "slow": keys.create("slow", None, "2/minute"), "calm": keys.create("calm", None, "2/minute")}


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


def test_a_broken_manifest_is_listed_as_unreadable_and_hides_nothing_else(served, tmp_path):
    """Another asset's broken manifest changes nothing for a key scoped away from it; a key that may
    read it gets the readable models and the broken one named (asset, version, reason), never a
    server path; mending it changes the ETag."""
    import shutil

    from fastapi.testclient import TestClient

    data = tmp_path / "data"
    shutil.copytree(served["data"], data)
    folder = data / "ml_registry" / VIX / "2025-01-13-broken"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"version": ')
    incomplete = data / "ml_registry" / VIX / "2025-01-13-incomplete"  # parses, its folder's, lacks fields
    incomplete.mkdir()
    (incomplete / "manifest.json").write_text(json.dumps({"asset": VIX, "version": "2025-01-13-incomplete"}))
    keys = KeyStore(tmp_path / "instance")
    scoped, every = keys.create("sp", (SP,), "100000/minute"), keys.create("all", None, "100000/minute")
    (tmp_path / "catalog.toml").write_text(sandbox_catalog_text(keys=(SP, VIX)))
    app = create_app(catalog=load_catalog(tmp_path / "catalog.toml"), store=Store(str(data)), keys=keys, clock=lambda: DAY)
    with TestClient(app, raise_server_exceptions=False) as client:
        sp = client.get("/api/v1/models", headers={"X-API-Key": scoped})
        assert sp.status_code == 200 and sp.json()["unreadable"] == [] and sp.json()["total"] == 2
        answer = client.get("/api/v1/models", headers={"X-API-Key": every})
        assert answer.status_code == 200 and answer.json()["total"] == 3
        problem, partial = answer.json()["unreadable"]
        assert (problem["asset"], problem["version"]) == (VIX, "2025-01-13-broken")
        assert "unreadable manifest" in problem["reason"] and str(tmp_path) not in answer.text
        assert partial["version"] == "2025-01-13-incomplete" and "no 'horizon'" in partial["reason"]
        shutil.rmtree(folder)
        shutil.rmtree(incomplete)
        mended = client.get("/api/v1/models", headers={"X-API-Key": every})
        assert mended.json()["unreadable"] == [] and mended.headers["ETag"] != answer.headers["ETag"]


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


def test_predict_on_a_day_without_a_close_answers_no_rows(client, served):
    """A weekend (or a holiday, or a session without a price) has stored, empty partitions: 200 and
    no rows, as docs/api.md says, not a 404 as for a date that was never materialised."""
    assert pd.Timestamp(SATURDAY) not in set(served["predictions"]["date"])
    response = get(client, served, f"predict/{SP}?date={SATURDAY}")
    body = response.json()
    assert response.status_code == 200 and body["as_of"] == SATURDAY.isoformat()
    assert body["page"]["total"] == 0 and body["data"] == [] and body["columns"][:2] == ["date", "horizon"]


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


def test_predict_without_a_date_answers_the_latest_day_with_a_prediction(served, tmp_path):
    """A weekend after the last session (what the daily schedule stores from Saturday on) has empty
    partitions; a client that asks for "the latest" gets the last day with predictions, not an empty
    table. Asked by date, the weekend is still 200 with no rows."""
    import shutil

    from fastapi.testclient import TestClient

    data = tmp_path / "data"
    shutil.copytree(served["data"], data)
    latest = sorted(set(served["signals"]["date"]))[-2].date()  # the last day with both partitions
    weekend = [latest + dt.timedelta(days=k) for k in range(1, 9) if (latest + dt.timedelta(days=k)).weekday() >= 5]
    for day in weekend:
        for name, frame in (("ml_predictions", served["predictions"]), ("ml_signals", served["signals"])):
            write_parquet_atomic(partition_path(str(data), [name], partition_key(SP, day)), frame.iloc[0:0].reset_index(drop=True))
    (tmp_path / "catalog.toml").write_text(sandbox_catalog_text(keys=(SP, VIX)))
    keys = KeyStore(tmp_path / "instance")
    key = keys.create("all", None, "100000/minute")
    app = create_app(catalog=load_catalog(tmp_path / "catalog.toml"), store=Store(str(data)), keys=keys, clock=lambda: DAY)
    with TestClient(app, raise_server_exceptions=False) as client:
        body = client.get(f"/api/v1/predict/{SP}", headers={"X-API-Key": key}).json()
        assert body["as_of"] == latest.isoformat() and body["page"]["total"] == 2
        asked = client.get(f"/api/v1/predict/{SP}?date={weekend[-1]}", headers={"X-API-Key": key}).json()
        assert asked["as_of"] == weekend[-1].isoformat() and asked["page"]["total"] == 0


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


def stored(served, name: str, day: dt.date) -> pd.DataFrame:
    return pd.read_parquet(partition_path(served["data"], ["metrics", name], partition_key(SP, day)))


def plain(value):
    """The reference conversion of one stored value to JSON: a date as its ISO day, NaN and NaT as null."""
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if value is None or value is pd.NaT:
        return None
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def json_rows(frame: pd.DataFrame) -> list[dict]:
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_ml_calibration_answers_the_stored_partition(client, served):
    for day in (DAY, LATER):
        body = get(client, served, f"ml-calibration/{SP}?as_of={day}").json()
        want = stored(served, "ml_calibration", day)
        assert body["endpoint"] == "ml-calibration" and body["as_of"] == day.isoformat()
        assert body["columns"] == list(want.columns) and body["page"]["total"] == len(want) > 0
        assert body["data"] == json_rows(want)
    latest = get(client, served, f"ml-calibration/{SP}").json()
    assert latest["as_of"] == LATER.isoformat()  # no as_of: the latest stored partition
    versions = get(client, served, f"ml-calibration/{SP}?as_of={DAY}&scope=version").json()["data"]
    want = stored(served, "ml_calibration", DAY)
    assert versions == json_rows(want[want["scope"] == "version"]) and len(versions) < len(want)
    csv = get(client, served, f"ml-calibration/{SP}?as_of={DAY}&format=csv")
    assert csv.headers["content-type"].startswith("text/csv")
    pd.testing.assert_series_equal(pd.read_csv(io.StringIO(csv.text))["observed_frequency"],
                                   want["observed_frequency"], check_exact=True)


def test_ml_calibration_has_the_routes_auth_errors_etag_and_rate_limit(client, served):
    cases = [
        (f"ml-calibration/{SP}?as_of=2024-01-01", "all", 404, "DATE_NOT_MATERIALISED"),
        (f"ml-calibration/{VIX}", "all", 404, "DATE_NOT_MATERIALISED"),  # no partition stored for VIX
        (f"ml-calibration/{VIX}", "sp", 403, "FORBIDDEN"),
        ("ml-calibration/nope", "all", 404, "ASSET_NOT_FOUND"),
        (f"ml-calibration/{SP}?scope=pooled", "all", 400, "BAD_PARAMETER"),
        (f"ml-calibration/{SP}?start={DAY}", "all", 400, "BAD_PARAMETER"),  # one partition: no range
        (f"ml-calibration/{SP}?date={DAY}", "all", 400, "BAD_PARAMETER"),
    ]
    for path, key, status, code in cases:
        response = get(client, served, path, key=key)
        assert response.status_code == status, path
        assert set(response.json()) == {"error", "code", "message", "timestamp"} and response.json()["code"] == code
    assert client.get(f"/api/v1/ml-calibration/{SP}").status_code == 401
    first = get(client, served, f"ml-calibration/{SP}?as_of={DAY}")
    assert get(client, served, f"ml-calibration/{SP}?as_of={DAY}",
               **{"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert get(client, served, f"ml-calibration/{SP}?as_of={LATER}").headers["ETag"] != first.headers["ETag"]
    statuses = [get(client, served, f"ml-calibration/{SP}", key="calm").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(("route", "table"), [("metrics", "statistics"), ("trades", "trades"), ("equity", "daily")])
def test_the_signal_filter_takes_the_ml_signals(client, served, route, table):
    want = stored(served, table, DAY)
    assert {"ml_h1", "ml_h5"} <= set(want["signal"])
    for signal in ("ml_h1", "ml_h5"):
        body = get(client, served, f"{route}/{SP}?as_of={DAY}&signal={signal}&limit=5000").json()
        assert body["data"] == json_rows(want[want["signal"] == signal])
    other = get(client, served, f"{route}/{SP}?as_of={DAY}&signal=ml_h8")  # well formed, but not an ML horizon of SP
    assert other.status_code == 400 and "has ML signals ml_h1, ml_h5" in other.json()["message"]
    for bad in ("ml_hx", "ml_h0", "ml_h01", "ML_H1", "ml_h", "ml_h1 ", "ml_h-1", "raw,ml_h1", "xml_h1", "ml_h1000",
                "ml_h" + "9" * 10_000):
        response = get(client, served, f"{route}/{SP}?as_of={DAY}&signal={bad}")
        assert response.status_code == 400 and response.json()["code"] == "BAD_PARAMETER", bad
        assert "raw, optimised, ml_h<horizon>" in response.json()["message"]


def test_the_document_describes_ml_calibration_and_the_ml_signal_filter(client):
    document = client.get("/api/v1/openapi.json").json()
    parameters = {p["name"]: p for p in document["paths"]["/api/v1/ml-calibration/{asset}"]["get"]["parameters"]}
    assert parameters["scope"]["schema"] == {"type": "string", "enum": ["all", "version"]}
    for route in ("metrics", "trades", "equity"):
        signal = next(p for p in document["paths"][f"/api/v1/{route}/{{asset}}"]["get"]["parameters"]
                      if p["name"] == "signal")
        listed, shaped = signal["schema"]["anyOf"]
        assert listed["enum"] == ["raw", "optimised"]
        pattern = re.compile(shaped["pattern"])
        assert [bool(pattern.search(v)) for v in ("ml_h1", "ml_h250", "ml_h0", "ml_h01", "xml_h1", "ml_h1x", "ml_h1000")
                ] == [True, True, False, False, False, False, False]
