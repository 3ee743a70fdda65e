"""What every QML source returns, and the embedded sources (sandbox model farm, synthetic generator).

A *pull* is the typed, contract-checked rows of one project for a set of days, with what the
source says about itself: its watermark (the latest ``time`` it has for the project) and the
contract version it speaks. The ``api`` source (:mod:`nexus_assets.qml.client`) and the embedded
ones produce the same :class:`QMLPull`, so everything downstream is source-agnostic.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from nexus_assets.catalog import CatalogAsset
from nexus_assets.core.contract import CONTRACT_VERSION, coerce_qml_rows

__all__ = ["QMLPull", "EmbeddedProject", "embedded_project", "pull_embedded", "keep_days", "horizon_forecast_rows"]


@dataclass(frozen=True)
class QMLPull:
    """Rows of one project for the requested days (typed, sorted), and the source's own facts."""

    project_id: int
    source: str
    rows: pd.DataFrame
    watermark: pd.Timestamp | None
    contract_version: str
    days: tuple[dt.date, ...]

    def by_day(self) -> dict[dt.date, pd.DataFrame]:
        """Every requested day's rows (an empty frame for a day without rows), index reset."""
        groups = {stamp.date(): rows.reset_index(drop=True) for stamp, rows in self.rows.groupby("time", sort=True)}
        return {day: groups.get(day, self.rows.iloc[0:0].reset_index(drop=True)) for day in self.days}


class EmbeddedProject(Protocol):
    """The interface shared by the sandbox model farm and the synthetic generator."""

    def rows(self, start: dt.date, end: dt.date) -> pd.DataFrame: ...

    def models(self) -> pd.DataFrame: ...

    def watermark(self) -> pd.Timestamp: ...


@functools.lru_cache(maxsize=32)
def embedded_project(asset: CatalogAsset) -> EmbeddedProject:
    """The in-process source behind a ``sandbox`` or ``synthetic`` catalog asset (cached per asset)."""
    if asset.source == "sandbox":
        from nexus_assets.qml.sandbox import DEFAULT_HORIZONS, ModelFarm

        return ModelFarm(asset.project_id, asset.series or "", asset.horizons or DEFAULT_HORIZONS)
    if asset.source == "synthetic":
        from nexus_assets.qml.synthetic import SyntheticProject

        end = asset.end_date or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
        return SyntheticProject(
            asset.project_id,
            horizons=asset.horizons or (1, 3, 5, 8, 13),
            models_per_horizon=asset.models_per_horizon or 100,
            seed=asset.seed if asset.seed is not None else asset.project_id,
            start=asset.start_date,
            end=end,
            calendar=asset.calendar,
        )
    raise ValueError(f"asset {asset.key!r} has source {asset.source!r}, which is not embedded")


def keep_days(rows: pd.DataFrame, days: Iterable[dt.date]) -> pd.DataFrame:
    """Only the rows whose ``time`` is one of ``days`` (the client always filters, whatever the server did)."""
    wanted = pd.DatetimeIndex(sorted({pd.Timestamp(d) for d in days}))
    return rows[rows["time"].isin(wanted)].reset_index(drop=True)


def pull_embedded(asset: CatalogAsset, days: Iterable[dt.date]) -> QMLPull:
    """Pull ``days`` of a sandbox or synthetic asset, through the same contract typing as the API."""
    wanted = tuple(sorted(set(days)))
    project = embedded_project(asset)
    rows = coerce_qml_rows(project.rows(wanted[0], wanted[-1]))
    return QMLPull(
        project_id=asset.project_id,
        source=asset.source,
        rows=keep_days(rows, wanted),
        watermark=project.watermark(),
        contract_version=CONTRACT_VERSION,
        days=wanted,
    )


def horizon_forecast_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """What ``/get_qml_horizon_forecast`` serves for ``rows`` (QML rows of a span of days): one row
    per day and horizon with the mean (``forecast``) and median of the child models' forecasts,
    their number and the day's price. The embedded sources and ``qml-server`` share it, so both
    routes give the same series."""
    grouped = rows.groupby(["time", "n_predict"], sort=True).agg(
        forecast=("close_predict", "mean"),
        median=("close_predict", "median"),
        n_models=("close_predict", "size"),
        target_var_price=("target_var_price", "first"),
    )
    return grouped.reset_index()
