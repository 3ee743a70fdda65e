"""Calendars, watermarks and what an empty day means (pure; no Dagster).

QML publishes one batch of rows per trading day. A requested day with no rows is either fine
(the calendar has no session that day, or the upstream watermark is already past it: a holiday)
or a sign that upstream has not published yet (the watermark is before it), which is retryable.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from nexus_assets.catalog import CatalogAsset

__all__ = ["DayStatus", "classify_day", "expected_latest_day", "FreshnessStatus", "freshness_status"]


class DayStatus(str, Enum):
    PUBLISHED = "published"  # rows arrived
    NO_SESSION = "no_session"  # the calendar has no session that day (weekend on an exchange)
    HOLIDAY = "holiday"  # a calendar day without rows, but upstream has moved past it
    OUTSIDE_HISTORY = "outside_history"  # before the asset's start_date or after its end_date
    UNPUBLISHED = "unpublished"  # no rows yet and the watermark is before the day: retry later


def classify_day(asset: CatalogAsset, day: dt.date, rows: int, watermark: pd.Timestamp | None) -> DayStatus:
    """What a requested day's pull result means for ``asset``."""
    if not asset.covers(day):
        return DayStatus.OUTSIDE_HISTORY
    if rows > 0:
        return DayStatus.PUBLISHED
    if not asset.is_trading_day(day):
        return DayStatus.NO_SESSION
    if watermark is not None and watermark.date() > day:
        return DayStatus.HOLIDAY
    return DayStatus.UNPUBLISHED


def expected_latest_day(asset: CatalogAsset, today: dt.date) -> dt.date | None:
    """The latest day whose rows should exist by ``today``: the last session before today, capped
    at the asset's ``end_date``; None before the asset's history starts."""
    day = today - dt.timedelta(days=1)
    if asset.end_date is not None:
        day = min(day, asset.end_date)
    while not asset.is_trading_day(day):
        day -= dt.timedelta(days=1)
    return day if day >= asset.start_date else None


@dataclass(frozen=True)
class FreshnessStatus:
    """How one catalog asset stands against its calendar."""

    asset: str
    expected: dt.date | None
    latest_materialised: dt.date | None
    watermark: dt.date | None

    @property
    def upstream_late(self) -> bool:
        return self.expected is not None and (self.watermark is None or self.watermark < self.expected)

    @property
    def pipeline_late(self) -> bool:
        return self.expected is not None and (
            self.latest_materialised is None or self.latest_materialised < self.expected
        )

    @property
    def fresh(self) -> bool:
        return not (self.upstream_late or self.pipeline_late)

    @property
    def lag_days(self) -> int:
        if self.expected is None:
            return 0
        if self.latest_materialised is None:
            return -1
        return max(0, (self.expected - self.latest_materialised).days)

    def describe(self) -> str:
        if self.expected is None:
            return f"{self.asset}: history has not started yet"
        parts = []
        if self.upstream_late:
            parts.append(f"upstream watermark {self.watermark or 'unknown'} is before the expected {self.expected}")
        if self.pipeline_late:
            parts.append(f"latest materialised day {self.latest_materialised or 'none'} is before the expected {self.expected}")
        return f"{self.asset}: " + ("; ".join(parts) if parts else f"fresh through {self.expected}")


def freshness_status(
    asset: CatalogAsset,
    today: dt.date,
    latest_materialised: dt.date | None,
    watermark: dt.date | None,
) -> FreshnessStatus:
    return FreshnessStatus(asset.key, expected_latest_day(asset, today), latest_materialised, watermark)
