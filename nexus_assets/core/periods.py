"""Observations a year (the one home of the annualisation factors) and the days that have a session.

A catalog asset's calendar says how many observations make a year (``exchange``: trading days,
``crypto``: every day); Nexus v2 annualised with 252 whatever the calendar, and the figures that
reproduce it (the ensemble's model Sharpe, the legacy trade Sharpe) use :data:`TRADING_DAYS` too.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["TRADING_DAYS", "CALENDAR_DAYS", "ANNUALIZATION", "periods_per_year", "has_session", "calendar_days"]

TRADING_DAYS = 252
"""Trading days a year of an exchange, and Nexus v2's annualisation for every calendar."""
CALENDAR_DAYS = 365
"""Days a year of a market that trades every day."""
ANNUALIZATION: Mapping[str, int] = MappingProxyType({"exchange": TRADING_DAYS, "crypto": CALENDAR_DAYS})
"""Observations a year by catalog calendar: trading days for exchange-traded assets, every day for crypto."""


def periods_per_year(calendar: str) -> int:
    """Annualisation factor of a catalog calendar (:data:`ANNUALIZATION`)."""
    try:
        return ANNUALIZATION[calendar]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown calendar {calendar!r}; the catalog calendar must be one of {sorted(ANNUALIZATION)}"
        ) from None


def has_session(calendar: str, day: dt.date) -> bool:
    """Whether a catalog calendar has a session on ``day``: every day for ``crypto``, Monday to
    Friday on an ``exchange``. Exchange holidays are not listed in advance: a weekday upstream moved
    past without publishing rows is one (:func:`nexus_assets.core.freshness.classify_day`)."""
    if calendar not in ANNUALIZATION:
        periods_per_year(calendar)  # raises, naming the calendars there are
    return calendar == "crypto" or day.weekday() < 5


def calendar_days(observations: int, calendar: str) -> int:
    """Calendar days that surely hold ``observations`` sessions of ``calendar``.

    Exchange calendars lose weekends (7/5) and up to about ten holidays a year.
    """
    if calendar == "crypto":
        return observations
    return math.ceil(observations * 7 / 5) + 2 * math.ceil(observations / 50) + 4
