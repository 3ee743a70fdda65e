import warnings

import pytest

warnings.filterwarnings("ignore", message=".*is currently in beta.*")
warnings.filterwarnings("ignore", message=".*is currently in preview.*")


@pytest.fixture(autouse=True)
def _no_real_qml(monkeypatch):
    """Tests never inherit a developer's QML credentials or catalog: loopback and sandbox only."""
    for name in ("QML_API_BASE_URL", "QML_API_KEY", "NEXUS_CATALOG", "NEXUS_DATA_DIR", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
