import datetime as dt

import pandas as pd

from nexus_assets.catalog import CatalogAsset
from nexus_assets.core.freshness import DayStatus, classify_day, expected_latest_day, freshness_status


def asset(calendar="exchange", end=None):
    return CatalogAsset(
        key="1_X", project_id=1, name="X", display_name="X", category="c", calendar=calendar,
        start_date=dt.date(2025, 1, 1), source="api", end_date=end,
    )


FRI, SAT, MON = dt.date(2025, 1, 3), dt.date(2025, 1, 4), dt.date(2025, 1, 6)


def test_classify_day():
    exchange, crypto = asset(), asset("crypto")
    assert classify_day(exchange, FRI, 10, None) is DayStatus.PUBLISHED
    assert classify_day(exchange, SAT, 0, pd.Timestamp(FRI)) is DayStatus.NO_SESSION
    assert classify_day(crypto, SAT, 0, pd.Timestamp(MON)) is DayStatus.HOLIDAY
    assert classify_day(crypto, SAT, 0, pd.Timestamp(FRI)) is DayStatus.UNPUBLISHED
    assert classify_day(crypto, SAT, 0, None) is DayStatus.UNPUBLISHED
    assert classify_day(exchange, MON, 0, pd.Timestamp(MON)) is DayStatus.UNPUBLISHED  # watermark must be past it
    assert classify_day(exchange, dt.date(2024, 12, 31), 0, None) is DayStatus.OUTSIDE_HISTORY


def test_expected_latest_day_follows_calendar_and_end_date():
    assert expected_latest_day(asset(), MON) == FRI  # Sunday -> Friday's session
    assert expected_latest_day(asset("crypto"), MON) == dt.date(2025, 1, 5)
    assert expected_latest_day(asset(end=dt.date(2025, 1, 2)), MON) == dt.date(2025, 1, 2)
    assert expected_latest_day(asset(), dt.date(2025, 1, 1)) is None


def test_freshness_status():
    fresh = freshness_status(asset(), MON, FRI, MON)
    assert fresh.fresh and fresh.lag_days == 0
    late = freshness_status(asset(), MON, dt.date(2025, 1, 2), dt.date(2025, 1, 2))
    assert late.upstream_late and late.pipeline_late and late.lag_days == 1
    assert "watermark" in late.describe()
    never = freshness_status(asset(), MON, None, None)
    assert not never.fresh and never.lag_days == -1
