"""The ML registry: manifests, integrity (tampered, unknown, mismatched), register round trip,
the serving version as of a date, and the `models` CLI's lines and exit statuses."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from nexus_assets.cli import main
from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_training import train_direction_model
from nexus_assets.ml_registry import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelIntegrityError,
    RegistryError,
    UnknownModelError,
    current_manifest,
    list_manifests,
    load_model,
    read_manifest,
    register_model,
    registry_root,
    verify,
    write_model,
)
from nexus_assets_tests.core.test_ml_training import SMALL, _closes

NAMES = model_features(False)
ASSET = "9001_SP500"


@pytest.fixture(scope="module")
def trained():
    frame = feature_frame(_closes())
    return train_direction_model(frame, NAMES, asset=ASSET, horizon=1, as_of=dt.date(2020, 3, 2), config=SMALL)


@pytest.fixture
def registry(tmp_path, trained):
    data_dir = str(tmp_path / "data")
    stored = write_model(data_dir, trained.manifest, trained.onnx)
    return data_dir, stored


def _external_onnx(path: Path, width: int, *, output_shape=(None, 1), op="Sigmoid") -> Path:
    """A plain network as another framework would export it: sigmoid(x . w), one (n, 1) output."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [width, 1], list(np.linspace(-0.3, 0.3, width)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node(op, ["z"], ["p"])],
        "external", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, list(output_shape))], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_a_stored_model_lists_verifies_and_loads(registry, trained):
    data_dir, stored = registry
    assert [m["version"] for m in list_manifests(data_dir)] == ["trained-2020-03-02-h1"]
    assert read_manifest(data_dir, ASSET, stored["version"]) == stored
    [result] = verify(data_dir)
    assert result.ok, result.line()
    model = load_model(data_dir, ASSET, stored["version"], features=NAMES)
    x = np.random.default_rng(0).normal(size=(5, len(NAMES)))
    np.testing.assert_allclose(model.probability_up(x), trained.pipeline.predict_proba(x)[:, 1], atol=2e-6)


def test_a_tampered_file_is_refused_naming_the_file_and_the_reason(registry):
    data_dir, stored = registry
    path = registry_root(data_dir) / ASSET / stored["version"] / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=f"{path}.*does not match the manifest"):
        load_model(data_dir, ASSET, stored["version"])
    [result] = verify(data_dir, ASSET)
    assert not result.ok and "does not match" in result.reason
    path.unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_model(data_dir, ASSET, stored["version"])


def test_unknown_versions_and_feature_mismatches_are_refused(registry):
    data_dir, stored = registry
    with pytest.raises(UnknownModelError, match="no model 'v-nope'"):
        load_model(data_dir, ASSET, "v-nope")
    with pytest.raises(RegistryError, match="expects features"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES[:-1])
    with pytest.raises(RegistryError, match="not a valid name"):
        read_manifest(data_dir, ASSET, "../../etc")
    copied = registry_root(data_dir) / ASSET / "v-copy" / MANIFEST_FILE
    copied.parent.mkdir()
    copied.write_text(json.dumps(stored))  # a manifest copied into another version's folder
    with pytest.raises(RegistryError, match="not its folder's"):
        read_manifest(data_dir, ASSET, "v-copy")


def test_register_round_trip_and_checks(tmp_path):
    data_dir = str(tmp_path / "data")
    width = 4
    path = _external_onnx(tmp_path / "ext.onnx", width)
    manifest = register_model(data_dir, asset=ASSET, horizon=5, model_file=str(path),
                              features=["rsi_14", "macd", "bb_position", "month"], valid_from=dt.date(2018, 6, 1))
    assert manifest["source"] == "registered" and manifest["features"] == ["rsi_14", "macd", "bb_position", "month"]
    assert (registry_root(data_dir) / ASSET / manifest["version"] / MODEL_FILE).read_bytes() == path.read_bytes()
    loaded = load_model(data_dir, ASSET, manifest["version"])
    p = loaded.probability_up(np.zeros((2, width)))
    np.testing.assert_allclose(p, 0.5)
    assert all(r.ok for r in verify(data_dir))
    with pytest.raises(RegistryError, match="input width is 4, the feature list has 3"):
        register_model(data_dir, asset=ASSET, horizon=5, model_file=str(path), features=["a", "b", "c"],
                       valid_from=dt.date(2018, 6, 1), version="other")
    with pytest.raises(RegistryError, match="already exists"):
        register_model(data_dir, asset=ASSET, horizon=5, model_file=str(path), features=["a", "b", "c", "d"],
                       valid_from=dt.date(2018, 6, 1), version=manifest["version"])
    not_probability = _external_onnx(tmp_path / "relu.onnx", width, op="Exp")
    with pytest.raises(RegistryError, match="not a probability"):
        register_model(data_dir, asset=ASSET, horizon=5, model_file=str(not_probability), features=list("abcd"),
                       valid_from=dt.date(2018, 6, 1), version="exp")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelIntegrityError, match="not a loadable ONNX model"):
        register_model(data_dir, asset=ASSET, horizon=5, model_file=str(garbage), features=list("abcd"),
                       valid_from=dt.date(2018, 6, 1), version="garbage")
    assert onnx.load(str(path)).graph.name == "external"


def test_the_serving_version_is_the_latest_valid_from_with_registered_first_on_a_tie():
    def m(version, valid_from, source="trained", horizon=1):
        return {"asset": "A", "horizon": horizon, "version": version, "valid_from": valid_from, "source": source}

    manifests = [m("t1", "2018-01-01"), m("t2", "2018-02-05"), m("r1", "2018-02-05", "registered"),
                 m("t3", "2018-03-05"), m("h5", "2018-01-01", horizon=5)]
    assert current_manifest(manifests, "A", 1, dt.date(2017, 12, 31)) is None
    assert current_manifest(manifests, "A", 1, dt.date(2018, 2, 4))["version"] == "t1"
    assert current_manifest(manifests, "A", 1, dt.date(2018, 2, 5))["version"] == "r1"
    assert current_manifest(manifests, "A", 1, dt.date(2018, 3, 5))["version"] == "t3"
    assert current_manifest(manifests, "A", 5, dt.date(2018, 3, 5))["version"] == "h5"


@pytest.fixture
def cli_env(monkeypatch, tmp_path, registry):
    data_dir, stored = registry
    monkeypatch.setenv("NEXUS_DATA_DIR", data_dir)
    monkeypatch.chdir(tmp_path)
    return data_dir, stored


def test_models_cli_list_show_verify(cli_env, capsys):
    data_dir, stored = cli_env
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert stored["version"] in out and stored["sha256"][:12] in out
    assert main(["models", "show", ASSET, stored["version"]]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == stored["sha256"]
    assert main(["models", "verify"]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    path = registry_root(data_dir) / ASSET / stored["version"] / MODEL_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    assert main(["models", "verify", ASSET]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("BAD ") and "does not match" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["models", "show", ASSET, "v-missing"], "no model 'v-missing'"),
    (["models", "verify", ASSET, "v-missing"], "no model 'v-missing'"),
    (["models", "register", "--asset", "NOPE", "--horizon", "1", "--file", "x.onnx", "--features", "rsi_14"],
     "not in the catalog"),
    (["models", "register", "--asset", ASSET, "--horizon", "1", "--file", "x.onnx", "--features", "rsi_14,wall_clock"],
     "unknown feature(s) wall_clock"),
    (["models", "register", "--asset", ASSET, "--horizon", "1", "--file", "missing.onnx", "--features", "rsi_14"],
     "cannot read the model file"),
])
def test_models_cli_bad_input_is_one_line_and_exit_2(cli_env, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("nexus-assets models ")


def test_models_cli_register(cli_env, capsys, tmp_path):
    data_dir, _ = cli_env
    path = _external_onnx(tmp_path / "team.onnx", 2)
    argv = ["models", "register", "--asset", ASSET, "--horizon", "5", "--file", str(path), "--features",
            "rsi_14,macd", "--valid-from", "2018-06-01", "--version", "team-v1"]
    assert main(argv) == 0
    assert "registered 9001_SP500 team-v1" in capsys.readouterr().out
    manifest = json.loads((registry_root(data_dir) / ASSET / "team-v1" / MANIFEST_FILE).read_text())
    assert manifest["valid_from"] == "2018-06-01" and manifest["features"] == ["rsi_14", "macd"]
    assert "scikit-learn" in manifest["libraries"]


def test_a_scikit_learn_export_with_its_probability_map_registers_and_predicts(tmp_path):
    """skl2onnx's default export of a classifier gives probabilities as a list of {class: p} maps."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(x, (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int))
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 3]))]).SerializeToString())
    data_dir = str(tmp_path / "data")
    manifest = register_model(data_dir, asset=ASSET, horizon=1, model_file=str(path), features=["rsi_14", "macd", "month"],
                              valid_from=dt.date(2018, 1, 1))
    loaded = load_model(data_dir, ASSET, manifest["version"])
    np.testing.assert_allclose(loaded.probability_up(x[:5]), model.predict_proba(x[:5])[:, 1], atol=1e-5)
