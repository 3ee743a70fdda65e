"""The fast JSON path (Arrow's reader over newline-delimited blocks) against the streaming parser,
its slow, obviously-correct reference: same typed rows, same bytes once stored, and every body the
fast path cannot vouch for read by the streaming parser instead, with its exact message."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pandas as pd
import pytest

from nexus_assets.catalog import CatalogAsset
from nexus_assets.core.contract import ContractViolation, time_limit
from nexus_assets.defs.storage import _parquet_bytes
from nexus_assets.qml import client as client_module
from nexus_assets.qml.client import _fast_json_rows, _NotFast, _read_json_rows, _SpoolBody, _stream_json_rows
from nexus_assets.qml.server import rows_to_json
from nexus_assets.qml.sources import pull_embedded

START, END = dt.date(2025, 1, 1), dt.date(2025, 2, 9)
COIN = CatalogAsset(key="4301_Fast_Coin", project_id=4301, name="Fast_Coin", display_name="Fast coin", category="Crypto",
                    calendar="crypto", start_date=START, end_date=END, source="synthetic", horizons=(1, 3, 7),
                    models_per_horizon=25, seed=23)
DAYS = tuple(START + dt.timedelta(days=i) for i in range((END - START).days + 1))
LIMIT = time_limit(pd.Timestamp(END), dt.date(2026, 12, 3))


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """QDT-like rows (the default traits: ties, nulls, churn, days without a price)."""
    frame = pull_embedded(COIN, DAYS).rows
    assert frame["target_var_price"].isna().any()  # the null prices of real tables are there
    return frame


# 1 KiB blocks (the most block boundaries) cost ~3 s a shape: in the whole suite, not the fast subset.
@pytest.fixture(params=[pytest.param(1 << 10, marks=pytest.mark.slow), 1 << 16, 32 << 20],
                ids=["1-KiB-blocks", "64-KiB-blocks", "default-blocks"])
def block(request, monkeypatch):
    monkeypatch.setattr(client_module, "_JSON_BLOCK", request.param)
    return request.param


def slow(body: bytes, days=DAYS):
    return _stream_json_rows(_SpoolBody(io.BytesIO(body)), days, LIMIT)


def either(body: bytes, days=DAYS):
    return _read_json_rows(_SpoolBody(io.BytesIO(body)), days, LIMIT)


def assert_same(actual, expected):
    (rows, latest), (ref_rows, ref_latest) = actual, expected
    pd.testing.assert_frame_equal(rows, ref_rows, check_exact=True)
    assert list(rows.dtypes) == list(ref_rows.dtypes) and latest == ref_latest
    for day in DAYS:  # what the IO manager would store, byte for byte
        stamp = pd.Timestamp(day)
        assert _parquet_bytes(rows[rows["time"] == stamp].reset_index(drop=True)) == \
            _parquet_bytes(ref_rows[ref_rows["time"] == stamp].reset_index(drop=True))


def spaced(body: bytes) -> bytes:
    """As many JSON writers do: a space after each separator and a newline between objects."""
    return body.replace(b'},{', b'},\n {').replace(b'","', b'", "').replace(b',"', b', "').replace(b'":', b'": ')


def pretty(rows: pd.DataFrame) -> bytes:
    """Pretty-printed (objects across several lines)."""
    return json.dumps(json.loads(rows_to_json(rows)), indent=2).encode()


@pytest.mark.parametrize("shape", ["compact", "spaced", "pretty", "without-direction-fields", "some-days"])
def test_fast_path_reads_what_the_streaming_parser_reads(rows, block, shape):
    days = DAYS
    if shape == "compact":
        body = rows_to_json(rows)
    elif shape == "spaced":
        body = spaced(rows_to_json(rows))
    elif shape == "pretty":
        body = pretty(rows)
    elif shape == "without-direction-fields":
        body = rows_to_json(rows.drop(columns=["yn_p", "yn_actual"]))
    else:
        days = DAYS[3:9] + DAYS[20:21]
        body = rows_to_json(rows)
    spool = io.BytesIO(body)
    fast = _fast_json_rows(spool, days, LIMIT)  # the fast path itself, no fallback
    assert_same(fast, slow(body, days))
    assert len(fast[0]) == (len(rows) if days == DAYS else int(rows["time"].dt.date.isin(days).sum()))


def _with_symbol(rows, text):
    changed = rows.copy()
    changed.loc[changed.index[5], "symbol"] = text
    return rows_to_json(changed)


def _replace_first(body: bytes, pattern: bytes, replacement: bytes) -> bytes:
    return re.sub(pattern, replacement, body, count=1)


FALLBACKS = {
    # an object boundary inside a string: the cut leaves an unterminated string, Arrow refuses it
    "boundary-in-a-symbol": lambda rows: _with_symbol(rows, 'model}, {"n_predict": 1, "x": "'),
    "brace-in-a-symbol": lambda rows: _with_symbol(rows, "model},{"),
    "escaped-quote-in-a-symbol": lambda rows: _with_symbol(rows, 'a\\"},{"b'),
    "unicode-symbol": lambda rows: _with_symbol(rows, "модель-é-😀"),
    "extra-field": lambda rows: rows_to_json(rows.assign(model_note="v2")),
    "nan-token": lambda rows: _replace_first(rows_to_json(rows), rb'"close_predict":[-0-9.e]+', b'"close_predict":NaN'),
    "infinity-token": lambda rows: _replace_first(rows_to_json(rows), rb'"close_predict":[-0-9.e]+', b'"close_predict":-Infinity'),
    "nan-in-a-direction-field": lambda rows: _replace_first(rows_to_json(rows), rb'"yn_p":[-0-9.e]+', b'"yn_p":NaN'),
    "price-as-string": lambda rows: _replace_first(rows_to_json(rows), rb'"close_predict":([-0-9.e]+)', rb'"close_predict":"\1"'),
    "horizon-fractional": lambda rows: _replace_first(rows_to_json(rows), rb'"n_predict":\d+', b'"n_predict":2.5'),
    "horizon-too-long": lambda rows: _replace_first(rows_to_json(rows), rb'"n_predict":\d+', b'"n_predict":20000'),
    "symbol-null": lambda rows: _replace_first(rows_to_json(rows), rb'"symbol":"[^"]*"', b'"symbol":null'),
    "symbol-number": lambda rows: _replace_first(rows_to_json(rows), rb'"symbol":"[^"]*"', b'"symbol":7'),
    "time-epoch": lambda rows: _replace_first(rows_to_json(rows), rb'"time":"[^"]*"', b'"time":1735689600000'),
    "time-unreadable": lambda rows: _replace_first(rows_to_json(rows), rb'"time":"[^"]*"', b'"time":"yesterday"'),
    "time-out-of-range": lambda rows: _replace_first(rows_to_json(rows), rb'"time":"[^"]*"', b'"time":"9999-12-31"'),
    "time-in-the-future": lambda rows: _replace_first(rows_to_json(rows), rb'"time":"[^"]*"', b'"time":"2026-01-01"'),
    "duplicate-key": lambda rows: rows_to_json(rows, duplicate_key=("close_predict", 1.0, (3, 4))),
    "missing-field": lambda rows: rows_to_json(rows.drop(columns=["close_predict"])),
    "nested-value": lambda rows: _replace_first(rows_to_json(rows), rb'"yn_p":[-0-9.e]+', b'"yn_p":{"a":1}'),
    "boolean-price": lambda rows: _replace_first(rows_to_json(rows), rb'"close_predict":[-0-9.e]+', b'"close_predict":true'),
    "cut-short": lambda rows: rows_to_json(rows)[:-40],
    "trailing-garbage": lambda rows: rows_to_json(rows) + b"x",
    "two-arrays": lambda rows: rows_to_json(rows) + b"[]",
    "an-element-not-an-object": lambda rows: rows_to_json(rows)[:-1] + b",42]",
    "empty-array": lambda rows: b"[ ]",
    "an-object": lambda rows: b'{"rows": []}',
    "null": lambda rows: b"null",
    "empty-body": lambda rows: b"",
}


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_bodies_the_fast_path_cannot_vouch_for_read_by_the_streaming_parser(rows, name):
    body = FALLBACKS[name](rows)
    try:
        reference = slow(body)
    except ContractViolation as exc:
        with pytest.raises(ContractViolation) as caught:
            either(body)
        assert str(caught.value) == str(exc) and caught.value.problems == exc.problems
    else:
        assert_same(either(body), reference)
    if name not in ("unicode-symbol",):  # a valid body the fast path reads itself
        with pytest.raises(_NotFast):
            _fast_json_rows(io.BytesIO(body), DAYS, LIMIT)


def test_fast_path_keeps_a_unicode_symbol(rows):
    body = FALLBACKS["unicode-symbol"](rows)
    assert_same(_fast_json_rows(io.BytesIO(body), DAYS, LIMIT), slow(body))
