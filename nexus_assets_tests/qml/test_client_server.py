"""End-to-end tests: the real ``QMLClient`` against the real ``QMLServer`` on loopback.

No request mocking: every test talks HTTP to a ``QMLServer`` bound to 127.0.0.1 on an ephemeral
port (or to the ``nexus-assets qml-server`` CLI run as a subprocess). Misbehaviour comes from
the server's own scripted :class:`~nexus_assets.qml.faults.Fault` list. Small synthetic projects
keep the file fast; the sandbox model farm is used by one test only.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from nexus_assets.catalog import CatalogAsset, load_catalog
from nexus_assets.core.contract import CONTRACT_VERSION, ContractViolation, coerce_qml_rows
from nexus_assets.qml import client as client_module
from nexus_assets.qml import server as server_module
from nexus_assets.qml.client import (
    CONTRACT_HEADER,
    PARQUET_MEDIA_TYPE,
    WATERMARK_HEADER,
    QMLClient,
    QMLRequestError,
    QMLTransientError,
    RetryPolicy,
)
from nexus_assets.qml.faults import Fault
from nexus_assets.qml.server import QMLServer
from nexus_assets.qml.sources import embedded_project, keep_days, pull_embedded
from nexus_assets_tests.loopback import CollectingLog, serve

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

REPO = Path(__file__).resolve().parents[2]
API_KEY = "k3y-5ecret-7f1c9a0e-never-log-me"
FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05, jitter=0.01, max_retry_after=2)

START = dt.date(2025, 1, 1)
END = dt.date(2025, 2, 28)

# Built as catalog assets so ``pull_embedded`` (the in-process path) is the reference.
CRYPTO = CatalogAsset(
    key="4201_Test_Coin", project_id=4201, name="Test_Coin", display_name="Test coin", category="Crypto",
    calendar="crypto", start_date=START, end_date=END, source="synthetic",
    horizons=(1, 2, 3), models_per_horizon=20, seed=11,
)
EXCHANGE = CatalogAsset(
    key="4202_Test_Stock", project_id=4202, name="Test_Stock", display_name="Test stock", category="Equity",
    calendar="exchange", start_date=START, end_date=dt.date(2025, 2, 16),  # a Sunday: watermark is Fri 14th
    source="synthetic", horizons=(1, 2, 3), models_per_horizon=20, seed=12,
)
UNKNOWN_PROJECT = 999_999


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _serve(*assets: CatalogAsset, faults=()):
    """A running ``QMLServer`` for ``assets`` with this file's key (fast shutdown: see loopback.serve)."""
    return serve(*assets, faults=faults, api_key=API_KEY)


@pytest.fixture
def server() -> Iterator[QMLServer]:
    with _serve(CRYPTO, EXCHANGE) as running:
        yield running


def _client(server: QMLServer, **kwargs) -> QMLClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("read_timeout", 10.0)
    return QMLClient(server.url, kwargs.pop("api_key", API_KEY), **kwargs)


def _assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        actual.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True
    )


# -- 1. both formats return the embedded rows exactly --------------------------------------------


@pytest.mark.parametrize("prefer_parquet", [True, False], ids=["parquet", "json"])
@pytest.mark.parametrize(
    "first,last",
    [(dt.date(2025, 1, 6), dt.date(2025, 1, 15)), (START, END)],
    ids=["ten-days", "whole-history"],
)
def test_pull_matches_embedded_rows_exactly(server: QMLServer, prefer_parquet: bool, first, last) -> None:
    days = _days(first, last)
    pull = _client(server, prefer_parquet=prefer_parquet).pull(CRYPTO.project_id, days)
    reference = pull_embedded(CRYPTO, days)

    _assert_same_rows(pull.rows, reference.rows)  # dtypes, order and every float bit
    assert len(pull.rows) > 0 and set(pull.rows["time"].dt.date) == set(days)
    assert pull.source == "api" and pull.project_id == CRYPTO.project_id
    assert pull.days == tuple(days)
    assert pull.contract_version == CONTRACT_VERSION == "1"
    # the header watermark (end of history), not the newest day of this response
    assert pull.watermark == embedded_project(CRYPTO).watermark() == pd.Timestamp(END)


@pytest.mark.parametrize("prefer_parquet", [True, False], ids=["parquet", "json"])
def test_exchange_calendar_weekend_day_is_empty_and_watermark_is_last_trading_day(
    server: QMLServer, prefer_parquet: bool
) -> None:
    days = _days(dt.date(2025, 2, 7), dt.date(2025, 2, 10))  # Fri, Sat, Sun, Mon
    pull = _client(server, prefer_parquet=prefer_parquet).pull(EXCHANGE.project_id, days)
    _assert_same_rows(pull.rows, pull_embedded(EXCHANGE, days).rows)
    by_day = pull.by_day()
    assert list(by_day) == days
    assert [len(by_day[d]) > 0 for d in days] == [True, False, False, True]
    assert pull.watermark == pd.Timestamp("2025-02-14")


def test_server_negotiates_parquet_and_json(server: QMLServer) -> None:
    url = f"{server.url}/get_qml_models/{CRYPTO.project_id}"
    key = {"qml-api-key": API_KEY}
    params = {"from_date": "2025-01-02", "to_date": "2025-01-03"}
    as_json = requests.get(url, params=params, headers=key, timeout=5)
    by_query = requests.get(url, params={**params, "format": "parquet"}, headers=key, timeout=5)
    by_accept = requests.get(url, params=params, headers={**key, "Accept": PARQUET_MEDIA_TYPE}, timeout=5)
    assert as_json.headers["Content-Type"] == "application/json"
    assert by_query.headers["Content-Type"] == by_accept.headers["Content-Type"] == PARQUET_MEDIA_TYPE
    assert by_query.content[:4] == b"PAR1" and by_accept.content == by_query.content
    for response in (as_json, by_query, by_accept):
        assert response.status_code == 200
        assert response.headers[CONTRACT_HEADER] == "1"
        assert response.headers[WATERMARK_HEADER] == END.isoformat()
    rows = as_json.json()
    assert rows[0]["time"] == "Thu, 02 Jan 2025 00:00:00 GMT"  # Flask's RFC 1123 rendering
    assert {r["time"] for r in rows} == {"Thu, 02 Jan 2025 00:00:00 GMT", "Fri, 03 Jan 2025 00:00:00 GMT"}


def test_sandbox_model_farm_project_through_the_server() -> None:
    """The one sandbox test: a ModelFarm project (9001) served over HTTP, both formats, plus metadata."""
    asset = next(a for a in load_catalog().assets if a.project_id == 9001)
    project = embedded_project(asset)
    days = [dt.date(2018, 3, 1), dt.date(2018, 3, 2), dt.date(2018, 3, 5)]
    reference = pull_embedded(asset, days)
    with QMLServer({asset.project_id: (project, asset.start_date)}, API_KEY) as running:
        for prefer_parquet in (True, False):
            pull = _client(running, prefer_parquet=prefer_parquet).pull(asset.project_id, days)
            _assert_same_rows(pull.rows, reference.rows)
            assert pull.watermark == reference.watermark == project.watermark()
            assert pull.contract_version == reference.contract_version == "1"
        metadata = _client(running).model_metadata(asset.project_id)
    expected = project.models()
    assert len(metadata) == len(expected) == expected["symbol"].nunique()
    assert sorted(metadata["symbol"]) == sorted(expected["symbol"])
    assert set(reference.rows["symbol"]) <= set(metadata["symbol"])


# -- 2. client-side filtering ----------------------------------------------------------------------


@pytest.mark.parametrize("prefer_parquet", [True, False], ids=["parquet", "json"])
def test_non_contiguous_days_are_filtered_client_side(server: QMLServer, prefer_parquet: bool) -> None:
    days = [dt.date(2025, 1, 3), dt.date(2025, 1, 17), dt.date(2025, 2, 9)]
    # the server answers the whole span, so the filtering below is the client's doing
    raw = requests.get(
        f"{server.url}/get_qml_models/{CRYPTO.project_id}",
        params={"from_date": days[0].isoformat(), "to_date": days[-1].isoformat()},
        headers={"qml-api-key": API_KEY},
        timeout=5,
    ).json()
    assert len({r["time"] for r in raw}) == (days[-1] - days[0]).days + 1

    pull = _client(server, prefer_parquet=prefer_parquet).pull(CRYPTO.project_id, reversed(days))
    assert pull.days == tuple(days)
    assert sorted(pull.rows["time"].dt.date.unique()) == days
    _assert_same_rows(pull.rows, pull_embedded(CRYPTO, days).rows)
    assert server.data_requests == 2  # one request for the span, not one per day


# -- 4. authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["wrong-key-Zq81x", None], ids=["wrong-key", "no-key"])
def test_refused_key_fails_fast_without_showing_the_key(server: QMLServer, key) -> None:
    log = CollectingLog()
    client = _client(server, api_key=key, log=log)
    with pytest.raises(QMLRequestError) as caught:
        client.pull(CRYPTO.project_id, [dt.date(2025, 1, 2)])
    assert caught.value.status == 401
    assert client.attempts == 1
    assert "401" in str(caught.value)
    for text in [str(caught.value), repr(caught.value), *log.messages]:
        assert API_KEY not in text
        if key:
            assert key not in text
    assert server.data_requests == 0  # refused before reaching the data (no fault consumed)


def test_http_basic_auth_is_accepted(server: QMLServer) -> None:
    url = f"{server.url}/get_qml_models/{CRYPTO.project_id}"
    params = {"from_date": "2025-01-02", "to_date": "2025-01-02"}

    def get(token: str) -> requests.Response:
        encoded = base64.b64encode(token.encode()).decode()
        return requests.get(url, params=params, headers={"Authorization": f"Basic {encoded}"}, timeout=5)

    accepted = get(f"user:{API_KEY}")
    assert accepted.status_code == 200
    assert len(accepted.json()) == len(pull_embedded(CRYPTO, [dt.date(2025, 1, 2)]).rows)
    assert requests.get(url, params=params, auth=("anyone", API_KEY), timeout=5).status_code == 200
    assert get(API_KEY).status_code == 200  # a bare base64 token, as quantum_ml also accepts
    assert get(f"user:{API_KEY}x").status_code == 401
    assert get("user:wrong").status_code == 401
    refused = requests.get(url, params=params, headers={"Authorization": "Basic !!not-base64!!"}, timeout=5)
    assert refused.status_code == 401
    assert requests.get(url, params=params, timeout=5).status_code == 401
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200  # no key needed


def test_unknown_project_is_404_without_retry(server: QMLServer) -> None:
    client = _client(server)
    with pytest.raises(QMLRequestError) as caught:
        client.pull(UNKNOWN_PROJECT, [dt.date(2025, 1, 2)])
    assert caught.value.status == 404
    assert "404" in str(caught.value)
    assert client.attempts == 1


def test_malformed_date_is_400(server: QMLServer) -> None:
    response = requests.get(
        f"{server.url}/get_qml_models/{CRYPTO.project_id}",
        params={"from_date": "2025-13-45"},
        headers={"qml-api-key": API_KEY},
        timeout=5,
    )
    assert response.status_code == 400
    assert "from_date" in response.json()["error"]


# -- 5. retries driven by the server's scripted faults ---------------------------------------------

DAY = [dt.date(2025, 1, 20), dt.date(2025, 1, 21)]


@pytest.mark.parametrize("prefer_parquet", [True, False], ids=["parquet", "json"])
@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=500),
        Fault("status", status=502),
        Fault("status", status=503),
        Fault("status", status=504),
        Fault("status", status=429),
        Fault("reset"),
        Fault("truncate"),
    ],
    ids=["500", "502", "503", "504", "429-no-retry-after", "reset", "truncate"],
)
def test_transient_fault_is_retried_then_succeeds(fault: Fault, prefer_parquet: bool) -> None:
    with _serve(CRYPTO, faults=[fault]) as running:
        client = _client(running, prefer_parquet=prefer_parquet)
        pull = client.pull(CRYPTO.project_id, DAY)
        assert client.attempts == 2
        assert running.data_requests == 2 and running.faults == []
    _assert_same_rows(pull.rows, pull_embedded(CRYPTO, DAY).rows)
    assert pull.watermark == pd.Timestamp(END)


def test_429_retry_after_is_honoured() -> None:
    with _serve(CRYPTO, faults=[Fault("status", status=429, retry_after="1")]) as running:
        client = _client(running)
        started = time.monotonic()
        pull = client.pull(CRYPTO.project_id, DAY)
        elapsed = time.monotonic() - started
    assert client.attempts == 2
    assert elapsed >= 0.95, f"Retry-After: 1 not honoured (retried after {elapsed:.2f}s)"
    assert elapsed < 5
    _assert_same_rows(pull.rows, pull_embedded(CRYPTO, DAY).rows)


def test_503_retry_after_is_capped_by_max_retry_after() -> None:
    with _serve(CRYPTO, faults=[Fault("status", status=503, retry_after="3600")]) as running:
        client = _client(running, retry=dataclasses.replace(FAST, max_retry_after=0.4))
        started = time.monotonic()
        client.pull(CRYPTO.project_id, DAY)
        elapsed = time.monotonic() - started
    assert client.attempts == 2
    assert 0.38 <= elapsed < 2.5, elapsed


def test_stall_past_read_timeout_is_retried() -> None:
    with _serve(CRYPTO, faults=[Fault("stall", seconds=2)]) as running:
        client = _client(running, read_timeout=0.5)
        started = time.monotonic()
        pull = client.pull(CRYPTO.project_id, DAY)
        elapsed = time.monotonic() - started
    assert client.attempts == 2
    assert 0.45 <= elapsed < 2.0, elapsed  # gave up on the stalled answer instead of waiting for it
    _assert_same_rows(pull.rows, pull_embedded(CRYPTO, DAY).rows)


def test_short_stall_within_read_timeout_is_not_a_failure() -> None:
    with _serve(CRYPTO, faults=[Fault("stall", seconds=0.2)]) as running:
        client = _client(running, read_timeout=2.0)
        pull = client.pull(CRYPTO.project_id, DAY)
    assert client.attempts == 1
    _assert_same_rows(pull.rows, pull_embedded(CRYPTO, DAY).rows)


def test_several_faults_in_a_row_are_consumed_in_order() -> None:
    faults = [Fault("status", status=503), Fault("reset"), Fault("status", status=502)]
    with _serve(CRYPTO, faults=faults) as running:
        client = _client(running)
        pull = client.pull(CRYPTO.project_id, DAY)
        assert running.data_requests == 4
    assert client.attempts == 4  # exactly max_attempts
    _assert_same_rows(pull.rows, pull_embedded(CRYPTO, DAY).rows)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_error_status_is_not_retried(status: int) -> None:
    with _serve(CRYPTO, faults=[Fault("status", status=status)]) as running:
        client = _client(running)
        with pytest.raises(QMLRequestError) as caught:
            client.pull(CRYPTO.project_id, DAY)
        assert running.data_requests == 1
    assert caught.value.status == status
    assert client.attempts == 1
    assert str(status) in str(caught.value) and API_KEY not in str(caught.value)


def test_unexpected_content_type_is_a_request_error_naming_it() -> None:
    with _serve(CRYPTO, faults=[Fault("content_type")]) as running:
        client = _client(running)
        with pytest.raises(QMLRequestError, match="text/html") as caught:
            client.pull(CRYPTO.project_id, DAY)
    assert client.attempts == 1
    assert API_KEY not in str(caught.value)


def test_retries_exhausted_raise_transient_error() -> None:
    with _serve(CRYPTO, faults=[Fault("status", status=503)] * 5) as running:
        client = _client(running)
        with pytest.raises(QMLTransientError, match="503") as caught:
            client.pull(CRYPTO.project_id, DAY)
        assert running.data_requests == 4 and len(running.faults) == 1
    assert client.attempts == FAST.max_attempts == 4
    assert API_KEY not in str(caught.value)


def test_metadata_endpoint_is_retried_too() -> None:
    faults = [Fault("status", status=503), Fault("reset")]
    with _serve(CRYPTO, faults=faults) as running:
        client = _client(running)
        metadata = client.model_metadata(CRYPTO.project_id)
        assert running.data_requests == 3
    assert client.attempts == 3
    assert len(metadata) == CRYPTO.models_per_horizon * len(CRYPTO.horizons)


# -- 6. retries are logged, the key never is -------------------------------------------------------


def test_retries_are_logged_without_the_key() -> None:
    log = CollectingLog()
    faults = [Fault("status", status=503), Fault("status", status=429, retry_after="1")]
    with _serve(CRYPTO, faults=faults) as running:
        # Retry-After 1 s, capped at 0.3 s: the second warning's delay is known exactly
        client = _client(running, log=log, retry=dataclasses.replace(FAST, max_retry_after=0.3))
        client.pull(CRYPTO.project_id, DAY)
    assert client.attempts == 3
    assert len(log.warnings) == 2
    first, second = log.warnings
    assert "attempt 1/4" in first and "503" in first and "retrying in" in first
    assert "attempt 2/4" in second and "429" in second and "retrying in 0.3s" in second
    assert any("3 attempt" in m for m in log.infos)
    for message in log.messages:
        assert API_KEY not in message


def test_connection_refused_is_transient_and_logged_without_the_key() -> None:
    with _serve(CRYPTO) as running:
        url = running.url  # the port is closed once the server stops
    log = CollectingLog()
    client = QMLClient(url, API_KEY, retry=FAST, connect_timeout=1.0, log=log)
    with pytest.raises(QMLTransientError, match="connection error") as caught:
        client.pull(CRYPTO.project_id, DAY)
    assert client.attempts == 4 and len(log.warnings) == 3
    for text in [str(caught.value), *log.messages]:
        assert API_KEY not in text


# -- 7. contract version ---------------------------------------------------------------------------
# The server sends ``nexus_assets.qml.server.CONTRACT_VERSION``; patching that module constant (not
# requests) makes the real server announce another version on the wire.


def test_unknown_contract_major_version_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "CONTRACT_VERSION", "2")
    with _serve(CRYPTO) as running:
        client = _client(running)
        with pytest.raises(ContractViolation, match="X-QML-Contract-Version '2'"):
            client.pull(CRYPTO.project_id, DAY)
    assert client.attempts == 1


def test_same_major_contract_version_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "CONTRACT_VERSION", "1.7")
    with _serve(CRYPTO) as running:
        pull = _client(running).pull(CRYPTO.project_id, DAY)
    assert pull.contract_version == "1.7"


# -- 8. horizon forecast and model metadata endpoints ----------------------------------------------


def test_horizon_forecast_is_the_mean_per_time_and_horizon(server: QMLServer) -> None:
    first, last = dt.date(2025, 1, 10), dt.date(2025, 1, 24)
    forecast = _client(server).horizon_forecast(CRYPTO.project_id, first, last)

    rows = embedded_project(CRYPTO).rows(first, last)
    expected = (
        rows.groupby(["time", "n_predict"], sort=True)
        .agg(
            forecast=("close_predict", "mean"),
            median=("close_predict", "median"),
            n_models=("symbol", "nunique"),
            target_var_price=("target_var_price", "first"),
        )
        .reset_index()
    )
    # one row per (time, horizon) that has rows: like real tables, a day may lack a horizon
    assert len(forecast) == len(expected) <= len(_days(first, last)) * len(CRYPTO.horizons)
    assert len(expected) >= 0.9 * len(_days(first, last)) * len(CRYPTO.horizons)
    assert not forecast.duplicated(["time", "n_predict"]).any()
    got = forecast.assign(time=pd.to_datetime(forecast["time"]).astype("datetime64[ns]"))
    got = got.sort_values(["time", "n_predict"]).reset_index(drop=True)[list(expected.columns)]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12)
    assert (got["n_models"] <= CRYPTO.models_per_horizon).all()


def test_horizon_forecast_of_exchange_project_skips_weekends(server: QMLServer) -> None:
    forecast = _client(server).horizon_forecast(EXCHANGE.project_id, dt.date(2025, 2, 7), dt.date(2025, 2, 10))
    assert sorted(set(forecast["time"])) == ["2025-02-07", "2025-02-10"]


def test_model_metadata_has_one_row_per_child_model(server: QMLServer) -> None:
    metadata = _client(server).model_metadata(CRYPTO.project_id)
    expected = embedded_project(CRYPTO).models()
    assert len(metadata) == CRYPTO.models_per_horizon * len(CRYPTO.horizons) == len(expected)
    assert metadata["symbol"].is_unique
    assert {"symbol", "algorithm", "horizon", "training_window", "code_version"} <= set(metadata.columns)
    pd.testing.assert_frame_equal(
        metadata.sort_values("symbol").reset_index(drop=True),
        expected.sort_values("symbol").reset_index(drop=True),
        check_dtype=False,
    )
    served = set(pull_embedded(CRYPTO, _days(START, END)).rows["symbol"])
    assert served <= set(metadata["symbol"])  # every model ever published; some appear after END (churn)
    assert len(served) >= 0.8 * len(metadata)


def test_endpoints_404_for_unknown_project(server: QMLServer) -> None:
    client = _client(server)
    with pytest.raises(QMLRequestError) as forecast_error:
        client.horizon_forecast(UNKNOWN_PROJECT, START, END)
    with pytest.raises(QMLRequestError) as metadata_error:
        client.model_metadata(UNKNOWN_PROJECT)
    assert forecast_error.value.status == metadata_error.value.status == 404
    assert client.attempts == 2


def test_a_models_only_server_answers_404_on_the_other_endpoints_and_serves_rows() -> None:
    """``models_only`` plays today's quantum_ml: the two newer endpoints do not exist there."""
    with serve(CRYPTO, api_key=API_KEY, models_only=True) as running:
        client = _client(running)
        with pytest.raises(QMLRequestError) as forecast_error:
            client.horizon_forecast(CRYPTO.project_id, START, END)
        with pytest.raises(QMLRequestError) as metadata_error:
            client.model_metadata(CRYPTO.project_id)
        assert forecast_error.value.status == metadata_error.value.status == 404
        assert len(client.pull(CRYPTO.project_id, [START]).rows)
        assert running.data_requests == 1  # the 404s consume no fault


def test_model_metadata_comes_with_the_watermark_it_describes(server: QMLServer) -> None:
    frame, watermark = _client(server).model_metadata_snapshot(CRYPTO.project_id)
    assert len(frame) and watermark == embedded_project(CRYPTO).watermark()


def test_a_metadata_record_echoing_the_key_is_refused() -> None:
    class Echoing:
        def __init__(self, project):
            self.project = project

        def rows(self, start, end):
            return self.project.rows(start, end)

        def watermark(self):
            return self.project.watermark()

        def models(self):
            return self.project.models().assign(algorithm=f"ridge {API_KEY}")

    server = QMLServer({CRYPTO.project_id: (Echoing(embedded_project(CRYPTO)), START)}, API_KEY)
    with server:
        with pytest.raises(ContractViolation) as caught:
            _client(server).model_metadata(CRYPTO.project_id)
    assert API_KEY not in str(caught.value) and "algorithm" in str(caught.value)


# -- 9. the ``nexus-assets qml-server`` CLI as a real process --------------------------------------

_LISTENING = "qml-server listening on "


class _CLI:
    """``python -m nexus_assets.cli qml-server --port 0``, with its stdout read by a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", "0", *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def url(self, timeout: float = 30.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"qml-server printed nothing within {timeout}s")
        assert line.startswith(_LISTENING), line
        return line[len(_LISTENING):].split()[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stderr.close()


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "QML_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_cli_serves_a_real_pull_and_stops_on_interrupt() -> None:
    cli = _CLI(_cli_env(QML_API_KEY=API_KEY))
    try:
        url = cli.url()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert int(url.rsplit(":", 1)[1]) > 0
        day = [dt.date(2018, 6, 15)]
        client = QMLClient(url, API_KEY, retry=FAST, read_timeout=30.0)
        pull = client.pull(9001, day)
        asset = next(a for a in load_catalog().assets if a.project_id == 9001)
        _assert_same_rows(pull.rows, pull_embedded(asset, day).rows)
        assert pull.watermark == pd.Timestamp("2018-12-31")
        with pytest.raises(QMLRequestError) as caught:
            QMLClient(url, "not-the-key", retry=FAST).pull(9001, day)
        assert caught.value.status == 401

        cli.process.send_signal(signal.SIGINT)
        # generous: once, on a 2-core box running the demo beside the suite, 10 s was not enough
        assert cli.process.wait(timeout=45) == 0
        printed = cli.process.stderr.read() + "".join(cli.lines.queue)
        assert API_KEY not in printed
    finally:
        cli.stop()


def test_cli_exits_on_sigterm(tmp_path: Path) -> None:
    # a one-asset synthetic catalog: starts faster than the bundled ones, same code path
    catalog = tmp_path / "tiny.toml"
    catalog.write_text(
        '[[assets]]\nkey = "4209_Tiny"\nproject_id = 4209\nname = "Tiny"\ndisplay_name = "Tiny"\n'
        'category = "Crypto"\ncalendar = "crypto"\nstart_date = 2025-01-01\nend_date = 2025-01-10\n'
        'source = "synthetic"\nhorizons = [1]\nmodels_per_horizon = 3\nseed = 1\n',
        encoding="utf-8",
    )
    cli = _CLI(_cli_env(QML_API_KEY=API_KEY), "--catalog", str(catalog))
    try:
        url = cli.url()
        assert len(QMLClient(url, API_KEY, retry=FAST).pull(4209, [dt.date(2025, 1, 5)]).rows) == 3
        cli.process.send_signal(signal.SIGTERM)
        try:
            code = cli.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pytest.fail("qml-server still running 3 s after SIGTERM")
        assert code == 0
    finally:
        cli.stop()


def test_cli_without_api_key_exits_2_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", "0"],
        cwd=REPO, env=_cli_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "QML_API_KEY" in result.stderr
    assert _LISTENING not in result.stdout


# -- 10. a JSON body spanning several parse chunks -------------------------------------------------

BIG = CatalogAsset(
    key="4203_Test_Big", project_id=4203, name="Test_Big", display_name="Big test", category="Crypto",
    calendar="crypto", start_date=START, end_date=START + dt.timedelta(days=59), source="synthetic",
    horizons=(1, 2, 3, 4), models_per_horizon=1000, seed=13,
)


def test_json_pull_spanning_several_chunks_matches_embedded() -> None:
    all_days = _days(BIG.start_date, BIG.end_date)
    reference = coerce_qml_rows(embedded_project(BIG).rows(all_days[0], all_days[-1]))
    chunk = client_module._JSON_CHUNK_ROWS
    assert len(reference) > chunk
    # The server answers the whole 60-day span (~240,000 rows, several parse chunks); leave out a
    # few days, among them the one a chunk boundary falls in, so filtering happens in every chunk.
    boundary_day = reference["time"].iloc[chunk].date()
    skipped = {all_days[10], boundary_day, all_days[-2]}
    picked = [d for d in all_days if d not in skipped]
    assert picked[0] == all_days[0] and picked[-1] == all_days[-1]

    with _serve(BIG) as running:
        client = _client(running, prefer_parquet=False, read_timeout=60.0)
        pull = client.pull(BIG.project_id, picked)
        assert client.attempts == 1
    expected = keep_days(reference, picked)
    assert len(expected) > chunk
    _assert_same_rows(pull.rows, expected)
    assert set(pull.rows["time"].dt.date) == set(picked)
    assert pull.watermark == pd.Timestamp(BIG.end_date)
