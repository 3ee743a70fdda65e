import datetime as dt
from pathlib import Path

import pytest

from nexus_assets.catalog import CatalogError, bundled_catalog_path, load_catalog

REPO = Path(__file__).resolve().parents[1]
GOOD = """
[[assets]]
key = "1860_Bitcoin"
project_id = 1860
name = "Bitcoin"
display_name = "Bitcoin"
category = "Crypto"
calendar = "crypto"
start_date = 2025-01-01
source = "api"
"""


def write(tmp_path, text):
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


def test_bundled_catalogs_load():
    sandbox = load_catalog()
    assert sandbox.path == str(bundled_catalog_path())
    assert len(sandbox.assets) >= 4
    assert {a.source for a in sandbox.assets} == {"sandbox"}
    assert sandbox.start_date == dt.date(2018, 1, 1) and sandbox.end_date == dt.date(2018, 12, 31)
    qdt = load_catalog(REPO / "catalogs" / "qdt.toml")
    assert {a.project_id for a in qdt.assets} == {
        1866, 1860, 1625, 269, 1518, 336, 477, 655, 291, 358, 1398, 1387, 1435, 256, 1859, 1862
    }
    assert qdt["1860_Bitcoin"].calendar == "crypto" and qdt["1866_Crude_Oil"].calendar == "exchange"
    assert {a.source for a in qdt.assets} == {"api"}
    for name in ("sandbox_api", "synthetic"):
        assert load_catalog(REPO / "catalogs" / f"{name}.toml").assets


def test_defaults(tmp_path):
    asset = load_catalog(write(tmp_path, GOOD))["1860_Bitcoin"]
    assert asset.selection_mode == "point_in_time"
    assert asset.signal_threshold == 0.1
    assert asset.min_deflated_sharpe == 0.95  # the selection-bias check is on by default
    assert asset.cost_bps == 0.0
    assert asset.end_date is None
    assert asset.ensemble_source == "child_models"  # our own ensemble unless the catalog says otherwise
    assert asset.model_loss_warn_share == 0.25
    assert (asset.ml_horizons, asset.ml_retrain_days, asset.ml_signal_threshold) == ((1, 5), 7, 0.6)
    assert (asset.ml_min_train_pairs, asset.ml_train_window) == (150, 750)


def test_ml_fields_are_read(tmp_path):
    text = GOOD + "ml_horizons = [10, 1]\nml_retrain_days = 30\nml_signal_threshold = 0.4\n"
    asset = load_catalog(write(tmp_path, text))["1860_Bitcoin"]
    assert (asset.ml_horizons, asset.ml_retrain_days, asset.ml_signal_threshold) == ((1, 10), 30, 0.4)
    text = GOOD + "ml_min_train_pairs = 60\nml_train_window = 200\n"
    asset = load_catalog(write(tmp_path, text))["1860_Bitcoin"]
    assert (asset.ml_min_train_pairs, asset.ml_train_window) == (60, 200)
    # a minimum above the default window raises the window's default with it
    asset = load_catalog(write(tmp_path, GOOD + "ml_min_train_pairs = 1000\n"))["1860_Bitcoin"]
    assert (asset.ml_min_train_pairs, asset.ml_train_window) == (1000, 1000)


def test_ensemble_source_and_model_loss_share_are_read(tmp_path):
    text = GOOD + 'ensemble_source = "upstream"\nmodel_loss_warn_share = 0.5\n'
    asset = load_catalog(write(tmp_path, text))["1860_Bitcoin"]
    assert (asset.ensemble_source, asset.model_loss_warn_share) == ("upstream", 0.5)


@pytest.mark.parametrize(
    ("edit", "field", "fragment"),
    [
        (lambda t: t + 'colour = "red"\n', "colour", "unknown field"),
        (lambda t: t.replace("2025-01-01", '"2025-13-01"'), "start_date", "YYYY-MM-DD"),
        (lambda t: t.replace('"1860_Bitcoin"', '"1860/../Bitcoin"'), "key", "must match"),
        # `$` matches before a final newline: the pattern must match the whole key
        (lambda t: t.replace('"1860_Bitcoin"', '"1860_Bitcoin\\n"').replace('name = "Bitcoin"', 'name = "Bitcoin\\n"'),
         "key", "must match"),
        (lambda t: t.replace('"1860_Bitcoin"', '"1861_Bitcoin"'), "key", "<project_id>_<name>"),
        (lambda t: t.replace('"crypto"\n', '"lunar"\n'), "calendar", "one of"),
        (lambda t: t.replace('source = "api"', 'source = "ftp"'), "source", "one of"),
        (lambda t: t + "signal_threshold = -1\n", "signal_threshold", "number in"),
        (lambda t: t + "min_deflated_sharpe = 1.5\n", "min_deflated_sharpe", "number in"),
        (lambda t: t + 'selection_mode = "magic"\n', "selection_mode", "one of"),
        (lambda t: t + 'ensemble_source = "quantum_ml"\n', "ensemble_source", "one of child_models, upstream"),
        (lambda t: t + "model_loss_warn_share = 2\n", "model_loss_warn_share", "number in"),
        (lambda t: t + "ml_horizons = [1, 1]\n", "ml_horizons", "distinct integers"),
        (lambda t: t + "ml_horizons = []\n", "ml_horizons", "distinct integers"),
        (lambda t: t + "ml_retrain_days = 0\n", "ml_retrain_days", "integer in"),
        (lambda t: t + "ml_signal_threshold = 1.5\n", "ml_signal_threshold", "number in"),
        (lambda t: t + "ml_min_train_pairs = 10\n", "ml_min_train_pairs", "integer in"),
        (lambda t: t + "ml_min_train_pairs = 100\nml_train_window = 80\n", "ml_train_window", "at least ml_min_train_pairs"),
        (lambda t: t.replace('display_name = "Bitcoin"\n', ""), "display_name", "missing"),
        (lambda t: t + GOOD, "key", "duplicate"),
        (lambda t: t + "end_date = 2024-01-01\n", "end_date", "before start_date"),
    ],
)
def test_bad_catalog_names_file_asset_and_field(tmp_path, edit, field, fragment):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(CatalogError) as error:
        load_catalog(path)
    message = str(error.value)
    assert str(path) in message
    assert f"field {field!r}" in message
    assert fragment in message
    assert "1860" in message  # the asset is named


def test_unparseable_and_missing_files(tmp_path):
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(write(tmp_path, "[[assets]\n"))
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.toml")
    with pytest.raises(CatalogError, match="no \\[\\[assets\\]\\]"):
        load_catalog(write(tmp_path, "# empty\n"))


def test_calendar_rules(tmp_path):
    asset = load_catalog(write(tmp_path, GOOD.replace('"crypto"\n', '"exchange"\n')))["1860_Bitcoin"]
    assert asset.is_trading_day(dt.date(2025, 1, 3)) and not asset.is_trading_day(dt.date(2025, 1, 4))
    assert not asset.covers(dt.date(2024, 12, 31)) and asset.covers(dt.date(2030, 1, 1))


def test_a_key_with_a_final_newline_never_reaches_the_store(tmp_path):
    """The catalog is refused when the definitions load: no partition key or path is ever made of
    ``1860_Bitcoin\\n``, and what is already stored stays as it was."""
    from nexus_assets.definitions import build_definitions
    from nexus_assets.settings import Settings

    stored = tmp_path / "data" / "qml_models" / "asset=1860_Bitcoin" / "date=2025-01-02.parquet"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"stored partition")
    path = write(tmp_path, GOOD.replace('"1860_Bitcoin"', '"1860_Bitcoin\\n"').replace('name = "Bitcoin"', 'name = "Bitcoin\\n"'))
    assert load_catalog_text_key(path) == "1860_Bitcoin\n"
    with pytest.raises(CatalogError, match="must match"):
        build_definitions(Settings(catalog_path=str(path), data_dir=str(tmp_path / "data")))
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == [stored]
    assert stored.read_bytes() == b"stored partition"


def load_catalog_text_key(path: Path) -> str:
    import tomllib

    return tomllib.loads(path.read_text())["assets"][0]["key"]
