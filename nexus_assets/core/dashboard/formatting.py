"""How numbers are shown on a page, and how they are recorded for machines next to the text.

Every number on a page appears twice: as text, rounded by one of the rules below, and in a
``data-value`` attribute holding :func:`exact` (Python's shortest round-trip ``repr`` of the
float, so ``float(data-value)`` equals the stored value bit for bit; an int as an int; ``""`` for a
missing value). Tests compare both: the attribute with the stored table exactly, the text with
the rule applied to the stored value.

Display rules (text):
- price: 2 decimals with thousands separators when ``|x| >= 1``, else 6 significant digits;
- prob (``net_prob``, ratios in [-1, 1], thresholds): 3 decimals, signed for net probabilities;
- percent (returns and drawdowns stored as fractions): ``100 x`` with 2 decimals and a sign
  (none on zero);
- share (parts of a whole, in [0, 1]): ``100 x`` with 1 decimal, never signed;
- stat (statistics of any unit): integers as integers with thousands separators, else 4
  significant digits below 1,000 and no decimals (with separators) from there; never in
  exponent notation (``-0.000004826``, not ``-4.826e-06``), and magnitudes below
  :data:`TINY` show as ``0``;
- int: an integer with thousands separators.
Missing values (None, NaN, +-inf) show as an en dash.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

__all__ = [
    "MISSING", "TINY", "exact", "is_missing", "price", "prob", "signed_prob", "percent", "share", "stat", "integer",
    "iso_date", "count",
]

MISSING = "\u2013"
TINY = 1e-10
"""Below this magnitude a statistic shows as ``0`` (its ``data-value`` keeps the exact figure)."""


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(value)
    return False


def exact(value: object) -> str:
    """The machine-readable form of a number for ``data-value`` (see the module docstring)."""
    if type(value) is float:  # the common case, first
        return repr(value) if math.isfinite(value) else ""
    if is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def price(value: object) -> str:
    if is_missing(value):
        return MISSING
    x = float(value)
    return f"{x:,.2f}" if abs(x) >= 1 else f"{x:.6g}"


def prob(value: object) -> str:
    return MISSING if is_missing(value) else f"{float(value):.3f}"


def signed_prob(value: object) -> str:
    return MISSING if is_missing(value) else f"{float(value):+.3f}"


def percent(value: object) -> str:
    if is_missing(value):
        return MISSING
    x = 100 * float(value)
    return "0.00%" if x == 0 else f"{x:+.2f}%"


def share(value: object) -> str:
    return MISSING if is_missing(value) else f"{100 * float(value):.1f}%"


def stat(value: object) -> str:
    if is_missing(value):
        return MISSING
    x = float(value)
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 999.95:  # where 4 significant digits would switch to exponent notation
        return f"{x:,.0f}"
    if abs(x) < 1e-4:  # ... and here, at the other end
        return "0" if abs(x) < TINY else np.format_float_positional(x, precision=4, unique=False, fractional=False,
                                                                    trim="-")
    return f"{x:.4g}"


def integer(value: object) -> str:
    return MISSING if is_missing(value) else f"{int(value):,}"


def iso_date(value: object) -> str:
    """``YYYY-MM-DD`` of a date, datetime or pandas/numpy timestamp; the en dash when missing."""
    if value is None:
        return MISSING
    if isinstance(value, np.datetime64):
        return MISSING if np.isnat(value) else str(value.astype("datetime64[D]"))
    if isinstance(value, dt.datetime):  # also pandas Timestamp and NaT
        return MISSING if value != value else value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"not a date: {value!r}")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` things in words: ``1 page``, ``2 pages``, ``1,460 pages`` (``plural`` when not ``noun + "s"``)."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"
