"""What a page's day is: the status recorded at ingestion, else what the calendar says."""

import datetime as dt

import pytest

from nexus_assets.core.dashboard.days import DAY_TEXT, day_status, describe_day, has_data
from nexus_assets.core.freshness import DayStatus

SATURDAY, MONDAY = dt.date(2018, 11, 17), dt.date(2018, 11, 19)


@pytest.mark.parametrize("recorded, calendar, day, want", [
    ("holiday", "exchange", MONDAY, DayStatus.HOLIDAY),
    ("published", "exchange", SATURDAY, DayStatus.PUBLISHED),  # the record wins over the calendar
    (None, "exchange", SATURDAY, DayStatus.NO_SESSION),
    (None, "crypto", SATURDAY, None),
    (None, "exchange", MONDAY, None),
    ("<b>", "exchange", MONDAY, None),  # not a status: no record
    (None, "<b>", SATURDAY, None),  # not a calendar: nothing can be said
])
def test_day_status(recorded, calendar, day, want):
    assert day_status(recorded, calendar, day) is want


def test_which_days_have_data():
    assert has_data(DayStatus.PUBLISHED) and has_data(None)
    assert not any(has_data(s) for s in DayStatus if s is not DayStatus.PUBLISHED)
    assert set(DAY_TEXT) == set(DayStatus)


def test_describe_day():
    assert describe_day(DayStatus.NO_SESSION, SATURDAY) == "Saturday 2018-11-17: no trading session"
    assert describe_day(DayStatus.HOLIDAY, MONDAY) == "Monday 2018-11-19: holiday: upstream published no rows"
    assert describe_day(None, MONDAY) == "\u2013"
