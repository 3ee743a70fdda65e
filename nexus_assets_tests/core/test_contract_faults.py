"""The contract rules the fault-tolerance work added: non-finite markers, rows in the future,
the contract version as a problem, merging problems across chunks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import (
    MAX_HORIZON,
    NON_FINITE_MARKERS,
    ContractViolation,
    Problem,
    check_contract_version,
    coerce_qml_rows,
    merge_problems,
    parse_times,
    rows_after,
    time_limit,
    validate_qml_rows,
)

NAN, INF, MINUS_INF = (next(k for k, v in NON_FINITE_MARKERS.items() if check(v)) for check in (
    lambda v: v != v, lambda v: v == float("inf"), lambda v: v == float("-inf")))


def raw(**overrides) -> pd.DataFrame:
    rows = {
        "symbol": ["4382.0_100017", "4382.0_100018", "4382.0_100019"],
        "time": ["2025-01-02", "2025-01-02", "2025-01-02"],
        "n_predict": [5, 5, 5],
        "close_predict": [101.5, 99.25, 102.0],
        "target_var_price": [100.0, 100.0, 100.0],
        "yn_p": [1.0, 0.0, None],
        "yn_actual": [None, None, 1.0],
    }
    rows.update(overrides)
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in rows.items()})


@pytest.mark.parametrize("field", ["close_predict", "target_var_price", "n_predict"])
@pytest.mark.parametrize("marker", [NAN, INF, MINUS_INF], ids=["nan", "inf", "-inf"])
def test_non_finite_marker_in_a_finite_field_is_refused_by_field_and_row(field, marker):
    values = raw()[field].tolist()
    values[1] = marker
    with pytest.raises(ContractViolation) as caught:
        coerce_qml_rows(raw(**{field: values}))
    [problem] = [p for p in caught.value.problems if p.rule == "finite"]
    assert problem.field == field and problem.count == 1
    assert problem.examples[0]["row"] == 1 and problem.examples[0]["symbol"] == "4382.0_100018"
    shown = problem.examples[0][field]
    assert isinstance(shown, float) and (np.isnan(shown) if marker == NAN else np.isinf(shown))


def test_nan_marker_in_a_direction_field_is_a_null_and_a_string_nan_is_a_type_error():
    typed = coerce_qml_rows(raw(yn_p=[NAN, INF, 0.0]))
    assert np.isnan(typed["yn_p"].iloc[0]) and typed["yn_p"].iloc[1] == float("inf")
    with pytest.raises(ContractViolation, match="'close_predict' breaks rule 'type: number'"):
        coerce_qml_rows(raw(close_predict=["NaN", 1.0, 2.0]))  # a quoted "NaN" is a string, not a number


def test_time_limit_is_the_watermark_or_tomorrow_whichever_is_earlier():
    today = dt.date(2025, 1, 10)
    assert time_limit(pd.Timestamp("2025-01-08"), today).latest == pd.Timestamp("2025-01-08")
    assert "upstream watermark" in time_limit(pd.Timestamp("2025-01-08"), today).rule
    assert time_limit(None, today).latest == pd.Timestamp("2025-01-11")
    later = time_limit(pd.Timestamp("2025-03-01"), today)  # a watermark in the future is no licence
    assert later.latest == pd.Timestamp("2025-01-11") and "tomorrow" in later.rule


def test_rows_after_names_time_and_the_rows():
    frame = raw(time=["2025-01-02", "2025-01-09", "Sat, 11 Jan 2025 00:00:00 GMT"])
    times = parse_times(frame["time"]).times
    problem = rows_after(frame, times, time_limit(pd.Timestamp("2025-01-08"), dt.date(2025, 1, 10)))
    assert problem.field == "time" and problem.count == 2
    assert problem.rule == "not in the future (at most 2025-01-08, the upstream watermark)"
    assert [e["time"] for e in problem.examples] == ["2025-01-09", "2025-01-11"]
    assert [e["row"] for e in problem.examples] == [1, 2]
    assert rows_after(frame, times, time_limit(None, dt.date(2025, 1, 12))) is None


def test_problems_of_two_chunks_merge():
    a = Problem("time", "r", 2, [{"row": 1}, {"row": 2}])
    b = Problem("time", "r", 5, [{"row": i} for i in range(10, 15)])
    merged = merge_problems(a, b)
    assert merged.count == 7 and [e["row"] for e in merged.examples] == [1, 2, 10, 11, 12]
    assert merge_problems(None, b) is b and merge_problems(a, None) is a and merge_problems(None, None) is None


def test_unknown_contract_version_is_a_problem_naming_the_header():
    with pytest.raises(ContractViolation) as caught:
        check_contract_version("3.1")
    [problem] = caught.value.problems
    assert problem.field == "X-QML-Contract-Version" and problem.rule == "major version 1"
    assert problem.examples == [{"received": "3.1"}]


# -- absurd values are refused by rule and row, never passed or wrapped ------------------------------


@pytest.mark.parametrize("horizon", [MAX_HORIZON + 1, 50_000.0, 1e30], ids=["10001", "50000.0", "1e30"])
def test_a_horizon_beyond_the_maximum_is_refused_before_the_int64_cast(horizon):
    with pytest.raises(ContractViolation) as caught:
        coerce_qml_rows(raw(n_predict=[5, horizon, 5]))
    [problem] = caught.value.problems
    assert (problem.field, problem.rule, problem.count) == ("n_predict", "less_than_or_equal_to(10000)", 1)
    assert problem.examples[0]["row"] == 1 and problem.examples[0]["n_predict"] == horizon  # the value as sent
    assert validate_qml_rows(coerce_qml_rows(raw(n_predict=[1, MAX_HORIZON, 5]))).passed  # the maximum is a horizon


@pytest.mark.parametrize("field", ["close_predict", "target_var_price"])
@pytest.mark.parametrize("price", [1e13, 1e300], ids=["1e13", "1e300"])
def test_a_price_beyond_a_sane_magnitude_breaks_a_rule_naming_the_rows(field, price):
    values = raw()[field].tolist()
    values[2] = price
    if field == "target_var_price":
        values = [price] * 3  # one price per day
    report = validate_qml_rows(coerce_qml_rows(raw(**{field: values})))
    [problem] = report.problems
    assert problem.field == field and problem.rule == "less_than_or_equal_to(1000000000000.0)"
    assert problem.examples[-1][field] == price and "symbol" in problem.examples[-1]


@pytest.mark.parametrize(
    "value",
    ["9999-12-31", "Fri, 31 Dec 9999 00:00:00 GMT", "0001-01-01T00:00:00Z", "2262-04-12", "1677-09-21"],
)
def test_a_time_outside_the_nanosecond_range_is_refused_not_wrapped(value):
    """``9999-12-31`` used to come back as a day in 1816, silently."""
    frame = raw(time=["2025-01-02", value, "2025-01-02"])
    parsed = parse_times(frame["time"])
    assert list(parsed.out_of_range) == [False, True, False] and not parsed.unreadable.any()
    assert parsed.times.isna().tolist() == [False, True, False]
    with pytest.raises(ContractViolation) as caught:
        coerce_qml_rows(frame)
    [problem] = caught.value.problems
    assert problem.field == "time" and problem.rule == "within the nanosecond timestamp range (1677-09-22 .. 2262-04-11)"
    assert problem.examples == [{"row": 1, "symbol": "4382.0_100018", "time": value, "n_predict": 5}]


def test_typed_times_of_another_unit_outside_the_range_are_refused_not_raised():
    """A Parquet body may carry ``timestamp[us]`` times, which can hold 9999-12-31."""
    times = pd.Series(pd.to_datetime(["2025-01-02", "9999-12-31", "2025-01-02"]).astype("datetime64[us]"))
    parsed = parse_times(times)
    assert list(parsed.out_of_range) == [False, True, False] and parsed.times.dtype == "datetime64[ns]"
    assert parsed.times.iloc[0] == pd.Timestamp("2025-01-02")
    with pytest.raises(ContractViolation, match="within the nanosecond timestamp range"):
        coerce_qml_rows(raw(time=times))
