import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import (
    ContractViolation,
    check_contract_version,
    coerce_qml_rows,
    parse_times,
    validate_qml_rows,
)


def raw_rows(**overrides):
    rows = {
        "symbol": ["4382.0_100017", "4382.0_100018", "4382.0_100017"],
        "time": ["Wed, 01 Jan 2025 00:00:00 GMT", "2025-01-01T00:00:00", "2025-01-02"],
        "n_predict": [5.0, 5, 5],
        "close_predict": [101.5, 99.25, 102.0],
        "target_var_price": [100.0, 100.0, 101.0],
        "yn_p": [1, 0, None],
        "yn_actual": [None, None, 1.0],
    }
    rows.update(overrides)
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in rows.items()})


def test_time_formats_normalise_to_naive_utc_dates():
    values = pd.Series(
        [
            "Wed, 01 Jan 2025 00:00:00 GMT",
            "2025-01-01T00:00:00Z",
            "2025-01-01T23:30:00-02:00",  # 01:30 UTC on the 2nd
            "2025-01-01 12:00:00",
            "2025-01-01",
            "not a time",
            None,
        ],
        dtype=object,
    )
    times, bad, outside = parse_times(values)
    expected = ["2025-01-01", "2025-01-01", "2025-01-02", "2025-01-01", "2025-01-01"]
    assert list(times[:5]) == [pd.Timestamp(x) for x in expected]
    assert list(bad) == [False] * 5 + [True, True] and not outside.any()
    aware = pd.Series(pd.to_datetime(["2025-01-01T23:00:00-05:00"], utc=False))
    assert parse_times(aware)[0].iloc[0] == pd.Timestamp("2025-01-02")


def test_coerce_types_and_keeps_extra_fields():
    frame = raw_rows(model_family=["ridge", "ridge", "knn"])
    typed = coerce_qml_rows(frame)
    assert list(typed.columns)[:7] == ["symbol", "time", "n_predict", "close_predict", "target_var_price", "yn_p", "yn_actual"]
    assert typed["n_predict"].dtype == np.int64 and list(typed["n_predict"]) == [5, 5, 5]
    assert typed["time"].dtype == "datetime64[ns]"
    assert typed["model_family"].tolist() == ["ridge", "ridge", "knn"]
    assert np.isnan(typed["yn_p"].iloc[2]) and validate_qml_rows(typed).passed


def test_optional_direction_fields_may_be_absent():
    typed = coerce_qml_rows(raw_rows().drop(columns=["yn_p", "yn_actual"]))
    assert typed["yn_p"].isna().all() and validate_qml_rows(typed).passed


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"close_predict": ["101.5", 99.25, 102.0]}, "close_predict", "type: number"),
        ({"close_predict": [True, 99.25, 102.0]}, "close_predict", "type: number"),
        ({"close_predict": [None, 99.25, 102.0]}, "close_predict", "required (not null)"),
        ({"n_predict": [5.5, 5, 5]}, "n_predict", "integer"),
        ({"n_predict": ["5", 5, 5]}, "n_predict", "type: number"),
        ({"time": ["yesterday", "2025-01-01", "2025-01-02"]}, "time", "format"),
        ({"symbol": [None, "a", "b"]}, "symbol", "type: non-empty string"),
    ],
)
def test_coerce_refuses_and_names_field_rule_and_rows(overrides, field, rule):
    with pytest.raises(ContractViolation) as error:
        coerce_qml_rows(raw_rows(**overrides))
    message = str(error.value)
    assert f"field {field!r}" in message and rule in message and "row=0" in message
    assert any(p.field == field for p in error.value.problems)


def test_missing_required_field():
    with pytest.raises(ContractViolation, match="'close_predict'.*required field present"):
        coerce_qml_rows(raw_rows().drop(columns=["close_predict"]))


@pytest.mark.parametrize(
    ("mutate", "field", "rule"),
    [
        (lambda f: f.assign(close_predict=[0.0, 1.0, 1.0]), "close_predict", "greater_than(0)"),
        (lambda f: f.assign(close_predict=[-3.0, 1.0, 1.0]), "close_predict", "greater_than(0)"),
        (lambda f: f.assign(close_predict=[np.inf, 1.0, 1.0]), "close_predict", "finite"),
        (lambda f: f.assign(target_var_price=[100.0, 100.5, 101.0]), "target_var_price", "one target_var_price per time"),
        (lambda f: f.assign(target_var_price=[100.0, 100.0, -1.0]), "target_var_price", "greater_than(0)"),
        (lambda f: f.assign(symbol=["a", "a", "b"]), "symbol, time, n_predict", "unique"),
    ],
)
def test_validate_reports_counts_and_examples(mutate, field, rule):
    report = validate_qml_rows(mutate(coerce_qml_rows(raw_rows())))
    assert not report.passed
    problem = next(p for p in report.problems if p.field == field and rule in p.rule)
    assert problem.count >= 1 and problem.examples and "symbol" in problem.examples[0]
    assert sum(report.failure_counts.values()) >= 1
    with pytest.raises(ContractViolation, match=field.split(",")[0]):
        report.raise_if_failed("project 1")


def test_null_target_price_allowed_when_not_yet_known():
    typed = coerce_qml_rows(raw_rows(target_var_price=[None, None, 101.0]))
    assert validate_qml_rows(typed).passed


def test_contract_version_header():
    assert check_contract_version(None) == "1"
    assert check_contract_version("1.4") == "1.4"
    with pytest.raises(ContractViolation, match="2.0"):
        check_contract_version("2.0")
