import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*is currently in beta.*")
warnings.filterwarnings("ignore", message=".*is currently in preview.*")


@pytest.fixture(autouse=True)
def _no_real_qml(monkeypatch):
    """Tests never inherit a developer's QML credentials or catalog: loopback and sandbox only."""
    for name in ("QML_API_BASE_URL", "QML_API_KEY", "NEXUS_CATALOG", "NEXUS_DATA_DIR", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)


_SHARED_SESSION_FIXTURES = {"api", "dashboard"}  # folders whose session fixture materialises a pipeline
_TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    """Groups for ``--dist loadgroup`` (pyproject's addopts): each test file on one worker, so its
    module fixtures are built once, and each folder of :data:`_SHARED_SESSION_FIXTURES` on one
    worker, so its session fixture (a materialised pipeline, about a minute) is built once."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        path = Path(str(item.fspath)).resolve()
        try:
            relative = path.relative_to(_TESTS)
        except ValueError:
            continue
        shared = relative.parent.name in _SHARED_SESSION_FIXTURES
        item.add_marker(pytest.mark.xdist_group(str(relative.parent if shared else relative)))
