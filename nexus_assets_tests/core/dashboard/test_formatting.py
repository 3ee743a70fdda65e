"""Display rules and the exact machine-readable values next to them."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_assets.core.dashboard import formatting as fmt


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_exact_round_trips_every_float(x):
    assert float(fmt.exact(x)) == x
    assert float(fmt.exact(np.float64(x))) == x


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, float("inf"), -np.inf, np.float64("nan")])
def test_missing_values(missing):
    assert fmt.exact(missing) == ""
    for rule in (fmt.price, fmt.prob, fmt.signed_prob, fmt.percent, fmt.share, fmt.stat, fmt.integer):
        assert rule(missing) == fmt.MISSING


def test_exact_of_ints_and_bools():
    assert fmt.exact(np.int64(42)) == "42" and fmt.exact(7) == "7" and fmt.exact(True) == "true"


@pytest.mark.parametrize("rule, value, shown", [
    (fmt.price, 2700.123, "2,700.12"), (fmt.price, 14.5, "14.50"), (fmt.price, 0.000123456789, "0.000123457"),
    (fmt.price, -1.005, "-1.00"),
    (fmt.prob, 0.1, "0.100"), (fmt.signed_prob, 0.6, "+0.600"), (fmt.signed_prob, -1.0, "-1.000"),
    (fmt.signed_prob, 0.0, "+0.000"),
    (fmt.percent, 0.0123, "+1.23%"), (fmt.percent, -0.5, "-50.00%"), (fmt.percent, 0.0, "0.00%"),
    (fmt.share, 0.3666, "36.7%"), (fmt.share, 1.0, "100.0%"), (fmt.share, 0.0, "0.0%"),
    (fmt.stat, -4.826e-06, "-0.000004826"), (fmt.stat, 1e-05, "0.00001"), (fmt.stat, 9.9996e-05, "0.0001"),
    (fmt.stat, 3e-11, "0"), (fmt.stat, -3e-11, "0"),
    (fmt.stat, 250.0, "250"), (fmt.stat, 1.23456, "1.235"), (fmt.stat, -0.000123456, "-0.0001235"),
    (fmt.stat, 12345.6, "12,346"), (fmt.stat, 1234.5678, "1,235"), (fmt.stat, 1e20, "100,000,000,000,000,000,000"),
    (fmt.integer, 12345, "12,345"), (fmt.integer, np.int64(3), "3"),
])
def test_display_rules(rule, value, shown):
    assert rule(value) == shown


def test_iso_date_of_every_date_type():
    assert fmt.iso_date(dt.date(2018, 3, 2)) == "2018-03-02"
    assert fmt.iso_date(pd.Timestamp("2018-03-02")) == "2018-03-02"
    assert fmt.iso_date(np.datetime64("2018-03-02T00:00:00.000000000")) == "2018-03-02"
    assert fmt.iso_date(pd.NaT) == fmt.MISSING and fmt.iso_date(np.datetime64("NaT")) == fmt.MISSING
    assert fmt.iso_date(None) == fmt.MISSING
    with pytest.raises(TypeError):
        fmt.iso_date("2018-03-02")


@pytest.mark.parametrize("value, shown", [(999.94, "999.9"), (999.95, "1,000"), (9999.5, "10,000"), (-1234.5, "-1,234")])
def test_stat_never_uses_exponent_notation_for_large_values(value, shown):
    assert fmt.stat(value) == shown


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_stat_never_uses_exponent_notation(x):
    """A table of statistics reads as plain numbers, however small or large the figure."""
    shown = fmt.stat(x)
    assert "e" not in shown
    if abs(x) >= fmt.TINY:  # the text is the value rounded: never a different order of magnitude
        assert float(shown.replace(",", "")) == pytest.approx(x, rel=1e-3, abs=0.5)


@given(st.floats(min_value=0.0, max_value=1.0))
def test_shares_are_never_signed(x):
    assert not fmt.share(x).startswith(("+", "-"))


@pytest.mark.parametrize("n, shown", [(0, "0 pages"), (1, "1 page"), (2, "2 pages"), (1460, "1,460 pages")])
def test_counts_agree_with_their_number(n, shown):
    assert fmt.count(n, "page") == shown
