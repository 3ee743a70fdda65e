"""The one settings object: everything the pipeline reads from its environment, read once.

Secrets are not settings: ``QML_API_KEY`` is handed to the QML resource as a Dagster ``EnvVar``
(see :mod:`nexus_assets.defs.resources`) and never stored here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from nexus_assets.catalog import Catalog, bundled_catalog_path, load_catalog
from nexus_assets.qml.client import DEFAULT_DEADLINE_SECONDS, DEFAULT_MAX_RESPONSE_BYTES

__all__ = ["Settings", "SettingsError"]


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


class SettingsError(ValueError):
    """An environment variable of the project's settings with a value that cannot be used."""


def _positive(env: Mapping[str, str], name: str, default, kind):
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise SettingsError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {text!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Where the catalog and the data live, and how long to wait for unpublished upstream days.

    - ``NEXUS_CATALOG``: catalog TOML (default: the bundled sandbox catalog);
    - ``NEXUS_DATA_DIR``: root of the Parquet store, a local path or any fsspec URL (default ``./data``);
    - ``NEXUS_UNPUBLISHED_RETRIES`` / ``NEXUS_UNPUBLISHED_RETRY_SECONDS``: how often and how long
      apart a pull is retried when upstream has not published a requested day yet (default 3 x 900 s);
    - ``NEXUS_QML_PULL_DEADLINE_SECONDS`` / ``NEXUS_QML_MAX_RESPONSE_BYTES``: the bounds of one QML
      pull, retries included: a total deadline (default 3600 s) and a maximum decoded size of a
      response (default 16 GiB); both fit a Crude-Oil history;
    - ``NEXUS_SITE_URL``: where the dashboard site is served (e.g. ``http://127.0.0.1:8787`` by
      ``nexus-assets site``); the dashboard's metadata links pages there, else as ``file://`` paths,
      which browsers do not open from the Dagster UI's http page.
    """

    catalog_path: str
    data_dir: str
    unpublished_retries: int = 3
    unpublished_retry_seconds: int = 900
    site_url: str | None = None
    qml_pull_deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    qml_max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = env.get("NEXUS_DATA_DIR") or "data"
        if _is_local(data_dir):
            data_dir = os.path.abspath(data_dir.removeprefix("file://"))
        return cls(
            catalog_path=env.get("NEXUS_CATALOG") or str(bundled_catalog_path()),
            data_dir=data_dir,
            unpublished_retries=int(env.get("NEXUS_UNPUBLISHED_RETRIES", "3")),
            unpublished_retry_seconds=int(env.get("NEXUS_UNPUBLISHED_RETRY_SECONDS", "900")),
            site_url=(env.get("NEXUS_SITE_URL") or "").rstrip("/") or None,
            qml_pull_deadline_seconds=_positive(env, "NEXUS_QML_PULL_DEADLINE_SECONDS", DEFAULT_DEADLINE_SECONDS, float),
            qml_max_response_bytes=_positive(env, "NEXUS_QML_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE_BYTES, int),
        )

    @property
    def data_is_local(self) -> bool:
        """Whether the data root is a folder on this machine (else an object store, e.g. ``s3://``)."""
        return _is_local(self.data_dir)

    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_path)
