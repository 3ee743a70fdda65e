"""Resources: the one door to QML, whatever the catalog says the source of an asset is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd
from dagster import ConfigurableResource

from nexus_assets.catalog import CatalogAsset
from nexus_assets.qml.client import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_MAX_RESPONSE_BYTES,
    QMLClient,
    QMLRequestError,
    RetryPolicy,
    check_api_key,
)
from nexus_assets.qml.sources import QMLPull, embedded_project, horizon_forecast_rows, pull_embedded

__all__ = ["QMLResource", "NOT_OFFERED"]

NOT_OFFERED = (404, 405, 501)
"""HTTP statuses that mean upstream has no such endpoint (today's quantum_ml answers 404)."""


class QMLResource(ConfigurableResource):
    """QML rows for a catalog asset and a set of days.

    ``api`` assets go over HTTP (``base_url`` and ``api_key`` come from ``QML_API_BASE_URL`` and
    ``QML_API_KEY`` as Dagster ``EnvVar``s, so the UI shows the variable names, never the key);
    ``sandbox`` and ``synthetic`` assets are computed in-process. One call per asset and run:
    a range of dates is fetched once, never day by day. The key is checked when the resource is set
    up (a run fails at once, naming ``QML_API_KEY``, when it has whitespace or a line break), and
    each pull is bounded by ``pull_deadline_seconds`` and ``max_response_bytes`` (from
    ``NEXUS_QML_PULL_DEADLINE_SECONDS`` and ``NEXUS_QML_MAX_RESPONSE_BYTES``).
    """

    base_url: str | None = None
    api_key: str | None = None
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 120.0
    max_attempts: int = 5
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    prefer_parquet: bool = True
    pull_deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def setup_for_execution(self, context) -> None:
        check_api_key(self.api_key)

    def client(self, log=None) -> QMLClient:
        return QMLClient(
            self.base_url or "",
            self.api_key,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            retry=RetryPolicy(
                max_attempts=self.max_attempts,
                initial_backoff=self.initial_backoff_seconds,
                max_backoff=self.max_backoff_seconds,
            ),
            prefer_parquet=self.prefer_parquet,
            deadline_seconds=self.pull_deadline_seconds,
            max_response_bytes=self.max_response_bytes,
            log=log,
        )

    def pull(self, asset: CatalogAsset, days: Iterable[dt.date], log=None) -> QMLPull:
        if asset.source == "api":
            return self.client(log).pull(asset.project_id, days)
        return pull_embedded(asset, days)

    def model_metadata(self, asset: CatalogAsset, log=None) -> tuple[pd.DataFrame, pd.Timestamp | None] | None:
        """Upstream's model metadata for ``asset`` and the day it describes (its watermark; None
        when upstream does not say), or None when upstream has no metadata endpoint. The embedded
        sources describe their own model farm, as of their watermark."""
        if asset.source != "api":
            project = embedded_project(asset)
            return project.models(), project.watermark()
        try:
            return self.client(log).model_metadata_snapshot(asset.project_id)
        except QMLRequestError as exc:
            if exc.status in NOT_OFFERED:
                return None
            raise

    def horizon_forecasts(self, asset: CatalogAsset, days: Iterable[dt.date], log=None) -> pd.DataFrame | None:
        """Upstream's per-horizon forecasts for ``days`` (``/get_qml_horizon_forecast``: ``time``,
        ``n_predict``, ``forecast`` and whatever else it sends), or None when upstream has no such
        endpoint. The embedded sources compute what ``qml-server`` serves for them."""
        wanted = sorted(set(days))
        if asset.source != "api":
            rows = embedded_project(asset).rows(wanted[0], wanted[-1])
            return horizon_forecast_rows(rows)
        try:
            return self.client(log).horizon_forecast(asset.project_id, wanted[0], wanted[-1])
        except QMLRequestError as exc:
            if exc.status in NOT_OFFERED:
                return None
            raise
