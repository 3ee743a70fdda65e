"""What a page's day is: a session with data, or a day without a session or without data.

The site has a page for every calendar day of the partition grid, and a weekend, a holiday or a
day upstream has not published yet has no forecast: its page says so instead of blaming the
ensemble's warm-up. The day's status is the one ``qml_models`` recorded when it ingested the day
(:class:`nexus_assets.core.freshness.DayStatus`, carried in ``DataStatus.day_status``): point in
time, and the same however the dates were grouped into runs. Without that record (a site written
before it was kept, inputs built by hand) the catalog calendar still tells a day without a
session (:func:`nexus_assets.core.periods.has_session`); any other day is of unknown status and
counts as a day with data.
"""

from __future__ import annotations

import datetime as dt

from nexus_assets.core.freshness import DayStatus
from nexus_assets.core.periods import has_session

__all__ = ["DAY_TEXT", "DAY_REASON", "day_status", "has_data", "describe_day"]

DAY_TEXT: dict[DayStatus, str] = {
    DayStatus.PUBLISHED: "trading session",
    DayStatus.NO_SESSION: "no trading session",
    DayStatus.HOLIDAY: "holiday: upstream published no rows",
    DayStatus.UNPUBLISHED: "not yet published",
    DayStatus.OUTSIDE_HISTORY: "outside the asset's history",
}
"""What each day status means, as a page says it."""

DAY_REASON: dict[DayStatus, str] = {
    DayStatus.NO_SESSION: "there is no trading session on this day",
    DayStatus.HOLIDAY: "it is a holiday (upstream published no rows for it)",
    DayStatus.UNPUBLISHED: "upstream has not published this day yet",
    DayStatus.OUTSIDE_HISTORY: "this day is outside the asset's history",
}
"""Why a day without data has no forecast, as the end of a sentence."""

_KNOWN = {status.value: status for status in DayStatus}
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")  # not the locale's


def day_status(recorded: str | None, calendar: str, day: dt.date) -> DayStatus | None:
    """The status of ``day``: the one recorded at ingestion, else no session when the calendar has
    none that day, else None (unknown). An unrecognised record counts as no record."""
    status = _KNOWN.get(recorded) if isinstance(recorded, str) else None
    if status is not None:
        return status
    try:
        return None if has_session(calendar, day) else DayStatus.NO_SESSION
    except ValueError:  # a calendar the catalog does not know: nothing can be said
        return None


def has_data(status: DayStatus | None) -> bool:
    """Whether a day of this status can have a forecast (a published day, or one of unknown status)."""
    return status is None or status is DayStatus.PUBLISHED


def describe_day(status: DayStatus | None, day: dt.date) -> str:
    """``Saturday 2018-11-17: no trading session`` (the en dash alone when the status is unknown)."""
    return f"{_WEEKDAYS[day.weekday()]} {day.isoformat()}: {DAY_TEXT[status]}" if status is not None else "\u2013"
