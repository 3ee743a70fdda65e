import datetime as dt
from pathlib import Path

import pytest
from dagster import AssetSelection, DagsterInstance

from nexus_assets.definitions import MAIN_JOB, build_definitions
from nexus_assets.defs.schedules import RANGE_END_TAG, RANGE_START_TAG
from nexus_assets.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def sandbox_catalog_text(keys=("9001_SP500", "9003_WTI_Crude"), source="sandbox") -> str:
    """A cut of the bundled sandbox catalog (or of its `api` twin)."""
    name = "sandbox.toml" if source == "sandbox" else "sandbox_api.toml"
    blocks = (REPO / "catalogs" / name).read_text().split("[[assets]]")[1:]
    return "".join("[[assets]]" + b for b in blocks if any(f'key = "{k}"' in b for k in keys))


class Pipeline:
    """A definitions object on a temporary catalog and data dir, with an ephemeral instance."""

    def __init__(self, tmp_path: Path, catalog_text: str, **settings):
        self.catalog_path = tmp_path / "catalog.toml"
        self.catalog_path.write_text(catalog_text)
        self.data_dir = tmp_path / "data"
        self.settings = Settings(catalog_path=str(self.catalog_path), data_dir=str(self.data_dir), **settings)
        self.defs = build_definitions(self.settings)
        self.instance = DagsterInstance.ephemeral()

    def run(self, first: str, last: str, *, through: str | None = None, run_config: dict | None = None):
        """The main job over a partition range; ``through`` stops at that asset (and its upstream)."""
        job = self.defs.resolve_job_def(MAIN_JOB)
        selection = None
        if through is not None:
            selection = list(AssetSelection.assets(through).upstream().resolve(self.defs.get_repository_def().asset_graph))
        return job.execute_in_process(
            instance=self.instance,
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
            raise_on_error=False,
            asset_selection=selection,
            run_config=run_config,
        )

    def file(self, asset_key: str, partition: str) -> Path:
        asset, day = partition.split("|")
        return self.data_dir / asset_key / f"asset={asset}" / f"date={day}.parquet"

    def files(self, asset_key: str) -> dict[str, bytes]:
        root = self.data_dir / asset_key
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("asset=*/date=*.parquet"))}


@pytest.fixture
def pipeline(tmp_path):
    def make(catalog_text=None, **settings):
        return Pipeline(tmp_path, catalog_text or sandbox_catalog_text(), **settings)

    return make


JAN = [dt.date(2018, 1, d) for d in range(1, 11)]
