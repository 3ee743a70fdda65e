"""The ML registry: manifests, integrity (tampered, unknown, mismatched), register round trip,
the serving version as of a date, and the `models` CLI's lines and exit statuses."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nexus_assets.cli import main
from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_training import train_direction_model
from nexus_assets.ml_registry import (
    MANIFEST_FILE,
    MODEL_FILE,
    SIGNING_KEY_ENV,
    ModelIntegrityError,
    RegistryError,
    UnknownModelError,
    current_manifest,
    list_manifests,
    load_model,
    manifest_signature,
    read_manifest,
    register_model,
    registry_root,
    scan_manifests,
    sha256_hex,
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


_HEADS = {  # head -> (columns of x . w, nodes after MatMul's "z"); the output is "p"
    "sigmoid": (1, [("Sigmoid", ["z"], {})]),
    "logits": (1, [("Identity", ["z"], {})]),
    "softmax": (2, [("Softmax", ["z"], {"axis": 1})]),
    "logits2": (2, [("Identity", ["z"], {})]),
    "two_sigmoids": (2, [("Sigmoid", ["z"], {})]),
    "three_classes": (3, [("Softmax", ["z"], {"axis": 1})]),
    "sigmoid_1d": (1, [("Sigmoid", ["z"], {}), ("Squeeze", ["s", "axis"], {})]),  # (n,)
    "squeeze": (1, [("Sigmoid", ["z"], {}), ("Squeeze", ["s"], {})]),  # torch's .squeeze(): () for one row
}


def network_onnx(path: Path, width: int, *, head: str = "sigmoid", batch=None, elem=TensorProto.FLOAT,
                 input_name: str = "x", input_shape=None) -> Path:
    """A plain network as another framework exports it: ``head(x . w)`` with one input ``input_name``
    of ``[batch, width]`` (``batch``: None, a symbolic name such as tf2onnx's ``unk__6``, or a fixed
    size as torch.onnx.export without dynamic axes gives) and element type ``elem``; an int64 input
    is cast to float first."""
    columns, steps = _HEADS[head]
    dtype = np.float64 if elem == TensorProto.DOUBLE else np.float32
    weights = numpy_helper.from_array(_weights(width, columns).astype(dtype), "w")
    nodes = [helper.make_node("Cast", [input_name], ["xf"], to=TensorProto.FLOAT)] if elem == TensorProto.INT64 else []
    nodes.append(helper.make_node("MatMul", ["xf" if nodes else input_name, "w"], ["z"]))
    for i, (op, inputs, attributes) in enumerate(steps):
        nodes.append(helper.make_node(op, inputs, ["p" if i == len(steps) - 1 else "s"], **attributes))
    initializers = [weights, numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")]
    output_elem = TensorProto.DOUBLE if elem == TensorProto.DOUBLE else TensorProto.FLOAT
    output_shape = {"sigmoid_1d": [batch], "squeeze": []}.get(head, [batch, columns])  # torch declares () for .squeeze()
    graph = helper.make_graph(
        nodes, "external", [helper.make_tensor_value_info(input_name, elem, input_shape or [batch, width])],
        [helper.make_tensor_value_info("p", output_elem, output_shape)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _weights(width: int, columns: int) -> np.ndarray:
    return np.linspace(-0.3, 0.3, width * columns).reshape(width, columns)


def expected_probability(x: np.ndarray, head: str = "sigmoid") -> np.ndarray:
    """What :func:`network_onnx`'s network gives for P(up), computed in float64."""
    z = x @ _weights(x.shape[1], _HEADS[head][0])
    if head == "softmax":
        return 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))
    return 1.0 / (1.0 + np.exp(-z[:, 0]))


def test_a_stored_model_lists_verifies_and_loads(registry, trained):
    data_dir, stored = registry
    assert [m["version"] for m in list_manifests(data_dir)] == ["trained-2020-03-02-h1"]
    assert read_manifest(data_dir, ASSET, stored["version"]) == stored
    [result] = verify(data_dir)
    assert result.ok, result.line()
    model = load_model(data_dir, ASSET, stored["version"], features=NAMES)
    x = np.random.default_rng(0).normal(size=(5, len(NAMES)))
    np.testing.assert_allclose(model.probability_up(x), trained.pipeline.predict_proba(x)[:, 1], atol=2e-6)
    # the pipeline's own models: float32 rows in one call, the same bits as onnxruntime's own answer
    direct = model.session.run(None, {model.session.get_inputs()[0].name: x.astype(np.float32)})[1][:, 1]
    assert model.probability_up(x).tobytes() == direct.astype(np.float64).tobytes()


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
    # named as tf2onnx names a Keras model's input and its symbolic batch
    path = network_onnx(tmp_path / "ext.onnx", width, input_name="input_1", batch="unk__6")
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
    not_probability = network_onnx(tmp_path / "logits.onnx", width, head="logits")
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


def test_a_bad_manifest_is_one_bad_line_and_hides_no_other_model(cli_env, capsys):
    """An unparsable manifest and one copied into another version's folder: `verify` reports each
    as BAD (file and reason) beside the good model's OK and exits 1; `list` shows the good model,
    names the bad ones on stderr and exits 1; the pipeline's list_manifests refuses the registry."""
    data_dir, stored = cli_env
    root = registry_root(data_dir) / ASSET
    (root / "broken").mkdir()
    (root / "broken" / MANIFEST_FILE).write_text('{"broken": ')
    (root / "copied").mkdir()
    for name in (MODEL_FILE, MANIFEST_FILE):
        (root / "copied" / name).write_bytes((root / stored["version"] / name).read_bytes())
    (root / "incomplete").mkdir()  # its own folder's, parses, but lacks what serving reads
    (root / "incomplete" / MANIFEST_FILE).write_text(json.dumps({"asset": ASSET, "version": "incomplete", "horizon": "one"}))
    assert main(["models", "verify"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["BAD", ASSET, "broken"], ["BAD", ASSET, "copied"], ["BAD", ASSET, "incomplete"], ["OK", ASSET, stored["version"]]]
    assert str(root / "broken" / MANIFEST_FILE) in lines[0] and "unreadable manifest" in lines[0]
    assert "not its folder's" in lines[1]
    assert "incomplete manifest" in lines[2] and "'horizon' must be an integer >= 1" in lines[2] and "no 'sha256'" in lines[2]
    assert main(["models", "verify", ASSET, "incomplete"]) == 1  # one model named: a BAD line too, not bad input
    assert capsys.readouterr().out.startswith("BAD ")
    assert main(["models", "list", "--asset", ASSET]) == 1
    captured = capsys.readouterr()
    assert stored["version"] in captured.out and captured.err.count("BAD ") == 3
    with pytest.raises(RegistryError, match="broken"):
        list_manifests(data_dir, ASSET)
    manifests, problems = scan_manifests(data_dir)
    assert [m["version"] for m in manifests] == [stored["version"]]
    assert [(p.asset, p.version) for p in problems] == [(ASSET, "broken"), (ASSET, "copied"), (ASSET, "incomplete")]


@pytest.mark.parametrize("argv, message", [
    (["models", "list", "--asset", "NOPE"], "'NOPE' is not in the catalog"),
    (["models", "verify", "NOPE"], "'NOPE' is not in the catalog"),
    (["models", "show", ASSET, "v-missing"], "no model 'v-missing'"),
    (["models", "verify", ASSET, "v-missing"], "no model 'v-missing'"),
    (["models", "register", "--asset", "NOPE", "--horizon", "1", "--file", "x.onnx", "--features", "rsi_14"],
     "not in the catalog"),
    (["models", "register", "--asset", ASSET, "--horizon", "1", "--file", "x.onnx", "--features", "rsi_14,wall_clock"],
     "unknown feature(s) wall_clock"),
    (["models", "register", "--asset", ASSET, "--horizon", "1", "--file", "missing.onnx", "--features", "rsi_14"],
     "cannot read the model file"),
    (["models", "register", "--asset", "9004_VIX", "--horizon", "1", "--file", "x.onnx", "--features",
      "rsi_14,volume_oscillator"], "volume_oscillator need a volume series"),
    (["models", "register", "--asset", ASSET, "--horizon", "3", "--file", "x.onnx", "--features", "rsi_14"],
     "predicts horizons [1, 5]"),
])
def test_models_cli_bad_input_is_one_line_and_exit_2(cli_env, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("nexus-assets models ")


def test_models_cli_register(cli_env, capsys, tmp_path):
    data_dir, _ = cli_env
    path = network_onnx(tmp_path / "team.onnx", 2)
    argv = ["models", "register", "--asset", ASSET, "--horizon", "5", "--file", str(path), "--features",
            "rsi_14,macd", "--valid-from", "2018-06-01", "--version", "team-v1"]
    assert main(argv) == 0
    assert "registered 9001_SP500 team-v1" in capsys.readouterr().out
    manifest = json.loads((registry_root(data_dir) / ASSET / "team-v1" / MANIFEST_FILE).read_text())
    assert manifest["valid_from"] == "2018-06-01" and manifest["features"] == ["rsi_14", "macd"]
    assert set(manifest["libraries"]) == {"onnx", "onnxruntime"}  # what checked it, not what made it
    made = onnx.load(str(path))
    assert manifest["producer"] == {"name": made.producer_name or None, "version": made.producer_version or None}


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


def _register(tmp_path: Path, path: Path, width: int, **kwargs) -> dict:
    return register_model(str(tmp_path / "data"), asset=ASSET, horizon=1, model_file=str(path),
                          features=[f"f{i}" for i in range(width)], valid_from=dt.date(2018, 1, 1), **kwargs)


@pytest.mark.parametrize("case, build, rows", [
    ("torch's default export: batch fixed at 1", {"batch": 1}, 5),
    ("a fixed batch of 4, the last batch padded", {"batch": 4}, 10),
    ("a double (float64) model", {"elem": TensorProto.DOUBLE}, 5),
    ("a double model, batch fixed at 1", {"elem": TensorProto.DOUBLE, "batch": 1}, 3),
    ("a 1-D (n,) probability", {"head": "sigmoid_1d"}, 5),
    ("a 1-D (n,) probability of one row", {"head": "sigmoid_1d"}, 1),
    (".squeeze() at batch 1: a scalar output", {"head": "squeeze", "batch": 1}, 4),
    ("softmax over two classes, batch fixed at 1", {"head": "softmax", "batch": 1}, 3),
])
def test_exports_as_teams_make_them_register_and_predict(tmp_path, case, build, rows):
    width = 4
    manifest = _register(tmp_path, network_onnx(tmp_path / "team.onnx", width, **build), width)
    loaded = load_model(str(tmp_path / "data"), ASSET, manifest["version"])
    x = np.random.default_rng(7).normal(0.0, 2.0, (rows, width))
    tolerance = 1e-12 if build.get("elem") == TensorProto.DOUBLE else 1e-6  # float32 arithmetic
    np.testing.assert_allclose(loaded.probability_up(x), expected_probability(x, build.get("head", "sigmoid")),
                               rtol=0, atol=tolerance, err_msg=case)
    assert all(r.ok for r in verify(str(tmp_path / "data"))), case


@pytest.mark.parametrize("build, width, reason", [
    ({"head": "logits"}, 4, r"output 'p' is not a probability in \[0, 1\] \(on the probe rows: from -?[\d.]+ to [\d.]+\): "
                            r"raw logits or a score\? end the network with a sigmoid"),
    ({"head": "logits2"}, 4, r"not a probability in \[0, 1\].*softmax \(two outputs\)"),
    ({"head": "two_sigmoids"}, 4, r"two outputs 'p' do not sum to 1 .*end the network with a softmax"),
    ({"head": "three_classes"}, 4, r"no probability output .* it gives p float32 \(11, 3\)"),
    ({}, 3, r"input width is 3, the feature list has 4 names: --features must name the model's inputs, in order"),
    ({"input_shape": [None, "n_features"]}, 4, r"input width is symbolic \('n_features'\).*fixed feature dimension of 4"),
    ({"elem": TensorProto.INT64}, 4, r"input 'x' is tensor\(int64\).*export the model with a float32 or float64 input"),
    ({"input_shape": [None, 1, 4]}, 4, r"input 'x' has shape \[None, 1, 4\].*input of shape \(batch, 4\)"),
])
def test_refusals_name_the_file_the_reason_and_the_fix(tmp_path, build, width, reason):
    path = network_onnx(tmp_path / "team.onnx", width, **build)
    with pytest.raises(RegistryError) as refused:
        _register(tmp_path, path, 4)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(reason, message), message
    assert not (tmp_path / "data").exists()  # nothing stored


def _with_external_data(path: Path, width: int) -> Path:
    """The network saved as torch.onnx.export's default exporter saves it: the graph in ``path``,
    the weights in ``<path>.data`` beside it."""
    model = onnx.load(str(network_onnx(path, width)))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=0)
    assert any(t.data_location == TensorProto.EXTERNAL for t in onnx.load(str(path), load_external_data=False).graph.initializer)
    return path


def test_weights_in_a_side_file_are_folded_into_the_one_stored_file(tmp_path, monkeypatch):
    width = 4
    (tmp_path / "export").mkdir()
    path = _with_external_data(tmp_path / "export" / "team.onnx", width)
    monkeypatch.chdir(tmp_path)  # not the export's folder: nothing is read from the working directory
    manifest = _register(tmp_path, path, width)
    assert manifest["external_data_inlined"] == ["team.onnx.data"]
    stored = registry_root(str(tmp_path / "data")) / ASSET / manifest["version"] / MODEL_FILE
    assert sorted(p.name for p in stored.parent.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert not any(t.data_location == TensorProto.EXTERNAL for t in onnx.load(str(stored)).graph.initializer)
    (path.parent / "team.onnx.data").unlink()
    loaded = load_model(str(tmp_path / "data"), ASSET, manifest["version"])
    x = np.random.default_rng(1).normal(size=(5, width))
    np.testing.assert_allclose(loaded.probability_up(x), expected_probability(x), rtol=0, atol=1e-6)
    with pytest.raises(RegistryError, match=f"^{re.escape(str(path))}: the model keeps its weights in team.onnx.data "
                       r"beside it, which cannot be read .*external_data=False\)$"):
        _register(tmp_path, path, width, version="again")


def test_a_stored_model_that_reads_a_side_file_is_refused(tmp_path, monkeypatch):
    """Its hash would not cover the weights: onnxruntime would read them from the working directory."""
    width = 4
    path = _with_external_data(tmp_path / "team.onnx", width)
    data_dir = str(tmp_path / "data")
    stored = write_model(data_dir, {"version": "v1", "asset": ASSET, "horizon": 1, "valid_from": "2018-01-01",
                                    "source": "registered", "features": list("abcd")}, path.read_bytes())
    monkeypatch.chdir(tmp_path)  # where team.onnx.data lies
    where = registry_root(data_dir) / ASSET / "v1" / MODEL_FILE
    with pytest.raises(ModelIntegrityError, match=f"^{re.escape(str(where))}: the model keeps tensors in a separate file"):
        load_model(data_dir, ASSET, stored["version"])
    [result] = verify(data_dir)
    assert not result.ok and "separate file" in result.reason


def _skl2onnx(path: Path, model, x: np.ndarray, *, double: bool, zipmap: bool = True, labels=(0, 1)) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    y = np.asarray(labels)[(x[:, 0] + 0.5 * np.random.default_rng(4).normal(size=len(x)) > 0).astype(int)]
    model.fit(x, y)
    kind = DoubleTensorType if double else FloatTensorType
    onx = convert_sklearn(model, initial_types=[("input", kind([None, x.shape[1]]))],
                          options=None if zipmap else {id(model): {"zipmap": False}})
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.mark.parametrize("estimator, zipmap", [("logistic", False), ("forest", True), ("forest", False)])
def test_scikit_learn_exports_with_double_input_register_and_predict(tmp_path, estimator, zipmap):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    model = {"logistic": LogisticRegression(),
             "forest": RandomForestClassifier(n_estimators=10, random_state=0)}[estimator]
    x = np.random.default_rng(3).normal(size=(200, 3))
    manifest = _register(tmp_path, _skl2onnx(tmp_path / "skl.onnx", model, x, double=True, zipmap=zipmap), 3)
    loaded = load_model(str(tmp_path / "data"), ASSET, manifest["version"])
    np.testing.assert_allclose(loaded.probability_up(x[:20]), model.predict_proba(x[:20])[:, 1], rtol=0, atol=1e-6)


def test_scikit_learn_exports_that_cannot_serve_are_refused_with_the_fix(tmp_path):
    """skl2onnx's DoubleTensorType graphs that onnxruntime does not type-check (a ZipMap over double
    probabilities; gradient boosting in double with or without it), and class labels without a 1."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(3).normal(size=(200, 3))
    for name, model, zipmap in [("zipmap", LogisticRegression(), True),
                                ("boosting", GradientBoostingClassifier(n_estimators=5, random_state=0), False)]:
        path = _skl2onnx(tmp_path / f"{name}.onnx", model, x, double=True, zipmap=zipmap)
        with pytest.raises(RegistryError, match=f"^{re.escape(str(path))}: not a loadable ONNX model .*tensor\\(double\\).*"
                                                r"convert with FloatTensorType, or .*options=\{'zipmap': False\}$"):
            _register(tmp_path, path, 3)
    words = _skl2onnx(tmp_path / "words.onnx", LogisticRegression(), x, double=False, labels=("down", "up"))
    with pytest.raises(RegistryError, match=f"^{re.escape(str(words))}: the model's probability map 'output_probability' "
                                            r"has classes \['down', 'up'\]; class 1 is read as up: train on labels 0/1"):
        _register(tmp_path, words, 3)


KEY = "k3y-for-tests-only-" + "x" * 24


def test_signed_manifests_catch_a_rewritten_file_and_hash(registry, monkeypatch, capsys):
    """The hash alone cannot catch someone who rewrites a model file and its manifest's hash; with
    NEXUS_MODEL_SIGNING_KEY set, the manifest's HMAC does. Unsigned manifests are refused until
    `models sign` signs them (only those whose file still matches); the key never appears anywhere."""
    data_dir, stored = registry
    folder = registry_root(data_dir) / ASSET / stored["version"]
    assert "signature" not in stored  # no key: nothing signed, loads as before
    load_model(data_dir, ASSET, stored["version"], features=NAMES)

    monkeypatch.setenv(SIGNING_KEY_ENV, KEY)
    with pytest.raises(ModelIntegrityError, match="not signed"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES)
    monkeypatch.setenv("NEXUS_DATA_DIR", data_dir)
    assert main(["models", "verify"]) == 1
    assert "not signed" in capsys.readouterr().out
    assert main(["models", "sign"]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    signed = json.loads((folder / MANIFEST_FILE).read_text())
    assert signed["signature"].startswith("hmac-sha256:") and {k: v for k, v in signed.items() if k != "signature"} == stored
    load_model(data_dir, ASSET, stored["version"], features=NAMES)
    assert main(["models", "verify"]) == 0 and "signature valid" in capsys.readouterr().out

    # someone rewrites the model file and puts its hash in the manifest: the hash check passes ...
    model = folder / MODEL_FILE
    original = model.read_bytes()
    other = network_onnx(folder.parent / "other.onnx", len(NAMES)).read_bytes()
    model.write_bytes(other)
    (folder / MANIFEST_FILE).write_text(json.dumps({**signed, "sha256": sha256_hex(other)}))
    with pytest.raises(ModelIntegrityError, match="signature does not match"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES)
    assert main(["models", "sign"]) == 1  # ... and signing again does not launder it
    assert "does not match" in capsys.readouterr().out
    with pytest.raises(ModelIntegrityError, match="signature does not match"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES)
    monkeypatch.delenv(SIGNING_KEY_ENV)  # a process without the key refuses a signed manifest
    with pytest.raises(ModelIntegrityError, match="signed but NEXUS_MODEL_SIGNING_KEY is not set"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES)
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY[::-1])  # another key
    (folder / MANIFEST_FILE).write_text(json.dumps(signed))
    model.write_bytes(original)
    with pytest.raises(ModelIntegrityError, match="signed with another"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES)

    # a changed file is never signed; a new model is signed as it is written
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY)
    model.write_bytes(original + b"\0")
    assert main(["models", "sign", ASSET]) == 1
    line = capsys.readouterr().out
    assert line.startswith("BAD ") and "unchanged" in line
    model.write_bytes(original)
    fresh = write_model(data_dir, {**stored, "version": "v-new"}, original)
    assert fresh["signature"] == manifest_signature(fresh, KEY.encode())
    load_model(data_dir, ASSET, "v-new", features=NAMES)
    # a key rotation: re-sign with --force under the new key; turning signing off: --remove
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY[::-1])
    assert main(["models", "sign"]) == 1 and main(["models", "sign", "--force"]) == 0
    capsys.readouterr()
    load_model(data_dir, ASSET, "v-new", features=NAMES)
    assert main(["models", "sign", "--remove"]) == 0
    monkeypatch.delenv(SIGNING_KEY_ENV)
    load_model(data_dir, ASSET, "v-new", features=NAMES)
    assert "signature" not in json.loads((folder / MANIFEST_FILE).read_text())
    for path in registry_root(data_dir).rglob("*"):
        assert not path.is_file() or (KEY.encode() not in path.read_bytes() and KEY[::-1].encode() not in path.read_bytes())


def test_a_short_signing_key_is_refused_without_echoing_it(registry, monkeypatch, capsys):
    data_dir, _ = registry
    monkeypatch.setenv("NEXUS_DATA_DIR", data_dir)
    monkeypatch.setenv(SIGNING_KEY_ENV, "short-secret")
    for command in ("sign", "verify"):  # once, not once per model
        assert main(["models", command]) == 2
        captured = capsys.readouterr()
        assert "too short" in captured.err and "short-secret" not in captured.err + captured.out
        assert captured.err.count("\n") == 1 and captured.out == ""
    monkeypatch.setenv(SIGNING_KEY_ENV, "a-long-enough-secret-key-pasted-with-a-newline\n")
    assert main(["models", "verify"]) == 2 and "whitespace" in capsys.readouterr().err
    monkeypatch.delenv(SIGNING_KEY_ENV)
    assert main(["models", "sign"]) == 2 and "is not set" in capsys.readouterr().err


def test_without_the_key_a_stripped_signature_in_a_signed_registry_is_refused(registry, monkeypatch):
    """A worker that lacks the key cannot check signatures; it refuses any model of an asset whose
    registry holds a signed manifest, so stripping one manifest's signature (and swapping its
    model and hash) does not get that model served there."""
    data_dir, stored = registry
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY)
    model = (registry_root(data_dir) / ASSET / stored["version"] / MODEL_FILE).read_bytes()
    write_model(data_dir, {**stored, "version": "v-signed"}, model)
    monkeypatch.delenv(SIGNING_KEY_ENV)
    assert "signature" not in read_manifest(data_dir, ASSET, stored["version"])  # written before the key was set
    with pytest.raises(ModelIntegrityError, match="registry of this asset is signed"):
        load_model(data_dir, ASSET, stored["version"], features=NAMES)
    assert [r.ok for r in verify(data_dir, ASSET)] == [False, False]
