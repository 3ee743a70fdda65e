"""A small materialised catalog, built once per session, and the API over it.

Two sandbox instruments: ``9001_SP500`` from 2018-01-01 to 2018-07-10 through ``metrics`` (the
ensemble's warm-up ends in April, the horizon search's first winner is in late June), its last two
days also through ``dashboard`` (the page summaries carry the upstream watermark the ``status``
endpoint reports), and ``9004_VIX`` over five January days (a second asset for the key scopes).
"""

import datetime as dt
from dataclasses import dataclass

import pytest
from dagster import AssetKey

from nexus_assets.api.app import create_app
from nexus_assets.api.keys import KeyStore
from nexus_assets.api.store import Store
from nexus_assets.definitions import MAIN_JOB
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets_tests.defs.conftest import Pipeline, sandbox_catalog_text

SP, VIX = "9001_SP500", "9004_VIX"
FIRST, LAST = dt.date(2018, 1, 1), dt.date(2018, 7, 10)
VIX_LAST = dt.date(2018, 1, 5)
TODAY = dt.date(2018, 7, 11)


@dataclass
class Served:
    pipe: Pipeline
    keys: KeyStore
    key_all: str
    key_sp: str
    key_vix: str
    key_revoked: str

    @property
    def data_dir(self):
        return self.pipe.data_dir

    def app(self, **kwargs):
        return create_app(catalog=self.pipe.settings.catalog(), store=Store(str(self.data_dir)), keys=self.keys,
                          clock=lambda: TODAY, **kwargs)


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    root = tmp_path_factory.mktemp("api")
    pipe = Pipeline(root, sandbox_catalog_text(keys=(SP, VIX)))
    assert pipe.run(f"{SP}|{FIRST}", f"{SP}|{LAST}", through="metrics").success
    assert pipe.run(f"{VIX}|{FIRST}", f"{VIX}|{VIX_LAST}", through="metrics").success
    job = pipe.defs.resolve_job_def(MAIN_JOB)
    result = job.execute_in_process(
        instance=pipe.instance, raise_on_error=False, asset_selection=[AssetKey("qml_model_metadata"), AssetKey("dashboard")],
        tags={RANGE_START_TAG: f"{SP}|{LAST - dt.timedelta(days=1)}", RANGE_END_TAG: f"{SP}|{LAST}"},
    )
    assert result.success
    keys = KeyStore(root / "instance")
    revoked = keys.create("revoked", None, "100000/minute")
    keys.revoke("revoked")
    return Served(
        pipe=pipe, keys=keys,
        key_all=keys.create("all", None, "100000/minute"),
        key_sp=keys.create("sp", (SP,), "100000/minute"),
        key_vix=keys.create("vix", (VIX,), "100000/minute"),
        key_revoked=revoked,
    )


@pytest.fixture(scope="session")
def client(served):
    from fastapi.testclient import TestClient

    with TestClient(served.app(), raise_server_exceptions=False) as test_client:
        test_client.headers["X-API-Key"] = served.key_all
        yield test_client
