"""Resources: the one door to QML, whatever the catalog says the source of an asset is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from dagster import ConfigurableResource

from nexus_assets.catalog import CatalogAsset
from nexus_assets.qml.client import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_MAX_RESPONSE_BYTES,
    QMLClient,
    RetryPolicy,
    check_api_key,
)
from nexus_assets.qml.sources import QMLPull, pull_embedded

__all__ = ["QMLResource"]


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
