"""Every scripted fault of ``qml-server``, through the ``qml_models`` asset in a real Dagster run.

Days 3 to 5 of the test project are stored before each run (copied from a clean run); the run then
asks for days 4 to 7. Each fault must end as the table says:

- recovered: the run succeeds, the client's retries and back-off are in the run log, and every
  file equals the clean run's, byte for byte;
- refused: the run fails with a message naming the field, the rule and a few offending rows (or
  the HTTP status), the blocking contract check fails for contract faults, and the stored files
  are byte-identical to before, nothing added;
- accepted: the run succeeds and stores what the contract allows.

In every case the API key is nowhere: not in any event, log line, metadata entry, check result,
error or stack trace, run record or snapshot, nor in any stored file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from nexus_assets.qml.faults import Fault
from nexus_assets_tests.loopback import API_KEY, COIN, ApiPipeline, api_catalog_text, leaks_in, secret_leaks, serve

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

STORED = ("2025-01-03", "2025-01-05")  # stored before the faulty run
RUN = ("2025-01-04", "2025-01-07")  # what the faulty run asks for
NEW = ("2025-01-06", "2025-01-07")  # days nothing was stored for


def _key(day: str) -> str:
    return f"{COIN.key}|{day}"


def _in(span: tuple[str, str], path: str) -> bool:
    day = path.split("date=")[1][:10]
    return span[0] <= day <= span[1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Every file of a fault-free run over days 3 to 7, by asset."""
    tmp = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as env, serve(COIN) as server:
        env.setenv("QML_API_BASE_URL", server.url)
        env.setenv("QML_API_KEY", API_KEY)
        pipe = ApiPipeline(tmp, api_catalog_text(COIN))
        assert pipe.run(_key(STORED[0]), _key(RUN[1])).success
    return {asset: pipe.files(asset) for asset in ("qml_models", "horizon_slices")}


def _stored(clean) -> dict[str, dict[str, bytes]]:
    return {asset: {p: b for p, b in files.items() if _in(STORED, p)} for asset, files in clean.items()}


def _run(tmp_path: Path, monkeypatch, clean, faults: list[Fault], span=RUN, *, api_key: str = API_KEY,
         qml: dict | None = None, run_config: dict | None = None, **settings):
    """Store days 3 to 5, then run ``span`` against a server that plays ``faults``; ``api_key`` is
    what QML_API_KEY holds (the server expects ``API_KEY``), ``qml`` overrides resource fields,
    ``settings`` the pipeline's settings. ``requests_seen`` counts every data request: the
    ``qml_models`` pulls and, once they succeed, ``qml_model_metadata``'s one metadata request."""
    pipe = ApiPipeline(tmp_path, api_catalog_text(COIN), qml=qml, unpublished_retries=1, unpublished_retry_seconds=0,
                       **settings)
    for asset, files in _stored(clean).items():
        for relative, data in files.items():
            target = pipe.data_dir / asset / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    with serve(COIN, faults=faults) as server:
        monkeypatch.setenv("QML_API_BASE_URL", server.url)
        monkeypatch.setenv("QML_API_KEY", api_key)
        result = pipe.run(_key(span[0]), _key(span[1]), run_config=run_config)
        requests_seen = server.data_requests
    leaks = secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir)
    assert not leaks, leaks
    return pipe, result, requests_seen


def _files(pipe) -> dict[str, dict[str, bytes]]:
    return {asset: pipe.files(asset) for asset in ("qml_models", "horizon_slices")}


def _failure_message(result) -> str:
    """The step failure's description, else its error and the error's causes (an IO manager's error
    is wrapped by Dagster); a run that fails before any step (a resource that cannot be set up)
    has them on the resource-init failure event."""
    failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
    if failure is not None:
        data = failure.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        error = data.error
    else:
        error = next(e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE").engine_event_data.error
    texts = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    return "\n".join(texts)


def _kinds(result) -> list[str]:
    return [e.event_type_value for e in result.all_events]


# -- recovered ---------------------------------------------------------------------------------------

TRANSIENT = [
    pytest.param([Fault("stall", seconds=2.5)], "timeout", id="timeout"),
    pytest.param([Fault("reset")], "connection error", id="connection-reset"),
    pytest.param([Fault("truncate")], "cut short", id="body-cut-short"),
    pytest.param([Fault("status", status=429, retry_after="1")], "HTTP 429", id="429-retry-after"),
    pytest.param([Fault("status", status=500)], "HTTP 500", id="500"),
    pytest.param([Fault("status", status=502)], "HTTP 502", id="502"),
    pytest.param([Fault("status", status=503)], "HTTP 503", id="503"),
    pytest.param([Fault("status", status=504)], "HTTP 504", id="504"),
]


@pytest.mark.parametrize(("faults", "named"), TRANSIENT)
def test_transient_fault_is_retried_in_the_run_and_files_equal_a_clean_run(tmp_path, monkeypatch, clean, faults, named):
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, faults)
    assert result.success
    assert requests_seen == 3
    log = pipe.log_messages(result)
    [retry] = [m for m in log if "attempt 1/3 failed" in m]
    assert named in retry and "retrying in" in retry, retry
    if faults[0].retry_after:
        assert "retrying in 1.0s" in retry
    assert any("ok after 2 attempt(s)" in m for m in log)
    assert _files(pipe) == clean


def test_retries_exhausted_then_the_step_is_retried_and_recovers(tmp_path, monkeypatch, clean):
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [Fault("status", status=503)] * 3)
    assert result.success and requests_seen == 5
    kinds = _kinds(result)
    assert kinds.count("STEP_UP_FOR_RETRY") == 1 and "STEP_RESTARTED" in kinds
    log = pipe.log_messages(result)
    assert sum("failed (/get_qml_models/4301 answered HTTP 503)" in m for m in log) == 2
    assert any("QML still failing after the client's retries" in m for m in log)
    assert _files(pipe) == clean


def test_empty_days_after_the_watermark_are_retried_until_published(tmp_path, monkeypatch, clean):
    """Upstream has published up to day 5 only: days 6 and 7 are unpublished, the step asks
    Dagster to retry, and the next attempt (watermark now day 20) stores them."""
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [Fault("watermark", day="2025-01-05")])
    assert result.success and requests_seen == 3
    assert _kinds(result).count("STEP_UP_FOR_RETRY") == 1
    assert any(
        "upstream has not published 2 requested day(s) yet" in m and _key("2025-01-06") in m for m in pipe.log_messages(result)
    )
    assert _files(pipe) == clean


# -- refused -----------------------------------------------------------------------------------------

REQUEST_ERRORS = [
    pytest.param(Fault("status", status=401), "HTTP 401", id="401"),
    pytest.param(Fault("status", status=403), "HTTP 403", id="403"),
    pytest.param(Fault("content_type"), "unexpected Content-Type 'text/html'", id="wrong-content-type"),
]


@pytest.mark.parametrize(("fault", "named"), REQUEST_ERRORS)
def test_request_error_fails_at_once_and_keeps_stored_files(tmp_path, monkeypatch, clean, fault, named):
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [fault])
    assert not result.success and requests_seen == 1
    assert named in _failure_message(result) and COIN.key in _failure_message(result)
    assert "STEP_UP_FOR_RETRY" not in _kinds(result)
    assert _files(pipe) == _stored(clean)


CONTRACT = [
    pytest.param(Fault("missing_field", field="close_predict"), "close_predict", "required field present", id="missing-field"),
    pytest.param(Fault("renamed_field", field="symbol", to="model_id"), "symbol", "required field present", id="renamed-field"),
    pytest.param(Fault("wrong_type", field="symbol"), "symbol", "type: non-empty string", id="symbol-as-number"),
    pytest.param(Fault("wrong_type", field="time"), "time", "format: ISO 8601 or RFC 1123", id="time-as-epoch-ms"),
    pytest.param(Fault("numbers_as_strings", field="target_var_price"), "target_var_price", "type: number", id="price-as-string"),
    pytest.param(Fault("duplicate_rows"), "symbol, time, n_predict", "unique (symbol, time, n_predict)", id="duplicate-rows"),
    pytest.param(Fault("set_value", field="close_predict", value="NaN"), "close_predict", "finite", id="nan-price"),
    pytest.param(Fault("set_value", field="target_var_price", value="Infinity"), "target_var_price", "finite", id="infinite-target"),
    pytest.param(Fault("set_value", field="close_predict", value="-Infinity"), "close_predict", "finite", id="minus-infinite-price"),
    pytest.param(Fault("set_value", field="close_predict", value=0), "close_predict", "greater_than(0)", id="zero-price"),
    pytest.param(Fault("set_value", field="target_var_price", value=-2), "target_var_price", "greater_than(0)", id="negative-target"),
    pytest.param(Fault("conflicting_price"), "target_var_price", "one target_var_price per time", id="two-target-prices-one-day"),
    pytest.param(Fault("future_rows"), "time", "not in the future", id="rows-after-watermark"),
    pytest.param(Fault("contract_version", version="2.0"), "X-QML-Contract-Version", "major version 1", id="unknown-contract-version"),
]


@pytest.mark.parametrize(("fault", "field", "rule"), CONTRACT)
def test_contract_fault_fails_the_check_names_the_rows_and_keeps_stored_files(tmp_path, monkeypatch, clean, fault, field, rule):
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [fault])
    assert not result.success and requests_seen == 1  # not retried
    message = _failure_message(result)
    assert f"field {field!r}" in message and rule in message and COIN.key in message, message
    if fault.kind not in ("missing_field", "renamed_field", "contract_version"):
        assert "symbol=" in message and "n_predict=" in message, message  # a few offending rows
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "qml_contract"]
    assert not check.passed and check.metadata["failures"].value >= 1
    assert "STEP_UP_FOR_RETRY" not in _kinds(result)
    assert not any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)
    assert _files(pipe) == _stored(clean)


# -- accepted ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fault",
    [pytest.param(Fault("mixed_time_formats"), id="mixed-time-formats"), pytest.param(Fault("ignore_range"), id="whole-history")],
)
def test_accepted_fault_stores_exactly_what_a_clean_run_stores(tmp_path, monkeypatch, clean, fault):
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [fault])
    assert result.success
    assert _files(pipe) == clean


def test_unknown_extra_field_is_stored(tmp_path, monkeypatch, clean):
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [Fault("extra_field", field="model_note", value="v2")], span=NEW)
    assert result.success
    for day in ("2025-01-06", "2025-01-07"):
        rows = pd.read_parquet(pipe.file("qml_models", _key(day)))
        assert list(rows.columns)[-1] == "model_note" and (rows["model_note"] == "v2").all()
    assert {p: b for p, b in _files(pipe)["qml_models"].items() if _in(STORED, p)} == _stored(clean)["qml_models"]


def test_empty_day_before_the_watermark_is_stored_as_a_holiday(tmp_path, monkeypatch, clean):
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [Fault("empty_day", day="2025-01-06")], span=NEW)
    assert result.success
    meta = {
        e.step_materialization_data.materialization.partition: e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "qml_models"
    }
    assert meta[_key("2025-01-06")]["status"].value == "holiday" and meta[_key("2025-01-06")]["rows"].value == 0
    assert meta[_key("2025-01-07")]["status"].value == "published"
    assert pd.read_parquet(pipe.file("qml_models", _key("2025-01-06"))).empty
    assert pipe.file("qml_models", _key("2025-01-07")).read_bytes() == clean["qml_models"][f"asset={COIN.key}/date=2025-01-07.parquet"]
    assert {p: b for p, b in _files(pipe)["qml_models"].items() if _in(STORED, p)} == _stored(clean)["qml_models"]


def test_key_scan_finds_a_planted_key(tmp_path, monkeypatch, clean):
    """The scan used above can fail: a file holding the key is found."""
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [])
    (pipe.data_dir / "qml_models" / "leak.txt").write_text(f"key={API_KEY}")
    assert secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir) == [str(pipe.data_dir / "qml_models" / "leak.txt")]
    assert secret_leaks(COIN.key, pipe.instance, [result.run_id])  # the asset key is in events, so the scan reads them
    (pipe.data_dir / "qml_models" / "leak.txt").write_text(f"context: {API_KEY[:-6]}")  # a key cut short is a leak too
    assert secret_leaks(API_KEY, pipe.instance, [result.run_id], pipe.data_dir) == [str(pipe.data_dir / "qml_models" / "leak.txt")]


# -- a hostile upstream and a careless operator ------------------------------------------------------
# Each case below was reproduced against the previous code (see the README's fault table): the key
# leaked, a stored day was overwritten, or a pull ran unbounded. Every run goes through ``_run``,
# which asserts the key is nowhere; each test asserts the stored files are byte-identical.

JSON_ROUTE = {"prefer_parquet": False}


def _check(result, name: str = "qml_contract"):
    return [e for e in result.get_asset_check_evaluations() if e.check_name == name]


def _refused_keeping_files(pipe, result, clean) -> str:
    """The run failed without materialising anything; stored files are as they were; the message."""
    assert not result.success
    assert not any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)
    assert "STEP_UP_FOR_RETRY" not in _kinds(result)
    assert _files(pipe) == _stored(clean)
    return _failure_message(result)


@pytest.mark.parametrize(
    "api_key", [API_KEY + "\n", " " + API_KEY, API_KEY + "\r\n", API_KEY[:8] + " " + API_KEY[8:]],
    ids=["trailing-newline", "leading-space", "trailing-crlf", "inner-space"],
)
def test_a_key_with_whitespace_fails_at_resource_setup_naming_the_variable_never_the_value(tmp_path, monkeypatch, clean, api_key):
    """python-dotenv keeps "KEY\\n" from a quoted .env value; requests then raised InvalidHeader
    with the key in its message, which went to the run log and the event log."""
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [], api_key=api_key)
    message = _refused_keeping_files(pipe, result, clean)
    assert requests_seen == 0  # refused before any request
    assert "QML_API_KEY" in message and "its value is not shown" in message, message


class _Recorder:
    """Another origin on loopback: records every request it gets and whether it carried the key."""

    def __init__(self) -> None:
        import http.server

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append({"path": self.path, "key": self.headers.get("qml-api-key")})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        import threading

        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_redirect_to_another_origin_is_refused_naming_it_and_the_key_is_never_sent_there(tmp_path, monkeypatch, clean):
    with _Recorder() as other:
        fault = Fault("redirect", status=307, to=f"{other.url}/get_qml_models/{COIN.project_id}")
        pipe, result, _ = _run(tmp_path, monkeypatch, clean, [fault])
    message = _refused_keeping_files(pipe, result, clean)
    assert f"a redirect to {other.url}, another origin" in message and COIN.key in message, message
    assert other.seen == []  # not even asked, let alone with the key


def test_a_redirect_within_the_origin_is_followed(tmp_path, monkeypatch, clean):
    target = f"/get_qml_models/{COIN.project_id}?from_date={RUN[0]}&to_date={RUN[1]}&format=parquet"
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [Fault("redirect", status=301, to=target)])
    assert result.success and requests_seen == 3
    assert _files(pipe) == clean


ECHOED = [
    pytest.param("body", id="in-an-invalid-json-body"),
    pytest.param("X-QML-Contract-Version", id="as-the-contract-version"),
    pytest.param("X-QML-Watermark", id="as-the-watermark"),
    pytest.param("Content-Type", id="as-the-content-type"),
    pytest.param("Location", id="in-a-redirect-location"),
    pytest.param("symbol", id="as-a-valid-rows-symbol"),
    pytest.param("close_predict", id="as-a-bad-rows-price"),
    pytest.param("model_note", id="in-an-extra-field"),
]


@pytest.mark.parametrize("field", ECHOED)
@pytest.mark.parametrize("qml", [None, JSON_ROUTE], ids=["parquet", "json"])
def test_a_key_echoed_by_upstream_is_scrubbed_from_every_message_and_never_stored(tmp_path, monkeypatch, clean, field, qml):
    fault = Fault("echo_key", field=field)
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [fault], qml=qml)
    message = _refused_keeping_files(pipe, result, clean)
    assert requests_seen == 1
    if field != "body":  # a parser's error is reported without quoting the body
        assert "***" in message, message
    if field not in ("Content-Type", "Location"):  # request errors; the others are contract violations
        [check] = _check(result)
        assert not check.passed and (field == "body" or "***" in check.description)


def test_a_key_in_a_malformed_header_line_reaches_no_log_and_no_output(tmp_path, monkeypatch, clean, caplog, capfd):
    """urllib3 warns about a header line it cannot parse, quoting it (and its traceback): that
    goes to Python's logging and from there to stderr, which is what a run's compute logs hold."""
    caplog.set_level(logging.WARNING, logger="urllib3")
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [Fault("echo_key", field="header_line")])
    assert result.success and _files(pipe) == clean
    assert "X-Echo ***" in caplog.text and not leaks_in(caplog.text, API_KEY)
    captured = capfd.readouterr()
    assert not leaks_in(captured.out + captured.err, API_KEY)


@pytest.mark.parametrize("body", ["{}", "null", '"maintenance"', "42", '{"rows": []}'])
def test_a_json_body_that_is_not_an_array_is_a_contract_violation_not_empty_days(tmp_path, monkeypatch, clean, body):
    """Read as zero rows, such a body (with a watermark past the range) used to replace every
    stored day by an empty "holiday" partition."""
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [Fault("json_body", value=body)], qml=JSON_ROUTE)
    message = _refused_keeping_files(pipe, result, clean)
    assert "'<body>' breaks rule 'a JSON array of row objects'" in message, message
    [check] = _check(result)
    assert not check.passed


def test_an_empty_pull_over_stored_days_fails_by_default(tmp_path, monkeypatch, clean):
    """``[]`` with a watermark past the range says every day is a holiday: days 4 and 5, stored
    with rows, would become empty. That fails, naming them and the run config that accepts it."""
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [Fault("json_body", value="[]")], qml=JSON_ROUTE)
    message = _refused_keeping_files(pipe, result, clean)
    assert "would replace 2 stored non-empty day(s) with empty ones" in message, message
    assert f"{_key('2025-01-04')} (8 rows stored, holiday now)" in message and _key("2025-01-05") in message
    assert "accept_empty_restatements: true" in message


def test_an_empty_pull_over_stored_days_is_stored_as_a_restatement_when_accepted(tmp_path, monkeypatch, clean):
    config = {"ops": {"qml_models": {"config": {"accept_empty_restatements": True}}}}
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [Fault("json_body", value="[]")], qml=JSON_ROUTE,
                           run_config=config, span=RUN)
    assert result.success
    for day in ("2025-01-04", "2025-01-05", "2025-01-06", "2025-01-07"):
        assert pd.read_parquet(pipe.file("qml_models", _key(day))).empty
    untouched = f"asset={COIN.key}/date=2025-01-03.parquet"
    assert pipe.files("qml_models")[untouched] == clean["qml_models"][untouched]
    [restatement] = _check(result, "qml_restatement")
    assert not restatement.passed and restatement.metadata["restated_partitions"].value == 2
    assert restatement.metadata["rows_removed"].value == 16  # 2 days x 8 rows
    assert any("accepted as restatements" in m for m in pipe.log_messages(result))


def test_a_range_run_that_cannot_store_its_third_day_replaces_no_file(tmp_path, monkeypatch, clean):
    """An extra field accepted by the contract but not storable (an array mixing numbers and text)
    on day 6: days 4 and 5 (which gain the extra column, so their bytes change) must not be replaced."""
    fault = Fault("extra_field", field="model_note", value=[1, "a"], day="2025-01-06")
    pipe, result, _ = _run(tmp_path, monkeypatch, clean, [fault], qml=JSON_ROUTE)
    message = _refused_keeping_files(pipe, result, clean)
    assert f"{_key('2025-01-06')}: cannot be stored as Parquet" in message and "nothing was written" in message, message
    assert not [p for p in (pipe.data_dir / "qml_models").rglob(".*")]  # no temporary file left


BOUNDS = [
    pytest.param([Fault("trickle", size=64, seconds=0.05)], {"qml_pull_deadline_seconds": 1.0},
                 "passed its deadline of 1 s (NEXUS_QML_PULL_DEADLINE_SECONDS)", id="deadline-trickle"),
    pytest.param([Fault("gzip_bomb", size=64 << 20)], {"qml_max_response_bytes": 1 << 20},
                 "decodes to more than", id="gzip-bomb"),
    pytest.param([], {"qml_max_response_bytes": 2048}, "announces", id="announced-too-large"),
]


@pytest.mark.parametrize(("faults", "settings", "named"), BOUNDS)
def test_a_pull_past_its_bounds_fails_with_a_clear_message_and_is_not_retried(tmp_path, monkeypatch, clean, faults, settings, named):
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, faults, **settings)
    message = _refused_keeping_files(pipe, result, clean)
    assert named in message and COIN.key in message, message
    assert requests_seen == 1
    if "max_response_bytes" in str(settings):
        assert "NEXUS_QML_MAX_RESPONSE_BYTES" in message


HOSTILE_CONTRACT = [
    pytest.param(Fault("set_value", field="n_predict", value=20_000), None, "n_predict", "less_than_or_equal_to(10000)",
                 id="horizon-20000"),
    pytest.param(Fault("set_value", field="close_predict", value=1e300), None, "close_predict",
                 "less_than_or_equal_to(1000000000000.0)", id="price-1e300"),
    pytest.param(Fault("set_value", field="time", value="9999-12-31"), JSON_ROUTE, "time",
                 "within the nanosecond timestamp range", id="time-9999-12-31-json"),
    pytest.param(Fault("set_value", field="time", value="9999-12-31"), None, "time",
                 "within the nanosecond timestamp range", id="time-9999-12-31-parquet"),
    pytest.param(Fault("garbled_body"), None, "<body>", "a readable Parquet file", id="unreadable-parquet"),
    pytest.param(Fault("duplicate_key", field="close_predict"), JSON_ROUTE, "close_predict",
                 "once per row (no duplicate keys)", id="duplicate-key-json"),
    pytest.param(Fault("duplicate_key", field="close_predict"), None, "close_predict",
                 "once per row (no duplicate keys)", id="duplicate-column-parquet"),
]


@pytest.mark.parametrize(("fault", "qml", "field", "rule"), HOSTILE_CONTRACT)
def test_an_absurd_or_malformed_payload_fails_the_contract_check_by_rule(tmp_path, monkeypatch, clean, fault, qml, field, rule):
    pipe, result, requests_seen = _run(tmp_path, monkeypatch, clean, [fault], qml=qml)
    message = _refused_keeping_files(pipe, result, clean)
    assert requests_seen == 1
    assert f"field {field!r}" in message and rule in message and COIN.key in message, message
    [check] = _check(result)
    assert not check.passed and check.metadata["failures"].value >= 1
