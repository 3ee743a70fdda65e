"""The stored tables' schemas: derived columns, dtypes and empties, and the fast check beside
pandera's own validation (the slow, obviously correct reference)."""

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pytest

from nexus_assets.core import contract
from nexus_assets.core.combinations import within_horizon_combinations
from nexus_assets.core.contract import (
    STORED_TABLES,
    columns,
    dtypes,
    empty_frame,
    table_passes,
    table_problems,
    typed_frame,
)
from nexus_assets.core.ensembles import dynamic_quantile_ensemble
from nexus_assets.core.metrics import record
from nexus_assets.core.search import horizon_search
from nexus_assets.core.signals import daily_signals
from nexus_assets.core.slicing import empty_slices
from nexus_assets.core.trading import simulate

SCHEMAS = sorted(STORED_TABLES.items())


def valid_frame(schema: pa.DataFrameSchema, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """``n`` rows satisfying every built-in check of ``schema`` (each row its own day, so keys are unique)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in columns(schema):
        column = schema.columns[name]
        dtype = dtypes(schema)[name]
        allowed = next((c.statistics["allowed_values"] for c in column.checks if c.name == "isin"), None)
        lowest = next((c.statistics["min_value"] for c in column.checks if "min_value" in c.statistics), None)
        if allowed is not None:
            values = [sorted(allowed)[0]] * n
        elif np.dtype("datetime64[ns]") == dtype:
            values = pd.date_range("2018-01-02", periods=n, freq="D")
        elif dtype == np.dtype("int64") or isinstance(dtype, pd.Int64Dtype):
            values = np.full(n, 1 if lowest is None else int(np.ceil(lowest)) + 1)
        elif dtype == np.dtype("float64"):
            highest = next((c.statistics["max_value"] for c in column.checks if "max_value" in c.statistics), None)
            if highest is not None and highest < 2.0:  # a share or a probability: inside its range
                values = rng.uniform(highest - 1.0 if lowest is None else lowest, highest, n)
            else:
                values = rng.uniform(1.0, 2.0, n)
        elif dtype == np.dtype("bool"):
            values = np.ones(n, dtype=bool)
        else:
            values = [f"{name}_{i}" for i in range(n)]
        out[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(out)


def pandera_columns(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> set[str]:
    """The columns pandera itself finds at fault (its lazy validation)."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return set(errors.failure_cases["column"].dropna().astype(str))
    return set()


@pytest.mark.parametrize("table, schema", SCHEMAS, ids=[t for t, _ in SCHEMAS])
def test_a_valid_frame_passes_both_checks(table, schema):
    frame = valid_frame(schema)
    assert table_problems(schema, frame) == []
    assert pandera_columns(schema, frame) == set()
    assert table_problems(schema, empty_frame(schema)) == []


@pytest.mark.parametrize("table, schema", SCHEMAS, ids=[t for t, _ in SCHEMAS])
def test_the_fast_check_finds_what_pandera_finds(table, schema):
    """Every null in a non-nullable column and every value outside a range or set is found by
    both, in the same column."""
    for name, column in schema.columns.items():
        if not column.required:
            continue
        frame = valid_frame(schema)
        if not column.nullable and (frame[name].dtype.kind in "fM" or frame[name].dtype == "str"):
            broken = frame.copy()
            broken.loc[1, name] = None
            found = {p.field for p in table_problems(schema, broken)}
            assert name in found and name in pandera_columns(schema, broken), (table, name)
        for check in column.checks:
            stats = check.statistics
            if check.name in contract._RANGE_CHECKS:
                broken = frame.copy()
                if "allowed_values" in stats:
                    bad = "not-allowed" if broken[name].dtype == "str" else 99
                elif check.name == "str_length":
                    bad = ""
                elif "min_value" in stats:
                    bad = stats["min_value"] - 1
                else:
                    bad = stats["max_value"] + 1
                broken[name] = pd.Series([broken[name].iloc[0], bad, *broken[name].iloc[2:]], dtype=broken[name].dtype)
                problems = table_problems(schema, broken)
                assert [p.count for p in problems if p.field == name] == [1], (table, name, problems)
                assert name in pandera_columns(schema, broken), (table, name)


def broken_frames(schema: pa.DataFrameSchema, seed: int):
    """A valid frame of ``schema``, then variants each breaking one rule (or none, by chance): a
    null, a value out of range or set, a duplicated key, a wrong dtype, a column moved, added or
    dropped."""
    rng = np.random.default_rng(seed)
    frame = valid_frame(schema, n=int(rng.integers(2, 7)), seed=seed)
    yield frame
    for name, column in schema.columns.items():
        if name not in frame.columns:
            continue
        if frame[name].dtype.kind in "fM" or frame[name].dtype == "str":
            broken = frame.copy()
            broken.loc[int(rng.integers(0, len(frame))), name] = None
            yield broken
        for check in column.checks:
            stats = check.statistics
            if check.name not in contract._RANGE_CHECKS:
                continue
            if "allowed_values" in stats:
                bad = "not-allowed" if frame[name].dtype == "str" else 99
            elif check.name == "str_length":
                bad = ""
            elif "min_value" in stats:
                bad = stats["min_value"] - rng.choice([0, 1])  # on the bound: a miss only for a strict check
            else:
                bad = stats["max_value"] + rng.choice([0, 1])
            values = frame[name].tolist()
            values[int(rng.integers(0, len(frame)))] = bad
            yield frame.assign(**{name: pd.Series(values, dtype=frame[name].dtype)})
        if frame[name].dtype == "int64":
            yield frame.assign(**{name: frame[name].astype("float64")})
    if schema.unique:
        yield pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    names = list(frame.columns)
    yield frame[names[1:2] + names[:1] + names[2:]]
    yield frame.assign(extra=1)
    yield frame[names[:-1]]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("table, schema", SCHEMAS, ids=[t for t, _ in SCHEMAS])
def test_the_arrow_check_passes_only_what_table_problems_passes(table, schema, seed):
    """``table_passes`` (the store's shortcut) against the reference ``table_problems``: it never
    passes a frame with a problem, and passes the valid ones (the stored tables' schemas) and the
    empty one."""
    arrow = lambda frame: pyarrow.Table.from_pandas(frame, preserve_index=False)  # noqa: E731
    exact = schema.strict and schema.ordered  # the shortcut is for the stored tables' closed schemas
    for i, frame in enumerate(broken_frames(schema, seed)):
        passes = table_passes(schema, frame, arrow(frame))
        problems = table_problems(schema, frame)
        assert not (passes and problems), (table, i, problems)
        if i == 0:
            assert passes == exact and not problems, table
    assert table_passes(schema, empty_frame(schema), arrow(empty_frame(schema))) == exact


@pytest.mark.parametrize("seed", range(6))
def test_arrow_duplicates_against_pandas(seed):
    """The shortcut's key check (Arrow columns as tuples, or Arrow's distinct count for one column)
    against pandas' ``duplicated`` (the reference), on keys with ties, nulls (NaN, NaT, None),
    -0.0 beside 0.0, timestamps, strings and several chunks."""
    from nexus_assets.core.contract import _arrow_duplicates

    rng = np.random.default_rng(seed)
    for trial in range(40):
        n = int(rng.integers(2, 30))
        days = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 4, n), "D"))
        words = pd.Series(rng.choice(["a", "b", "é"], n), dtype="str")
        floats = rng.choice([0.0, -0.0, 1.5, 2.5], n)
        if trial % 3 == 0:  # some nulls
            days[rng.random(n) < 0.2] = pd.NaT
            words[rng.random(n) < 0.2] = None
            floats[rng.random(n) < 0.2] = np.nan
        frame = pd.DataFrame({"date": days, "word": words, "x": floats, "n": rng.integers(0, 3, n)})
        if trial % 4 == 1:
            frame = frame.drop_duplicates(ignore_index=True)
        table = pyarrow.Table.from_pandas(frame, preserve_index=False)
        if trial % 2:  # a table in several chunks, as a concatenation gives
            half = len(frame) // 2
            table = pyarrow.concat_tables([table.slice(0, half), table.slice(half)])
        for key in (["date"], ["word"], ["x"], ["n"], ["date", "word"], ["x", "n"], ["date", "word", "x", "n"]):
            assert _arrow_duplicates(frame, table, key) == frame.duplicated(key).any(), (seed, trial, key)


def test_dtype_column_set_order_and_key_are_checked():
    frame = valid_frame(contract.SIGNALS)
    rules = lambda f: [(p.field, p.rule) for p in table_problems(contract.SIGNALS, f)]  # noqa: E731
    assert rules(frame.assign(pairs=frame["pairs"].astype("float64"))) == [("pairs", "dtype int64")]
    assert rules(frame.assign(signal=frame["signal"].astype(object))) == [("signal", "dtype str")]
    assert rules(frame.drop(columns="tier"))[0] == ("tier", "column present")
    assert rules(frame.assign(extra=1.0)) == [("extra", "no column outside the schema of signals")]
    assert rules(frame[[*frame.columns[1:], "date"]])[0][1].startswith("column order date, variant")
    assert rules(pd.concat([frame, frame.iloc[:1]], ignore_index=True)) == [("date, variant", "unique (date, variant)")]


def test_an_optional_column_keeps_its_place():
    with_actual = columns(contract.HORIZON_ENSEMBLES, optional=["actual"])
    assert with_actual.index("actual") == with_actual.index("forecast") + 1
    frame = valid_frame(contract.HORIZON_ENSEMBLES).assign(actual=1.0)
    assert table_problems(contract.HORIZON_ENSEMBLES, frame[list(with_actual)]) == []
    assert table_problems(contract.HORIZON_ENSEMBLES, frame)[0].rule.startswith("column order")


def test_typed_frame_from_records_or_columns():
    empty = typed_frame([], contract.SLOPES)
    pd.testing.assert_frame_equal(empty, empty_frame(contract.SLOPES))
    rows = typed_frame({"date": ["2018-01-02"], "variant": ["raw"], "horizon_short": [1], "horizon_long": [3],
                        "forecast_short": [1.0], "forecast_long": [2.0], "slope": [0.5], "weight": [2],
                        "direction": [1]}, contract.SLOPES)
    assert table_problems(contract.SLOPES, rows) == []


def test_every_step_returns_its_schema_typed_when_it_has_nothing():
    """Each core step's empty result is the schema's empty frame: same columns, same dtypes."""
    slices = empty_slices()
    pd.testing.assert_frame_equal(slices, empty_frame(contract.HORIZON_SLICES))
    pd.testing.assert_frame_equal(dynamic_quantile_ensemble(slices), empty_frame(contract.ENSEMBLE_ROWS))
    pd.testing.assert_frame_equal(dynamic_quantile_ensemble(slices, mode="nexus_v2"),
                                  empty_frame(contract.ENSEMBLE_ROWS, optional=["actual"]))
    pd.testing.assert_frame_equal(within_horizon_combinations(slices), empty_frame(contract.COMBINATION_ROWS))
    ensembles = empty_frame(contract.HORIZON_ENSEMBLES)
    tables = daily_signals(ensembles, threshold=0.0)
    pd.testing.assert_frame_equal(tables["signals"], empty_frame(contract.SIGNALS))
    pd.testing.assert_frame_equal(tables["slopes"], empty_frame(contract.SLOPES))
    board = horizon_search(ensembles, dates=["2018-01-02"], periods=252, cost_bps=0.0)
    pd.testing.assert_frame_equal(board, empty_frame(contract.LEADERBOARD))
    sim = simulate(pd.DataFrame({"date": [], "price": [], "position": []}), cost_bps=0.0)
    pd.testing.assert_frame_equal(sim.daily, empty_frame(contract.DAILY_ROWS))
    pd.testing.assert_frame_equal(sim.trades, empty_frame(contract.TRADE_ROWS))
    day = record(empty_frame(contract.SIGNALS), as_of=["2018-01-02"], calendar="exchange", cost_bps=0.0, horizons=[1])
    for name, schema in (("statistics", contract.STATISTICS), ("trades", contract.TRADES), ("daily", contract.DAILY)):
        assert table_problems(schema, next(iter(day.values()))[name]) == []


def test_the_dashboards_inputs_name_columns_of_the_stored_tables():
    """The dashboard reads a subset of each table's columns (extra ones are ignored by design);
    the subset cannot drift from the schema: every column it reads is one, and the columns it
    reads as dates are the schema's date columns among them."""
    from nexus_assets.core.dashboard.inputs import DATE_COLUMNS, REQUIRED_COLUMNS

    stored = {"ensembles": "horizon_ensembles", "ensemble_window": "horizon_ensembles"}
    assert set(DATE_COLUMNS) == set(REQUIRED_COLUMNS)
    for name, required in REQUIRED_COLUMNS.items():
        schema = STORED_TABLES[stored.get(name, name)]
        assert set(required) <= set(schema.columns), (name, sorted(set(required) - set(schema.columns)))
        dates = tuple(c for c in required if np.dtype("datetime64[ns]") == schema.columns[c].dtype.type)
        assert DATE_COLUMNS[name] == dates, name

@pytest.mark.parametrize("seed", range(8))
def test_the_set_shortcuts_equal_pandas_isin_and_duplicated(seed):
    """``_isin`` and ``_duplicated`` against pandas' own on seeded data: all allowed or not,
    nulls, duplicated keys or none, strings, ints and timestamps."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    words = np.array(["raw", "optimised", "legacy", "other"])
    allowed = ["raw", "optimised", "legacy"] if seed % 2 else ["raw", "optimised", "legacy", "other"]
    strings = pd.Series(words[rng.integers(0, 4, n)], dtype="str")
    if seed % 3 == 0:
        strings[int(rng.integers(0, n))] = None
    ints = pd.Series(rng.integers(-1, 2, n), dtype="int64")
    for values, choices in ((strings, allowed), (ints, [-1, 0, 1]), (ints, [0, 1])):
        np.testing.assert_array_equal(contract._isin(values, choices), values.isin(choices).to_numpy())
    days = pd.Series(pd.Timestamp("2018-01-01") + pd.to_timedelta(rng.integers(0, 3 if seed % 2 else 400, n), "D"))
    frame = pd.DataFrame({"date": days, "variant": strings.fillna("raw"), "horizon": ints})
    key = ["date", "variant", "horizon"]
    for nullable in (False, True):
        np.testing.assert_array_equal(contract._duplicated(frame, key, nullable),
                                      frame.duplicated(key, keep=False).to_numpy())
    with_nan = frame.assign(horizon=frame["horizon"].astype("float64").where(rng.random(n) > 0.3))
    np.testing.assert_array_equal(contract._duplicated(with_nan, key, True), with_nan.duplicated(key, keep=False).to_numpy())


@pytest.mark.parametrize("table, schema", SCHEMAS, ids=[t for t, _ in SCHEMAS])
def test_empty_frames_are_fresh_typed_frames(table, schema):
    """``empty_frame`` (a copy of a frame built once per schema) against building it: the same
    columns, dtypes and index every call, and a caller's change to one never reaches the next."""
    want = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes(schema).items()})
    first = empty_frame(schema)
    pd.testing.assert_frame_equal(first, want)
    first["added"] = []
    first.drop(columns=first.columns[0], inplace=True)
    pd.testing.assert_frame_equal(empty_frame(schema), want)
    assert empty_frame(schema) is not empty_frame(schema)
