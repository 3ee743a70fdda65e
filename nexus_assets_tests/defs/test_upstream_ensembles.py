"""``ensemble_source = "upstream"`` in real Dagster runs: upstream's per-horizon forecasts go into
horizon_ensembles and everything downstream (search, signals, metrics, the dashboard) works on
them unchanged; an upstream without the endpoint fails the first run with a clear message."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.catalog import CatalogAsset
from nexus_assets.core.contract import DAILY, STATISTICS, columns
from nexus_assets_tests.defs.conftest import Pipeline
from nexus_assets_tests.loopback import API_KEY, ApiPipeline, api_catalog_text, secret_leaks, serve

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

COIN = CatalogAsset(
    key="4501_Upstream_Coin", project_id=4501, name="Upstream_Coin", display_name="Upstream coin", category="Crypto",
    calendar="crypto", start_date=dt.date(2025, 1, 1), end_date=dt.date(2025, 3, 31), source="synthetic",
    horizons=(1, 3, 5), models_per_horizon=12, seed=5,
)
FIRST, LAST = "4501_Upstream_Coin|2025-01-01", "4501_Upstream_Coin|2025-03-31"


def upstream_catalog() -> str:
    return api_catalog_text(COIN) + 'ensemble_source = "upstream"\n'


def test_upstream_forecasts_flow_through_metrics_and_the_dashboard(tmp_path, monkeypatch):
    pipe = ApiPipeline(tmp_path, upstream_catalog())
    with serve(COIN) as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        monkeypatch.setenv("QML_API_KEY", API_KEY)
        result = pipe.run(FIRST, LAST)
        served = pd.DataFrame(server.horizon_forecast(COIN.project_id, COIN.start_date, COIN.end_date))
    assert result.success
    assert not secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir)

    stored = pd.concat([pd.read_parquet(p) for p in sorted((pipe.data_dir / "horizon_ensembles").rglob("*.parquet"))],
                       ignore_index=True)
    assert (stored["strategy"] == "upstream").all() and stored["best_child"].isna().all() and stored["p05"].isna().all()
    served["date"] = pd.to_datetime(served["time"])
    joined = stored.merge(served, left_on=["date", "horizon"], right_on=["date", "n_predict"], validate="one_to_one")
    assert len(joined) == len(stored) == len(served)  # every day and horizon upstream has, from the first day on
    assert (joined["forecast_x"] == joined["forecast_y"]).all() and (joined["n_models_x"] == joined["n_models_y"]).all()

    # downstream unchanged: the raw signal follows upstream's forecasts, the record and the page exist
    day = "2025-03-31"
    signals = pd.read_parquet(pipe.data_dir / "signals" / "signals" / f"asset={COIN.key}" / f"date={day}.parquet")
    raw = signals[signals["variant"] == "raw"].iloc[0]
    last = stored[stored["date"] == pd.Timestamp(day)].sort_values("horizon")["forecast"].to_numpy()
    slopes = [last[j] - last[i] for i in range(3) for j in range(i + 1, 3)]
    assert raw["net_prob"] == (sum(s > 0 for s in slopes) - sum(s < 0 for s in slopes)) / 3
    for table, schema in (("statistics", STATISTICS), ("daily", DAILY)):
        frame = pd.read_parquet(pipe.data_dir / "metrics" / table / f"asset={COIN.key}" / f"date={day}.parquet")
        assert list(frame.columns) == list(columns(schema)) and len(frame), table
    page = (pipe.data_dir / "dashboard" / f"asset={COIN.key}" / f"date={day}.html").read_text()
    assert 'data-field="selection">upstream / \u2013 / q=\u2013<' in page


def test_upstream_without_the_endpoint_fails_the_first_run_naming_the_catalog_field(tmp_path, monkeypatch):
    pipe = ApiPipeline(tmp_path, upstream_catalog())
    with serve(COIN, models_only=True) as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        monkeypatch.setenv("QML_API_KEY", API_KEY)
        result = pipe.run(FIRST, "4501_Upstream_Coin|2025-01-10")
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "horizon_ensembles"
    message = failure.step_failure_data.user_failure_data.description
    assert 'ensemble_source = "upstream"' in message and "/get_qml_horizon_forecast" in message
    assert 'ensemble_source = "child_models"' in message and COIN.key in message
    assert not (pipe.data_dir / "horizon_ensembles").exists()
    assert not secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir)


def test_the_embedded_source_gives_what_qml_server_serves(tmp_path, monkeypatch):
    """The sandbox/synthetic route computes upstream's forecasts in process: the same rows."""
    text = upstream_catalog().replace('source = "api"', 'source = "synthetic"\nhorizons = [1, 3, 5]\n'
                                      'models_per_horizon = 12\nseed = 5')
    (tmp_path / "embedded").mkdir()
    (tmp_path / "api").mkdir()
    local = Pipeline(tmp_path / "embedded", text)
    api = ApiPipeline(tmp_path / "api", upstream_catalog())
    last = "4501_Upstream_Coin|2025-01-20"
    assert local.run(FIRST, last, through="horizon_ensembles").success
    with serve(COIN) as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        monkeypatch.setenv("QML_API_KEY", API_KEY)
        assert api.run(FIRST, last, through="horizon_ensembles").success
    assert local.files("horizon_ensembles") == api.files("horizon_ensembles")
