"""Resources: the one door to QML, whatever the catalog says the source of an asset is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from dagster import ConfigurableResource

from nexus_assets.catalog import CatalogAsset
from nexus_assets.qml.client import QMLClient, RetryPolicy
from nexus_assets.qml.sources import QMLPull, pull_embedded

__all__ = ["QMLResource"]


class QMLResource(ConfigurableResource):
    """QML rows for a catalog asset and a set of days.

    ``api`` assets go over HTTP (``base_url`` and ``api_key`` come from ``QML_API_BASE_URL`` and
    ``QML_API_KEY`` as Dagster ``EnvVar``s, so the UI shows the variable names, never the key);
    ``sandbox`` and ``synthetic`` assets are computed in-process. One call per asset and run:
    a range of dates is fetched once, never day by day.
    """

    base_url: str | None = None
    api_key: str | None = None
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 120.0
    max_attempts: int = 5
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    prefer_parquet: bool = True

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
            log=log,
        )

    def pull(self, asset: CatalogAsset, days: Iterable[dt.date], log=None) -> QMLPull:
        if asset.source == "api":
            return self.client(log).pull(asset.project_id, days)
        return pull_embedded(asset, days)
