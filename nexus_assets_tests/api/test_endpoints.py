"""Every endpoint against the stored tables of a small materialised catalog: the values a client
gets, in JSON, CSV and Parquet, are the values of the Parquet files (compared with a plain
row-by-row conversion, not the API's own encoder)."""

import datetime as dt
import io
import math

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter

from nexus_assets.core.contract import CONTRACT_VERSION
from nexus_assets_tests.api.conftest import FIRST, LAST, SP, TODAY, VIX, VIX_LAST

pytestmark = pytest.mark.slow  # integration: a materialised catalog

API = "/api/v1"
JUNE = dt.date(2018, 6, 1)


def stored(served, table: str, day: dt.date, asset: str = SP) -> pd.DataFrame:
    location = {"horizon_ensembles": "horizon_ensembles", "signals": "signals/signals", "slopes": "signals/slopes",
                "leaderboard": "horizon_search/leaderboard", "statistics": "metrics/statistics",
                "trades": "metrics/trades", "daily": "metrics/daily"}[table]
    return pd.read_parquet(served.data_dir / location / f"asset={asset}" / f"date={day}.parquet")


def plain(value):
    """The reference conversion of one stored value to what JSON should carry."""
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.date().isoformat()
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
    return value


def rows(frame: pd.DataFrame, columns=None) -> list[dict]:
    columns = list(columns or frame.columns)
    return [{c: plain(frame.iloc[i][c]) for c in columns} for i in range(len(frame))]


def get(client, path, **params):
    response = client.get(f"{API}/{path}", params=params)
    assert response.status_code == 200, response.text
    return response


def test_forecast_of_a_day_and_the_latest_by_default(client, served):
    body = get(client, f"forecast/{SP}", as_of=str(JUNE)).json()
    expected = stored(served, "horizon_ensembles", JUNE)
    assert len(expected) == 5 and body["as_of"] == str(JUNE) and body["columns"] == list(expected.columns)
    assert body["data"] == rows(expected)
    latest = get(client, f"forecast/{SP}").json()
    assert latest["as_of"] == str(LAST) and latest["data"] == rows(stored(served, "horizon_ensembles", LAST))


def test_forecast_over_a_range_reads_each_partition_and_never_past_as_of(client, served):
    body = get(client, f"forecast/{SP}", start="2018-05-28", end="2018-06-30", as_of="2018-06-05").json()
    days = [dt.date(2018, 5, 28) + dt.timedelta(days=i) for i in range(9)]  # 28 May .. 5 June
    expected = pd.concat([stored(served, "horizon_ensembles", d) for d in days], ignore_index=True)
    assert body["end"] == "2018-06-05" and body["data"] == rows(expected)


def test_signals_history_from_the_first_partition_to_as_of(client, served):
    body = get(client, f"signals/{SP}", as_of=str(JUNE), variant="raw").json()
    days = [FIRST + dt.timedelta(days=i) for i in range((JUNE - FIRST).days + 1)]
    frames = [stored(served, "signals", d) for d in days]
    expected = pd.concat([f for f in frames if len(f)], ignore_index=True)
    expected = expected[expected["variant"] == "raw"]
    assert body["start"] == str(FIRST) and body["page"]["total"] == len(expected) > 40
    assert body["data"] == rows(expected)


def test_signal_is_one_day_and_the_warm_up_is_insufficient_data(client, served):
    body = get(client, f"signal/{SP}", as_of=str(JUNE)).json()
    assert body["data"] == rows(stored(served, "signals", JUNE)) and {r["variant"] for r in body["data"]} == {
        "raw", "optimised"}
    early = client.get(f"{API}/signal/{SP}", params={"as_of": "2018-01-10"})
    assert early.status_code == 404 and early.json()["code"] == "INSUFFICIENT_DATA"
    assert "warm-up" in early.json()["message"]
    saturday = JUNE + dt.timedelta(days=(5 - JUNE.weekday()) % 7)  # a stored day without a session
    for endpoint in ("signal", "horizons"):
        weekend = client.get(f"{API}/{endpoint}/{SP}", params={"as_of": str(saturday)})
        assert weekend.status_code == 404 and weekend.json()["code"] == "INSUFFICIENT_DATA"
        assert "no trading session" in weekend.json()["message"] and "warm-up" not in weekend.json()["message"]
    assert client.get(f"{API}/signal/{SP}", params={"start": "2018-06-01"}).status_code == 400


def test_horizons_compare_each_forecast_with_the_price_and_name_the_signals_horizons(client, served):
    body = get(client, f"horizons/{SP}", as_of=str(LAST)).json()
    ensembles = stored(served, "horizon_ensembles", LAST)
    signals = stored(served, "signals", LAST).set_index("variant")
    expected = []
    for _, row in ensembles.iterrows():
        if pd.isna(row["forecast"]):
            continue
        direction = "above" if row["forecast"] > row["price"] else "below" if row["forecast"] < row["price"] else "equal"
        expected.append({
            "date": str(LAST), "horizon": int(row["horizon"]), "price": row["price"], "forecast": row["forecast"],
            "change": row["forecast"] / row["price"] - 1, "direction": direction,
            "in_raw": str(row["horizon"]) in signals.loc["raw", "horizons"].split(","),
            "in_optimised": str(row["horizon"]) in signals.loc["optimised", "horizons"].split(","),
        })
    assert body["data"] == expected and len(expected) == 5


def test_forecast_fan_and_ensemble_config(client, served):
    ensembles = stored(served, "horizon_ensembles", JUNE)
    fan = get(client, f"forecast-fan/{SP}", as_of=str(JUNE)).json()
    assert fan["data"] == rows(ensembles, ["date", "horizon", "price", "forecast", "p05", "p25", "p75", "p95"])
    config = get(client, f"ensemble-config/{SP}", as_of=str(JUNE)).json()
    columns = ["date", "horizon", "mode", "strategy", "aggregator", "quantile", "n_selected", "n_models", "best_child",
               "best_child_forecast"]
    assert config["data"] == rows(ensembles, columns)
    entry = served.pipe.settings.catalog()[SP]
    assert config["config"]["selection_mode"] == entry.selection_mode == "point_in_time"
    assert config["config"]["signal_threshold"] == entry.signal_threshold and config["config"]["lookback"] == 60


def test_heatmap_by_variant(client, served):
    body = get(client, f"heatmap/{SP}", as_of=str(JUNE), variant="optimised").json()
    slopes = stored(served, "slopes", JUNE)
    assert body["data"] == rows(slopes[slopes["variant"] == "optimised"]) and body["data"]


def test_metrics_trades_and_equity_are_the_record_as_of_the_date(client, served):
    stats = stored(served, "statistics", JUNE)
    body = get(client, f"metrics/{SP}", as_of=str(JUNE), basis="legacy", signal="raw").json()
    assert body["data"] == rows(stats[(stats["basis"] == "legacy") & (stats["signal"] == "raw")]) and body["data"]
    assert get(client, f"metrics/{SP}", as_of=str(JUNE)).json()["page"]["total"] == len(stats)

    trades = stored(served, "trades", LAST)
    body = get(client, f"trades/{SP}", as_of=str(LAST), start="2018-05-01", status="closed").json()
    expected = trades[(trades["entry_date"] >= "2018-05-01") & (trades["status"] == "closed")]
    assert body["data"] == rows(expected) and len(expected) > 3

    daily = stored(served, "daily", JUNE)  # the record as of 1 June: its own rows, not today's
    body = get(client, f"equity/{SP}", as_of=str(JUNE), signal="optimised", start="2018-05-01", end="2018-05-31").json()
    expected = daily[(daily["signal"] == "optimised") & (daily["date"] >= "2018-05-01") & (daily["date"] <= "2018-05-31")]
    assert body["data"] == rows(expected) and len(expected) >= 20


def test_the_record_routes_filter_the_ml_signals_and_serve_their_accuracy(client, served):
    stats, daily = stored(served, "statistics", LAST), stored(served, "daily", LAST)
    assert {"ml_h1", "ml_h5"} <= set(stats["signal"])  # the pipeline's ML record, beside the slope signals
    body = get(client, f"metrics/{SP}", as_of=str(LAST), signal="ml_h5", basis="point_in_time").json()
    assert body["data"] == rows(stats[(stats["signal"] == "ml_h5") & (stats["basis"] == "point_in_time")]) and body["data"]
    body = get(client, f"equity/{SP}", as_of=str(LAST), signal="ml_h1", start="2018-06-01", limit=5000).json()
    assert body["data"] == rows(daily[(daily["signal"] == "ml_h1") & (daily["date"] >= "2018-06-01")]) and body["data"]
    for table in ("ml_accuracy", "ml_calibration"):
        want = pd.read_parquet(served.data_dir / "metrics" / table / f"asset={SP}" / f"date={LAST}.parquet")
        body = get(client, f"{table.replace('_', '-')}/{SP}", limit=5000).json()
        assert body["as_of"] == str(LAST) and body["data"] == rows(want) and body["data"]


def test_leaderboard_of_a_day_with_a_winner(client, served):
    board = stored(served, "leaderboard", LAST)
    assert len(board) == 20
    body = get(client, f"leaderboard/{SP}").json()
    assert body["data"] == rows(board) and body["data"][0]["rank"] == 1


def test_status_reports_freshness_watermark_and_contract(client, served):
    [record] = served.pipe.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("qml_models"), asset_partitions=[f"{SP}|{LAST}"]), limit=1).records
    watermark = record.asset_materialization.metadata["upstream_watermark"].value
    body = get(client, f"status/{SP}").json()
    assert body["as_of"] == str(LAST) and body["contract_version"] == CONTRACT_VERSION
    assert body["upstream_watermark"] == watermark
    assert body["latest"] == {"horizon_ensembles": str(LAST), "signals": str(LAST), "leaderboard": str(LAST),
                              "daily": str(LAST)}
    assert body["freshness"]["judged_on"] == str(TODAY)
    past = get(client, f"status/{SP}", as_of=str(JUNE)).json()
    assert past["freshness"]["judged_on"] == "2018-06-02" and past["upstream_watermark"] is None  # no page that day
    assert client.get(f"{API}/status/{SP}", params={"format": "csv"}).status_code == 400


def test_assets_lists_what_the_key_may_see(client, served):
    body = get(client, "assets").json()
    assert [r["asset"] for r in body["data"]] == [SP, VIX]
    sp = body["data"][0]
    assert sp["latest_date"] == str(LAST) and sp["first_date"] == str(FIRST) and body["data"][1]["latest_date"] == str(VIX_LAST)
    scoped = client.get(f"{API}/assets", headers={"X-API-Key": served.key_vix}).json()
    assert [r["asset"] for r in scoped["data"]] == [VIX]


def test_csv_and_parquet_carry_the_same_values(client, served):
    expected = stored(served, "horizon_ensembles", JUNE)
    text = get(client, f"forecast/{SP}", as_of=str(JUNE), format="csv")
    assert text.headers["content-type"].startswith("text/csv")
    back = pd.read_csv(io.StringIO(text.text), parse_dates=["date"])
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    for how in ({"format": "parquet"}, {}):
        headers = {} if how else {"Accept": "application/vnd.apache.parquet"}
        response = client.get(f"{API}/forecast/{SP}", params={"as_of": str(JUNE), **how}, headers=headers)
        assert response.headers["content-type"] == "application/vnd.apache.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(response.content)), expected)
    via_accept = client.get(f"{API}/forecast/{SP}", params={"as_of": str(JUNE)}, headers={"Accept": "text/csv"})
    assert via_accept.text == text.text


def test_paging_walks_the_whole_table(client, served):
    daily = stored(served, "daily", LAST)
    seen, offset = [], 0
    while offset is not None:
        body = get(client, f"equity/{SP}", limit=97, offset=offset).json()
        assert body["page"]["total"] == len(daily) and body["page"]["returned"] <= 97
        seen += body["data"]
        offset = body["page"]["next_offset"]
    assert seen == rows(daily)


def test_etag_follows_the_data_and_if_none_match_is_304(client, served):
    first = get(client, f"signal/{SP}", as_of=str(JUNE))
    tag = first.headers["etag"]
    again = client.get(f"{API}/signal/{SP}", params={"as_of": str(JUNE)}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.headers["etag"] == tag and not again.content
    assert again.headers["x-content-type-options"] == "nosniff"
    other_format = get(client, f"signal/{SP}", as_of=str(JUNE), format="csv")
    assert other_format.headers["etag"] != tag
    # rewriting the partition with other bytes changes the tag (and the answer)
    path = served.data_dir / "signals" / "signals" / f"asset={SP}" / f"date={JUNE}.parquet"
    original = path.read_bytes()
    frame = pd.read_parquet(path)
    frame.loc[0, "net_prob"] = 0.123
    try:
        frame.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").rename(path)
        changed = client.get(f"{API}/signal/{SP}", params={"as_of": str(JUNE)}, headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.headers["etag"] != tag
        assert changed.json()["data"][0]["net_prob"] == 0.123
    finally:
        path.with_suffix(".tmp").write_bytes(original)
        path.with_suffix(".tmp").rename(path)
    assert get(client, f"signal/{SP}", as_of=str(JUNE)).headers["etag"] == tag


def test_the_query_layer_answers_frames_without_http(served):
    """The logic under the routes, called directly: the same frames as the files, paged."""
    from nexus_assets.api.queries import ASSET_ENDPOINTS, Params, QueryError, answer
    from nexus_assets.api.store import Store

    store, entry = Store(str(served.data_dir)), served.pipe.settings.catalog()[SP]
    equity = answer(store, entry, ASSET_ENDPOINTS["equity"], Params(as_of=JUNE, limit=10, offset=5,
                                                                   filters={"signal": "raw"}))
    daily = stored(served, "daily", JUNE)
    expected = daily[daily["signal"] == "raw"].iloc[5:15].reset_index(drop=True)
    pd.testing.assert_frame_equal(equity.frame, expected)
    assert equity.total == int((daily["signal"] == "raw").sum()) and equity.files[0][:2] == ("daily", JUNE)
    with pytest.raises(QueryError) as missing:
        answer(store, entry, ASSET_ENDPOINTS["forecast"], Params(as_of=dt.date(2018, 7, 11)))
    assert (missing.value.status, missing.value.code) == (404, "DATE_NOT_MATERIALISED")
