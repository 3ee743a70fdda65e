"""The store and the encoders without a Dagster run: partitions written with the pipeline's own
writer on seeded frames; a rewrite is seen, hidden temporary files are not partitions, a range is
the concatenation of its days, and JSON/CSV carry every stored double exactly."""

import datetime as dt
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from upath import UPath

from nexus_assets.api.encoding import encode
from nexus_assets.api.queries import Answer, Params
from nexus_assets.api.store import Store
from nexus_assets.defs.storage import write_parquet_atomic

ASSET = "9001_SP500"
DAYS = [dt.date(2018, 3, 1) + dt.timedelta(days=i) for i in range(5)]


def ensembles(day: dt.date, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"date": pd.to_datetime([day] * 3), "horizon": [1, 3, 5],
                         "forecast": rng.normal(100, 5, 3), "best_child": ["a", None, "c"]})


@pytest.fixture
def store(tmp_path):
    for i, day in enumerate(DAYS):
        write_parquet_atomic(UPath(tmp_path) / "horizon_ensembles" / f"asset={ASSET}" / f"date={day}.parquet",
                             ensembles(day, i))
    return Store(str(tmp_path))


def test_days_skip_hidden_temporary_files_and_other_names(store, tmp_path):
    folder = tmp_path / "horizon_ensembles" / f"asset={ASSET}"
    (folder / ".date=2018-03-09.parquet.tmp-123").write_bytes(b"partial")
    (folder / "date=not-a-day.parquet").write_bytes(b"x")
    assert store.days("horizon_ensembles", ASSET) == tuple(DAYS)
    assert store.days("horizon_ensembles", "OTHER") == () and store.latest("horizon_ensembles", ASSET) == DAYS[-1]


def test_a_rewritten_partition_is_read_again_and_its_hash_changes(store, tmp_path):
    first = store.read("horizon_ensembles", ASSET, DAYS[0])
    assert store.read("horizon_ensembles", ASSET, DAYS[0]) is first  # cached while the file is unchanged
    path = UPath(tmp_path) / "horizon_ensembles" / f"asset={ASSET}" / f"date={DAYS[0]}.parquet"
    write_parquet_atomic(path, ensembles(DAYS[0], 99))
    second = store.read("horizon_ensembles", ASSET, DAYS[0])
    assert second.sha256 != first.sha256
    pd.testing.assert_frame_equal(second.frame, pd.read_parquet(str(path)))
    assert store.read("horizon_ensembles", ASSET, dt.date(2019, 1, 1)) is None


def test_a_range_is_its_days_in_order_and_records_what_it_read(store, tmp_path):
    seen = []
    parts = store.read_range("horizon_ensembles", ASSET, DAYS[1], DAYS[3], seen)
    assert [p.day for p in parts] == DAYS[1:4]
    for part in parts:
        path = tmp_path / "horizon_ensembles" / f"asset={ASSET}" / f"date={part.day}.parquet"
        pd.testing.assert_frame_equal(part.frame, pd.read_parquet(path))
    assert len(seen) == 1 + 3  # the folder listing and each file, to tell later whether an answer still holds


def answer_of(frame: pd.DataFrame) -> Answer:
    return Answer(endpoint="t", asset=ASSET, as_of=DAYS[0], frame=frame, total=len(frame), params=Params())


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=30))
def test_json_and_csv_carry_every_double_exactly_and_non_finite_as_null(values):
    frame = pd.DataFrame({"x": np.array(values, dtype="float64")})
    data = json.loads(encode(answer_of(frame), "json"))["data"]
    for value, row in zip(values, data):
        assert row["x"] == (value if math.isfinite(value) else None)
        if math.isfinite(value):
            assert math.copysign(1.0, row["x"]) == math.copysign(1.0, value)  # -0.0 stays -0.0
    back = pd.read_csv(io.BytesIO(encode(answer_of(frame), "csv")))["x"]
    for value, read in zip(values, back):
        assert read == value or (math.isnan(value) and math.isnan(read)) or (math.isinf(value) and read == value)


def test_dates_are_days_in_json_and_csv_and_timestamps_in_parquet():
    frame = pd.DataFrame({"date": pd.to_datetime(["2018-03-01", None]), "name": ["a", None]})
    body = json.loads(encode(answer_of(frame), "json"))
    assert body["data"] == [{"date": "2018-03-01", "name": "a"}, {"date": None, "name": None}]
    assert encode(answer_of(frame), "csv").decode().splitlines() == ["date,name", "2018-03-01,a", ","]
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(encode(answer_of(frame), "parquet"))), frame)


def test_an_object_store_is_read_on_every_request(tmp_path):
    """An fsspec root (here memory://) has no file identity to trust: a rewrite shows at once."""
    from fastapi.testclient import TestClient

    from nexus_assets.api.app import create_app
    from nexus_assets.api.keys import KeyStore
    from nexus_assets.catalog import load_catalog
    from nexus_assets_tests.defs.conftest import sandbox_catalog_text

    root = f"memory://api-test-{tmp_path.name}"
    path = UPath(root) / "horizon_ensembles" / f"asset={ASSET}" / f"date={DAYS[0]}.parquet"
    write_parquet_atomic(path, ensembles(DAYS[0], 1))
    (tmp_path / "catalog.toml").write_text(sandbox_catalog_text(keys=(ASSET,)))
    keys = KeyStore(tmp_path / "instance")
    key = keys.create("k", None)
    store = Store(root)
    assert not store.local and store.days("horizon_ensembles", ASSET) == (DAYS[0],)
    client = TestClient(create_app(catalog=load_catalog(tmp_path / "catalog.toml"), store=store, keys=keys))
    first = client.get(f"/api/v1/forecast/{ASSET}", headers={"X-API-Key": key})
    assert first.status_code == 200 and first.json()["data"][0]["forecast"] == ensembles(DAYS[0], 1)["forecast"][0]
    write_parquet_atomic(path, ensembles(DAYS[0], 2))
    second = client.get(f"/api/v1/forecast/{ASSET}", headers={"X-API-Key": key})
    assert second.json()["data"][0]["forecast"] == ensembles(DAYS[0], 2)["forecast"][0]
    assert second.headers["etag"] != first.headers["etag"]
