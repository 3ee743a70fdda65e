"""Every scripted fault of ``qml-server``, through the real ``QMLClient`` on loopback.

Each fault ends one of four ways, asserted here: retried and recovered (the retries logged),
refused at once (HTTP 4xx, wrong content type), refused as a contract violation (a message naming
the field, the rule and a few offending rows), or accepted (the contract allows it). The API key
never shows in a log line, a message or a traceback. The same faults through the Dagster asset:
``nexus_assets_tests/defs/test_ingest_faults.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import ijson
import pandas as pd
import pytest
import requests

from nexus_assets.core.contract import ContractViolation, validate_qml_rows
from nexus_assets.core.freshness import DayStatus, classify_day
from nexus_assets.qml import client as client_module
from nexus_assets.qml.client import QMLClient, QMLLimitError, QMLRequestError, QMLTransientError, RetryPolicy
from nexus_assets.qml.faults import FAULT_KINDS, Fault, apply_fault, load_faults
from nexus_assets.qml.sources import embedded_project, pull_embedded
from nexus_assets_tests.loopback import API_KEY, COIN, CollectingLog, days, leaks_in, serve

pytestmark = pytest.mark.slow  # integration: Dagster runs, servers, subprocesses or a browser

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.01, max_retry_after=2)
DAYS = days(dt.date(2025, 1, 4), dt.date(2025, 1, 7))
FORMATS = pytest.mark.parametrize("prefer_parquet", [True, False], ids=["parquet", "json"])
# Kinds exercised by the tables below (filled as they are built) and by the single tests of part 4.
KINDS_TESTED: set[str] = set()
KINDS_TESTED_ONE_BY_ONE = {"mixed_time_formats", "extra_field", "empty_day", "watermark", "contract_version", "ok", "ignore_range",
                           "garbled_body", "duplicate_key", "trickle", "gzip_bomb", "parquet_bomb"}


def _client(server, log: CollectingLog, prefer_parquet: bool = True, read_timeout: float = 5.0) -> QMLClient:
    return QMLClient(server.url, API_KEY, retry=FAST, connect_timeout=2.0, read_timeout=read_timeout,
                     prefer_parquet=prefer_parquet, log=log)


def _reference(day_list=DAYS) -> pd.DataFrame:
    return pull_embedded(COIN, day_list).rows


def _texts(log: CollectingLog, error: BaseException | None = None) -> list[str]:
    texts = log.infos + log.warnings
    if error is not None:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    return texts


def _assert_no_key(log: CollectingLog, error: BaseException | None = None) -> None:
    leaks = [t[:120] for t in _texts(log, error) if leaks_in(t, API_KEY)]
    assert not leaks, leaks


def _table(cases: list[tuple]) -> list:
    KINDS_TESTED.update(case[1].kind for case in cases)
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


# -- 1. transient: retried with back-off, logged, recovered ----------------------------------------

TRANSIENT = _table([
    ("timeout", Fault("stall", seconds=1.5)),
    ("connection-reset", Fault("reset")),
    ("body-cut-short", Fault("truncate")),
    ("429-retry-after", Fault("status", status=429, retry_after="1")),
    ("500", Fault("status", status=500)),
    ("502", Fault("status", status=502)),
    ("503", Fault("status", status=503)),
    ("504", Fault("status", status=504)),
])


@FORMATS
@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_fault_is_retried_logged_and_recovered(fault: Fault, prefer_parquet: bool) -> None:
    log = CollectingLog()
    with serve(COIN, faults=[fault]) as server:
        client = _client(server, log, prefer_parquet, read_timeout=0.5 if fault.kind == "stall" else 5.0)
        pull = client.pull(COIN.project_id, DAYS)
        assert server.data_requests == 2 and not server.faults
    assert client.attempts == 2
    pd.testing.assert_frame_equal(pull.rows, _reference(), check_exact=True)
    [warning] = log.warnings
    assert "attempt 1/3 failed" in warning and "retrying in" in warning
    expected = {"stall": "timeout", "reset": "connection", "truncate": "cut short"}.get(fault.kind, f"HTTP {fault.status}")
    assert expected in warning, warning
    if fault.retry_after:
        assert "retrying in 1.0s" in warning  # Retry-After wins over the shorter back-off
    assert any("ok after 2 attempt(s)" in m for m in log.infos)
    _assert_no_key(log)


def test_retries_exhausted_raise_a_transient_error_naming_the_status() -> None:
    log = CollectingLog()
    with serve(COIN, faults=[Fault("status", status=503)] * 3) as server:
        client = _client(server, log)
        with pytest.raises(QMLTransientError, match="HTTP 503") as caught:
            client.pull(COIN.project_id, DAYS)
    assert client.attempts == 3 and len(log.warnings) == 2
    _assert_no_key(log, caught.value)


# -- 2. refused at once: the request itself is wrong -----------------------------------------------

REQUEST_ERRORS = _table([
    ("401", Fault("status", status=401), "401"),
    ("403", Fault("status", status=403), "403"),
    ("404", Fault("status", status=404), "404"),
    ("wrong-content-type", Fault("content_type"), "text/html"),
])


@pytest.mark.parametrize(("fault", "named"), REQUEST_ERRORS)
def test_request_error_is_not_retried(fault: Fault, named: str) -> None:
    log = CollectingLog()
    with serve(COIN, faults=[fault]) as server:
        client = _client(server, log)
        with pytest.raises(QMLRequestError, match=named) as caught:
            client.pull(COIN.project_id, DAYS)
        assert server.data_requests == 1
    assert client.attempts == 1 and not log.warnings
    _assert_no_key(log, caught.value)


# -- 3. refused: the payload breaks the contract -----------------------------------------------------
# (fault, field, rule, whether offending rows are shown: a missing column shows the fields received)

CONTRACT = _table([
    ("missing-field", Fault("missing_field", field="close_predict"), "close_predict", "required field present", False),
    ("renamed-field", Fault("renamed_field", field="target_var_price"), "target_var_price", "required field present", False),
    ("symbol-as-number", Fault("wrong_type", field="symbol"), "symbol", "type: non-empty string", True),
    ("time-as-epoch-ms", Fault("wrong_type", field="time"), "time", "format: ISO 8601 or RFC 1123", True),
    ("horizon-as-boolean", Fault("wrong_type", field="n_predict"), "n_predict", "type: number", True),
    ("price-as-string", Fault("numbers_as_strings", field="close_predict"), "close_predict", "type: number", True),
    ("horizon-as-string", Fault("numbers_as_strings", field="n_predict"), "n_predict", "type: number", True),
    ("duplicate-rows", Fault("duplicate_rows"), "symbol, time, n_predict", "unique (symbol, time, n_predict)", True),
    ("nan-price", Fault("set_value", field="close_predict", value="NaN"), "close_predict", "finite", True),
    ("nan-target", Fault("set_value", field="target_var_price", value="NaN"), "target_var_price", "finite", True),
    ("nan-horizon", Fault("set_value", field="n_predict", value="NaN"), "n_predict", "finite", True),
    ("infinite-price", Fault("set_value", field="close_predict", value="Infinity"), "close_predict", "finite", True),
    ("minus-infinite-target", Fault("set_value", field="target_var_price", value="-Infinity"), "target_var_price", "finite", True),
    ("zero-price", Fault("set_value", field="close_predict", value=0), "close_predict", "greater_than(0)", True),
    ("negative-price", Fault("set_value", field="close_predict", value=-5.5), "close_predict", "greater_than(0)", True),
    ("zero-target", Fault("set_value", field="target_var_price", value=0), "target_var_price", "greater_than(0)", True),
    ("negative-target", Fault("set_value", field="target_var_price", value=-1), "target_var_price", "greater_than(0)", True),
    ("two-target-prices-one-day", Fault("conflicting_price"), "target_var_price", "one target_var_price per time", True),
    ("rows-after-watermark", Fault("future_rows", days=3), "time", "not in the future (at most 2025-01-20, the upstream watermark)", True),
    ("unknown-contract-version", Fault("contract_version", version="2.0"), "X-QML-Contract-Version", "major version 1", False),
])


def _refusal(client: QMLClient) -> ContractViolation:
    """The contract violation a pull ends in: raised by the client, or found validating its rows."""
    try:
        pull = client.pull(COIN.project_id, DAYS)
    except ContractViolation as exc:
        return exc
    report = validate_qml_rows(pull.rows)
    assert not report.passed, "the faulty payload passed the contract"
    with pytest.raises(ContractViolation) as caught:
        report.raise_if_failed(COIN.key)
    return caught.value


@FORMATS
@pytest.mark.parametrize(("fault", "field", "rule", "rows_shown"), CONTRACT)
def test_contract_violation_names_field_rule_and_rows(fault, field, rule, rows_shown, prefer_parquet) -> None:
    log = CollectingLog()
    with serve(COIN, faults=[fault]) as server:
        client = _client(server, log, prefer_parquet)
        violation = _refusal(client)
    assert client.attempts == 1 and not log.warnings  # never retried
    message = str(violation)
    assert field in message and rule in message, message
    assert any(p.field == field and rule in p.rule for p in violation.problems), violation.problems
    if rows_shown:
        assert "symbol=" in message and "n_predict=" in message, message
    if fault.kind == "renamed_field":
        assert "targetVarPrice" in message  # the fields received are listed
    _assert_no_key(log, violation)


def test_json_nan_and_infinity_are_bare_tokens_on_the_wire_and_named_by_the_client() -> None:
    """Python's json (so Flask) writes NaN/Infinity as tokens that are not JSON; ijson rejects them,
    so the client reads them as markers the contract refuses by field and row."""
    faults = [Fault("set_value", field="close_predict", value="NaN", rows=2)]
    with serve(COIN, faults=faults) as server:
        raw = requests.get(f"{server.url}/get_qml_models/{COIN.project_id}", headers={"qml-api-key": API_KEY},
                           params={"from_date": "2025-01-04", "to_date": "2025-01-04"}, timeout=5).text
    assert raw.count('"close_predict":NaN') == 2
    with pytest.raises(ijson.common.JSONError):
        list(ijson.items(io.BytesIO(raw.encode()), "item"))  # what the client would hit unaided
    with serve(COIN, faults=faults + [Fault("set_value", field="target_var_price", value="-Infinity", rows=1)]) as server:
        first, second = (_refusal(_client(server, CollectingLog(), prefer_parquet=False)) for _ in range(2))
    assert "field 'close_predict' breaks rule 'finite' in 2 row(s)" in str(first) and "close_predict=nan" in str(first)
    assert "field 'target_var_price' breaks rule 'finite' in 1 row(s)" in str(second) and "target_var_price=-inf" in str(second)


def test_non_finite_tokens_survive_any_read_boundary() -> None:
    """The token rewrite holds whatever the reads' sizes (a token never splits across two)."""
    body = (
        b'[{"symbol":"NaN","time":"x","close_predict": NaN ,"yn_p":-Infinity},'
        b'{"symbol":"a:NaN","close_predict":Infinity},{"close_predict":1.5,"note":"Infinity"}]'
    )
    expected = [
        {"symbol": "NaN", "time": "x", "close_predict": "\x00NaN", "yn_p": "\x00-Infinity"},
        {"symbol": "a:NaN", "close_predict": "\x00Infinity"},
        {"close_predict": 1.5, "note": "Infinity"},
    ]

    class Trickle(io.BytesIO):
        def __init__(self, data: bytes, step: int) -> None:
            super().__init__(data)
            self.step = step

        def read(self, size: int = -1) -> bytes:
            return super().read(min(self.step, size) if size and size > 0 else self.step)

    for step in (1, 2, 3, 5, 7, 11, 64, 4096):
        parsed = list(ijson.items(client_module._NonFiniteTokens(Trickle(body, step)), "item", use_float=True))
        assert parsed == expected, step


# -- 4. accepted: the contract allows it -------------------------------------------------------------


@FORMATS
def test_mixed_time_formats_and_offsets_are_accepted(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("mixed_time_formats")]) as server:
        raw = requests.get(f"{server.url}/get_qml_models/{COIN.project_id}", headers={"qml-api-key": API_KEY},
                           params={"from_date": "2025-01-04", "to_date": "2025-01-07"}, timeout=5).json()
        log = CollectingLog()
        pull = _client(server, log, prefer_parquet).pull(COIN.project_id, DAYS)
    sent = {r["time"] for r in raw}
    assert {"Sat, 04 Jan 2025 00:00:00 GMT", "2025-01-04", "2025-01-04T05:30:00+05:30", "2025-01-03T19:00:00-05:00"} & sent
    assert any(t.endswith("Z") for t in sent) and any(t.endswith("+00:00") for t in sent)
    pd.testing.assert_frame_equal(pull.rows, _reference(), check_exact=True)


@FORMATS
def test_unknown_extra_field_is_kept(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("extra_field", field="model_note", value="retrained")]) as server:
        pull = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    assert list(pull.rows.columns)[-1] == "model_note" and (pull.rows["model_note"] == "retrained").all()
    pd.testing.assert_frame_equal(pull.rows.drop(columns="model_note"), _reference(), check_exact=True)
    assert validate_qml_rows(pull.rows).passed


@FORMATS
def test_nan_in_a_direction_field_is_a_null(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("set_value", field="yn_p", value="NaN", rows=2)]) as server:
        pull = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    assert pull.rows["yn_p"].isna().sum() == 2 and validate_qml_rows(pull.rows).passed
    reference = _reference()
    pd.testing.assert_frame_equal(pull.rows.drop(columns="yn_p"), reference.drop(columns="yn_p"), check_exact=True)


@FORMATS
def test_empty_day_before_the_watermark_is_a_holiday(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("empty_day", day="2025-01-05")]) as server:
        pull = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    by_day = pull.by_day()
    assert by_day[dt.date(2025, 1, 5)].empty and all(len(by_day[d]) for d in DAYS if d.day != 5)
    assert classify_day(COIN, dt.date(2025, 1, 5), 0, pull.watermark) is DayStatus.HOLIDAY
    kept = _reference()[_reference()["time"] != pd.Timestamp("2025-01-05")].reset_index(drop=True)
    pd.testing.assert_frame_equal(pull.rows.reset_index(drop=True), kept, check_exact=True)


@FORMATS
def test_empty_days_after_the_watermark_are_unpublished(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("watermark", day="2025-01-05")]) as server:
        pull = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    assert pull.watermark == pd.Timestamp("2025-01-05")
    statuses = {d: classify_day(COIN, d, len(rows), pull.watermark) for d, rows in pull.by_day().items()}
    assert [statuses[d] for d in DAYS] == [DayStatus.PUBLISHED] * 2 + [DayStatus.UNPUBLISHED] * 2


@FORMATS
def test_same_major_contract_version_and_ok_placeholder_are_accepted(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("ok"), Fault("contract_version", version="1.9")]) as server:
        first = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
        second = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    assert (first.contract_version, second.contract_version) == ("1", "1.9")
    pd.testing.assert_frame_equal(second.rows, first.rows, check_exact=True)


@FORMATS
def test_whole_history_served_whatever_the_range_is_filtered_by_the_client(prefer_parquet: bool) -> None:
    with serve(COIN, faults=[Fault("ignore_range")]) as server:
        raw = requests.get(f"{server.url}/get_qml_models/{COIN.project_id}", headers={"qml-api-key": API_KEY},
                           params={"from_date": "2025-01-04", "to_date": "2025-01-04"}, timeout=5).json()
        server.script([Fault("ignore_range")])
        pull = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    assert len({r["time"] for r in raw}) == 20  # the whole history, not the one day asked for
    pd.testing.assert_frame_equal(pull.rows, _reference(), check_exact=True)


# -- 5. the fault script itself ----------------------------------------------------------------------


def test_fault_script_from_a_json_file(tmp_path: Path) -> None:
    script = tmp_path / "faults.json"
    script.write_text(json.dumps([
        {"kind": "status", "status": 503, "retry_after": "0"},
        {"kind": "set_value", "field": "close_predict", "value": "NaN", "rows": 1},
        {"kind": "ok"},
    ]))
    assert load_faults(script) == [
        Fault("status", status=503, retry_after="0"), Fault("set_value", field="close_predict", value="NaN", rows=1), Fault("ok"),
    ]
    for bad, message in [
        ([{"kind": "explode"}], "unknown fault kind 'explode'"),
        ([{"kind": "status", "sttaus": 500}], "unknown fault field(s) sttaus"),
        ([{"kind": "set_value", "field": "symbol", "value": 1}], "field must be one of"),
        ([{"kind": "set_value", "field": "close_predict", "value": "abc"}], "could not convert"),
        ({"kind": "ok"}, "expected a JSON list"),
    ]:
        script.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_faults(script)


def test_payload_faults_leave_the_served_history_untouched() -> None:
    history = embedded_project(COIN).rows(COIN.start_date, COIN.end_date)
    before = history.copy()
    for kind in ("mixed_time_formats", "duplicate_rows", "conflicting_price", "future_rows", "empty_day"):
        apply_fault(history, Fault(kind), pd.Timestamp(COIN.end_date))
    apply_fault(history, Fault("set_value", field="n_predict", value="NaN"), pd.Timestamp(COIN.end_date))
    apply_fault(history, Fault("wrong_type", field="time"), pd.Timestamp(COIN.end_date))
    pd.testing.assert_frame_equal(history, before)


def test_cli_serves_a_fault_script(tmp_path: Path) -> None:
    catalog = tmp_path / "coin.toml"
    catalog.write_text(
        f'[[assets]]\nkey = "{COIN.key}"\nproject_id = {COIN.project_id}\nname = "{COIN.name}"\ndisplay_name = "x"\n'
        f'category = "Crypto"\ncalendar = "crypto"\nstart_date = 2025-01-01\nend_date = 2025-01-20\nsource = "synthetic"\n'
        f"horizons = [1, 2]\nmodels_per_horizon = 4\nseed = 7\n"
    )
    script = tmp_path / "faults.json"
    script.write_text(json.dumps([{"kind": "status", "status": 503}, {"kind": "future_rows"}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QML_")}
    env.update(QML_API_KEY=API_KEY, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    process = subprocess.Popen(
        [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", "0", "--catalog", str(catalog),
         "--faults", str(script), "--verbose"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        listening = process.stdout.readline()
        url = listening.split("listening on ")[1].split()[0]
        assert "2 fault(s)" in process.stdout.readline()
        log = CollectingLog()
        client = QMLClient(url, API_KEY, retry=FAST, log=log)
        with pytest.raises(ContractViolation, match="not in the future"):
            client.pull(COIN.project_id, DAYS)
        assert client.attempts == 2 and "HTTP 503" in log.warnings[0]
        pd.testing.assert_frame_equal(client.pull(COIN.project_id, DAYS).rows, _reference(), check_exact=True)
    finally:
        process.kill()
        out, err = process.communicate(timeout=10)
    assert "fault status" in err and "fault future_rows" in err  # --verbose logs each fault applied
    assert API_KEY not in out + err

    script.write_text(json.dumps([{"kind": "nope"}]))
    refused = subprocess.run(
        [sys.executable, "-m", "nexus_assets.cli", "qml-server", "--port", "0", "--catalog", str(catalog), "--faults", str(script)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 2 and "unknown fault kind 'nope'" in refused.stderr


# -- 6. a hostile upstream: the key, redirects, shapes, bounds ---------------------------------------


@pytest.mark.parametrize("key", [API_KEY + "\n", " " + API_KEY, API_KEY + "\t", API_KEY[:5] + "\u00e9" + API_KEY[5:]],
                         ids=["trailing-newline", "leading-space", "trailing-tab", "non-ascii"])
def test_a_key_that_cannot_go_into_a_header_as_is_is_refused_naming_the_variable(key: str) -> None:
    with pytest.raises(QMLRequestError, match="QML_API_KEY .*its value is not shown") as caught:
        QMLClient("http://127.0.0.1:9", key)
    _assert_no_key(CollectingLog(), caught.value)


def test_any_error_on_the_request_path_leaves_scrubbed_and_unchained() -> None:
    """Not only timeouts and connection errors: an error of any type whose message quotes the key
    (here from the transport itself) becomes a request error without it, and without the original
    as its context or cause (Dagster records the whole chain)."""

    class Quoting(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            raise ValueError(f"cannot send header qml-api-key: {request.headers['qml-api-key']!r}")

        def close(self):
            pass

    session = requests.Session()
    session.mount("http://", Quoting())
    log = CollectingLog()
    client = QMLClient("http://127.0.0.1:9", API_KEY, retry=FAST, session=session, log=log)
    with pytest.raises(QMLRequestError, match=r"ValueError: cannot send header qml-api-key: '\*\*\*'") as caught:
        client.pull(COIN.project_id, DAYS)
    assert client.attempts == 1 and caught.value.__context__ is None and caught.value.__cause__ is None
    _assert_no_key(log, caught.value)


class _Recorder:
    """Another origin on loopback that records every request it gets (and whether it held the key)."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append(self.headers.get("qml-api-key"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> _Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


REDIRECTS = _table([
    ("301", Fault("redirect", status=301, to="{other}/get_qml_models/4301")),
    ("302", Fault("redirect", status=302, to="{other}/get_qml_models/4301")),
    ("307", Fault("redirect", status=307, to="{other}/get_qml_models/4301")),
    ("308", Fault("redirect", status=308, to="{other}/x")),
])


@pytest.mark.parametrize("fault", REDIRECTS)
def test_a_redirect_to_another_origin_is_refused_and_never_followed_with_the_key(fault: Fault) -> None:
    log = CollectingLog()
    with _Recorder() as other, serve(COIN, faults=[dataclasses.replace(fault, to=fault.to.format(other=other.url))]) as server:
        client = _client(server, log)
        with pytest.raises(QMLRequestError) as caught:
            client.pull(COIN.project_id, DAYS)
    assert f"a redirect to {other.url}, another origin than QML_API_BASE_URL's" in str(caught.value)
    assert caught.value.status == fault.status and client.attempts == 1
    assert other.seen == []
    _assert_no_key(log, caught.value)


def test_redirects_within_the_origin_are_followed_up_to_five() -> None:
    hop = Fault("redirect", to="/get_qml_models/4301?from_date=2025-01-04&to_date=2025-01-07")
    with serve(COIN, faults=[hop] * 2) as server:
        pull = _client(server, CollectingLog(), prefer_parquet=False).pull(COIN.project_id, DAYS)
    pd.testing.assert_frame_equal(pull.rows, _reference(), check_exact=True)
    with serve(COIN, faults=[hop] * 6) as server:
        with pytest.raises(QMLRequestError, match="more than 5 redirects"):
            _client(server, CollectingLog()).pull(COIN.project_id, DAYS)


def test_a_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    """The same host and port, but from TLS to plain HTTP: another origin."""
    import shutil
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a certificate for the loopback TLS server")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _Recorder() as plain, serve(COIN) as server:
        server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
        https = server.url.replace("http://", "https://")
        session = requests.Session()
        session.trust_env = False  # a REQUESTS_CA_BUNDLE in the environment would override verify
        session.verify = str(cert)
        log = CollectingLog()
        client = QMLClient(https, API_KEY, retry=FAST, session=session, log=log)
        assert len(client.pull(COIN.project_id, DAYS).rows) == len(_reference())  # TLS works
        server.script([Fault("redirect", to=plain.url + "/get_qml_models/4301")])
        with pytest.raises(QMLRequestError, match=f"a redirect to {plain.url}, another origin than QML_API_BASE_URL's https://"):
            client.pull(COIN.project_id, DAYS)
    assert plain.seen == []
    _assert_no_key(log)


BODIES = _table([
    ("object", Fault("json_body", value="{}"), "an object"),
    ("null", Fault("json_body", value="null"), "null"),
    ("string", Fault("json_body", value='"maintenance"'), "a string"),
    ("number", Fault("json_body", value="42"), "a number"),
    ("empty", Fault("json_body", value=""), "an empty body"),
    ("array-of-numbers", Fault("json_body", value="[1, 2]"), "got int"),
])


@pytest.mark.parametrize(("fault", "named"), BODIES)
def test_a_json_body_that_is_not_an_array_of_objects_is_a_contract_violation(fault: Fault, named: str) -> None:
    with serve(COIN, faults=[fault]) as server:
        client = _client(server, CollectingLog())
        with pytest.raises(ContractViolation) as caught:
            client.pull(COIN.project_id, DAYS)
    assert named in str(caught.value) and client.attempts == 1
    [problem] = caught.value.problems
    assert problem.field == "<body>" and problem.rule == "a JSON array of row objects"


@FORMATS
def test_a_body_complete_on_the_wire_but_unreadable_is_a_contract_violation(prefer_parquet: bool) -> None:
    """Parquet decode errors are reported like JSON ones (a raw ArrowInvalid used to escape)."""
    fault = Fault("garbled_body")
    with serve(COIN, faults=[fault]) as server:
        client = _client(server, CollectingLog(), prefer_parquet)
        with pytest.raises(ContractViolation) as caught:
            client.pull(COIN.project_id, DAYS)
    [problem] = caught.value.problems
    assert problem.field == "<body>" and problem.rule == ("a readable Parquet file" if prefer_parquet else "complete JSON")
    assert client.attempts == 1


@FORMATS
def test_a_key_written_twice_in_a_row_is_a_contract_violation_not_last_wins(prefer_parquet: bool) -> None:
    fault = Fault("duplicate_key", field="close_predict", rows=2)
    with serve(COIN, faults=[fault]) as server:
        with pytest.raises(ContractViolation) as caught:
            _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    [problem] = caught.value.problems
    assert (problem.field, problem.rule) == ("close_predict", "once per row (no duplicate keys)")
    if not prefer_parquet:  # JSON names the rows; a Parquet file has the column twice in every row
        assert problem.count == 2 and [e["row"] for e in problem.examples] == [0, 1] and "symbol" in problem.examples[0]


ECHOES = _table([
    ("body", Fault("echo_key", field="body")),
    ("contract-version", Fault("echo_key", field="X-QML-Contract-Version")),
    ("watermark", Fault("echo_key", field="X-QML-Watermark")),
    ("content-type", Fault("echo_key", field="Content-Type")),
    ("location", Fault("echo_key", field="Location")),
    ("symbol", Fault("echo_key", field="symbol")),
    ("time", Fault("echo_key", field="time")),
    ("price", Fault("echo_key", field="close_predict")),
    ("extra-field", Fault("echo_key", field="model_note")),
])


@FORMATS
@pytest.mark.parametrize("fault", ECHOES)
def test_a_key_echoed_back_is_in_no_message_and_no_returned_row(fault: Fault, prefer_parquet: bool) -> None:
    log = CollectingLog()
    with serve(COIN, faults=[fault]) as server:
        client = _client(server, log, prefer_parquet)
        with pytest.raises((ContractViolation, QMLRequestError)) as caught:
            client.pull(COIN.project_id, DAYS)
    assert client.attempts == 1
    _assert_no_key(log, caught.value)
    if isinstance(caught.value, ContractViolation):
        assert not any(leaks_in(repr(p), API_KEY) for p in caught.value.problems)


@FORMATS
def test_a_key_in_a_malformed_header_line_is_scrubbed_from_urllib3s_warning(prefer_parquet: bool, caplog) -> None:
    """urllib3 logs a header line it cannot parse, whole, with a traceback; that warning reaches
    stderr and so a run's compute logs. The rows themselves are fine and are read."""
    [fault] = [p.values[0] for p in _table([("header-line", Fault("echo_key", field="header_line"))])]
    caplog.set_level(logging.WARNING, logger="urllib3")
    with serve(COIN, faults=[fault]) as server:
        pull = _client(server, CollectingLog(), prefer_parquet).pull(COIN.project_id, DAYS)
    pd.testing.assert_frame_equal(pull.rows, _reference(), check_exact=True)
    warnings = [r for r in caplog.records if r.name.startswith("urllib3")]
    assert warnings and "Failed to parse headers" in caplog.text and "X-Echo ***" in caplog.text
    assert not leaks_in(caplog.text, API_KEY)


def test_a_pull_past_its_deadline_stops_there_and_is_not_retried() -> None:
    """A server trickling its body (each read well within the read timeout) used to keep a pull
    alive for as long as it liked, holding the qml_api pool."""
    fault = Fault("trickle", size=32, seconds=0.05)
    log = CollectingLog()
    with serve(COIN, faults=[fault]) as server:
        client = QMLClient(server.url, API_KEY, retry=FAST, read_timeout=5.0, deadline_seconds=1.0, log=log)
        with pytest.raises(QMLLimitError, match=r"passed its deadline of 1 s \(NEXUS_QML_PULL_DEADLINE_SECONDS\)"):
            client.pull(COIN.project_id, DAYS)
    assert client.attempts == 1 and not log.warnings


def test_a_slow_but_complete_trickle_within_the_deadline_is_read() -> None:
    with serve(COIN, faults=[Fault("trickle", size=4096, seconds=0.01)]) as server:
        pull = _client(server, CollectingLog(), prefer_parquet=False).pull(COIN.project_id, DAYS)
    pd.testing.assert_frame_equal(pull.rows, _reference(), check_exact=True)


@FORMATS
def test_a_response_larger_than_the_maximum_is_refused(prefer_parquet: bool) -> None:
    with serve(COIN) as server:
        client = QMLClient(server.url, API_KEY, retry=FAST, prefer_parquet=prefer_parquet, max_response_bytes=1024)
        with pytest.raises(QMLLimitError, match=r"announces [0-9,]+ bytes, more than the maximum of 1,024 decoded bytes"):
            client.pull(COIN.project_id, DAYS)
    assert client.attempts == 1


def test_a_parquet_body_declaring_more_than_the_maximum_is_refused_before_decoding() -> None:
    """A million identical rows take a few KB of Parquet and 56 MB once decoded: the footer says
    so, and the body is refused before a column is decoded."""
    with serve(COIN, faults=[Fault("parquet_bomb", size=1_000_000)]) as server:
        client = QMLClient(server.url, API_KEY, retry=FAST, max_response_bytes=32 << 20)
        with pytest.raises(QMLLimitError, match=r"declares [0-9,]+ decoded bytes, more than the maximum of 33,554,432"):
            client.pull(COIN.project_id, DAYS)


# The client in a child process whose address space is capped: a bug that inflates the bomb fails
# there with a MemoryError (or is killed), never takes the machine down.
_BOUNDED_PULL = """
import json, resource, sys
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import datetime as dt
from nexus_assets.qml.client import QMLClient, RetryPolicy
client = QMLClient(sys.argv[1], sys.argv[2], prefer_parquet=sys.argv[4] == "parquet", max_response_bytes=int(sys.argv[5]),
                   retry=RetryPolicy(max_attempts=1))
try:
    client.pull(4301, [dt.date(2025, 1, 4)])
    outcome = {"error": None}
except BaseException as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc)}
print(json.dumps(outcome))
"""


def test_a_parquet_bomb_is_refused_from_its_footer_in_a_capped_process() -> None:
    """60 million identical rows (a few MB of Parquet, 3.4 GB once decoded) against a maximum of
    2 GiB, in a child limited to 1.5 GiB of address space: refused from the footer alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QML_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with serve(COIN, faults=[Fault("parquet_bomb", size=60_000_000)]) as server:
        child = subprocess.run([sys.executable, "-c", _BOUNDED_PULL, server.url, API_KEY, str(3 << 29), "parquet", str(2 << 30)],
                               env=env, capture_output=True, text=True, timeout=240)
    assert child.returncode == 0, child.stderr[-2000:]
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "QMLLimitError" and "declares" in outcome["message"], outcome
    assert not leaks_in(child.stdout + child.stderr, API_KEY)


@FORMATS
def test_a_gzip_bomb_stops_at_the_maximum_decoded_size_while_streaming(prefer_parquet: bool) -> None:
    """4 GiB of whitespace in a few MB of gzip, against a 64 MiB maximum, in a child limited to
    1.5 GiB of address space: the pull must fail with the size message, not run out of memory."""
    fault = Fault("gzip_bomb", size=4 << 30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QML_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with serve(COIN, faults=[fault]) as server:
        child = subprocess.run(
            [sys.executable, "-c", _BOUNDED_PULL, server.url, API_KEY, str(3 << 29), "parquet" if prefer_parquet else "json",
             str(64 << 20)],
            env=env, capture_output=True, text=True, timeout=240,
        )
    assert child.returncode == 0, child.stderr[-2000:]
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "QMLLimitError", outcome
    assert "decodes to more than the maximum of 67,108,864 decoded bytes (NEXUS_QML_MAX_RESPONSE_BYTES)" in outcome["message"]
    assert not leaks_in(child.stdout + child.stderr, API_KEY)


def test_every_fault_kind_has_a_test() -> None:
    """A new fault kind without a test in this file fails here."""
    untested = set(FAULT_KINDS) - KINDS_TESTED - KINDS_TESTED_ONE_BY_ONE
    assert not untested, sorted(untested)
