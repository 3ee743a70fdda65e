"""The ML model registry: the stored manifests ARE the registry (docs/ml.md#the-registry).

Layout under the data root (a folder or any fsspec root, like the Parquet store)::

    <data_dir>/ml_registry/<asset>/<version>/model.onnx
    <data_dir>/ml_registry/<asset>/<version>/manifest.json

A manifest names its model's file and the file's SHA-256. Nothing is ever loaded from a path
alone: :func:`load_model` reads the file's bytes once, hashes those very bytes, refuses them when
the hash differs from the manifest's (:class:`ModelIntegrityError`) and only then hands the same
bytes to onnxruntime. An unknown asset or version is :class:`UnknownModelError`. Both derive from
:class:`RegistryError`, whose message names the file and the reason.

Which version serves a horizon on a date is :func:`current_manifest`: the manifest of that asset
and horizon with the latest ``valid_from`` on or before the date; on a tie a registered model
beats a trained one (an operator's explicit choice), then the greater version string.

Writes are atomic per file (:mod:`nexus_assets.atomic`): the model first, the manifest last, so a
manifest never points at a file that is not there yet.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from upath import UPath

from nexus_assets.atomic import write_bytes_atomic
from nexus_assets.core.ml_serving import current_manifest, manifest_order

__all__ = [
    "REGISTRY_FOLDER",
    "MODEL_FILE",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "RegistryError",
    "UnknownModelError",
    "ModelIntegrityError",
    "LoadedModel",
    "Verification",
    "registry_root",
    "list_manifests",
    "read_manifest",
    "current_manifest",
    "verify",
    "load_model",
    "write_model",
    "check_onnx",
    "register_model",
    "sha256_hex",
]

REGISTRY_FOLDER = "ml_registry"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # one path segment, no traversal


class RegistryError(ValueError):
    """A registry operation that cannot go ahead; the message names the file and the reason."""


class UnknownModelError(RegistryError):
    """No manifest for this asset and version."""


class ModelIntegrityError(RegistryError):
    """A model file that is missing, unreadable or whose bytes do not match its manifest's SHA-256."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry_root(data_dir: str) -> UPath:
    return UPath(str(data_dir)) / REGISTRY_FOLDER


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _VERSION.match(value):
        raise RegistryError(f"{kind} {value!r} is not a valid name (letters, digits, '.', '_', '-'; at most 128)")
    return value


def _model_dir(data_dir: str, asset: str, version: str) -> UPath:
    return registry_root(data_dir) / _check_name("asset", asset) / _check_name("version", version)


def _read_json(path: UPath) -> dict:
    """The manifest at ``<asset>/<version>/manifest.json``; one whose own asset or version is not
    its folder's (copied or edited by hand) is refused, so it cannot vouch for another file."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: unreadable manifest: {exc}") from None
    folder_asset, folder_version = path.parent.parent.name, path.parent.name
    if not isinstance(manifest, dict) or (manifest.get("asset"), manifest.get("version")) != (folder_asset, folder_version):
        raise RegistryError(f"{path}: the manifest's asset/version is not its folder's ({folder_asset}/{folder_version})")
    return manifest


def list_manifests(data_dir: str, asset: str | None = None) -> list[dict]:
    """Every manifest (of ``asset``, if given), sorted by asset, horizon, valid_from, registered
    after trained, version: the order :func:`current_manifest` resolves ties in."""
    root = registry_root(data_dir)
    if asset is not None:
        folders = [root / _check_name("asset", asset)]
    else:
        folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name) if root.is_dir() else []
    manifests = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for version_dir in sorted(folder.iterdir(), key=lambda p: p.name):
            path = version_dir / MANIFEST_FILE
            if version_dir.is_dir() and path.is_file():
                manifests.append(_read_json(path))
    return sorted(manifests, key=manifest_order)


def read_manifest(data_dir: str, asset: str, version: str) -> dict:
    """The manifest of ``asset``'s ``version``; :class:`UnknownModelError` when there is none."""
    path = _model_dir(data_dir, asset, version) / MANIFEST_FILE
    try:
        return _read_json(path)
    except FileNotFoundError:
        raise UnknownModelError(f"{path}: no model {version!r} of asset {asset!r} in the registry") from None


@dataclass(frozen=True)
class Verification:
    """One model's integrity check: ``ok``, else the reason."""

    asset: str
    version: str
    path: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'OK ' if self.ok else 'BAD'} {self.asset} {self.version} {self.path}: {self.reason}"


def _verified_bytes(data_dir: str, manifest: Mapping[str, Any]) -> tuple[UPath, bytes]:
    path = _model_dir(data_dir, manifest["asset"], manifest["version"]) / manifest.get("file", MODEL_FILE)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelIntegrityError(f"{path}: model file missing (manifest {manifest['version']!r})") from None
    except OSError as exc:
        raise ModelIntegrityError(f"{path}: model file unreadable: {exc}") from None
    found = sha256_hex(data)
    if found != manifest.get("sha256"):
        raise ModelIntegrityError(
            f"{path}: SHA-256 {found} does not match the manifest's {manifest.get('sha256')}: the file was changed "
            "after it was registered; refusing to load it")
    return path, data


def verify(data_dir: str, asset: str | None = None, version: str | None = None) -> list[Verification]:
    """Check every model's file (of ``asset``, of ``version``) against its manifest's hash and
    feature list; one result per model, in :func:`list_manifests` order."""
    if version is not None:
        if asset is None:
            raise RegistryError("a version needs its asset")
        manifests = [read_manifest(data_dir, asset, version)]
    else:
        manifests = list_manifests(data_dir, asset)
    results = []
    for manifest in manifests:
        path = _model_dir(data_dir, manifest["asset"], manifest["version"]) / manifest.get("file", MODEL_FILE)
        try:
            _, data = _verified_bytes(data_dir, manifest)
            check_onnx(data, len(manifest["features"]), where=str(path))
        except RegistryError as exc:
            results.append(Verification(manifest["asset"], manifest["version"], str(path), False,
                                        str(exc).removeprefix(f"{path}: ")))
            continue
        results.append(Verification(manifest["asset"], manifest["version"], str(path), True,
                                    f"sha256 {manifest['sha256'][:12]}... matches, {len(manifest['features'])} features"))
    return results


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: its manifest and an onnxruntime session over the verified bytes."""

    manifest: dict
    session: Any

    def probability_up(self, rows: np.ndarray) -> np.ndarray:
        """P(up) for each row of ``rows`` (float, one column per manifest feature, in order)."""
        return _probability_up(self.session, np.asarray(rows, dtype=np.float32))


def _session(data: bytes, where: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the same numbers on every machine, and no extra threads on a shared host
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for any malformed model
        raise ModelIntegrityError(f"{where}: not a loadable ONNX model: {str(exc).splitlines()[0][:300]}") from None


def _probability_up(session, rows: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: rows})
    for output in outputs:  # skl2onnx: [label, probabilities]; a plain network: one (n, 1) or (n, 2) tensor
        if isinstance(output, list) and output and isinstance(output[0], dict):  # a ZipMap'd classifier
            return np.array([float(row.get(1, row.get("1", np.nan))) for row in output])
        values = np.asarray(output)
        if values.dtype.kind == "f" and values.ndim == 2 and values.shape[0] == len(rows) and values.shape[1] in (1, 2):
            return values[:, -1].astype(np.float64)
    raise RegistryError("the model gives no probability output (an (n, 1) or (n, 2) float tensor)")


def check_onnx(data: bytes, n_features: int, *, where: str) -> None:
    """Refuse an ONNX model that does not load, whose input width is not ``n_features`` or whose
    output is not a probability in [0, 1] (tried on zero and unit rows and a few seeded random ones)."""
    session = _session(data, where)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RegistryError(f"{where}: the model takes {len(inputs)} inputs; one (rows x features) is needed")
    shape = inputs[0].shape
    width = shape[-1] if shape else None
    if not isinstance(width, int) or width != n_features:
        raise RegistryError(f"{where}: the model's input width is {width!r}, the feature list has {n_features} names")
    probe = np.vstack([np.zeros(n_features), np.ones(n_features), -np.ones(n_features),
                       np.random.default_rng(0).normal(0.0, 3.0, (8, n_features))]).astype(np.float32)
    try:
        p = _probability_up(session, probe)
    except RegistryError as exc:
        raise RegistryError(f"{where}: {exc}") from None
    except Exception as exc:
        raise RegistryError(f"{where}: the model fails on a probe input: {str(exc).splitlines()[0][:300]}") from None
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise RegistryError(f"{where}: the model's output is not a probability in [0, 1] (got {p.tolist()})")


def load_model(data_dir: str, asset: str, version: str, *, features: Sequence[str] | None = None) -> LoadedModel:
    """The verified model ``version`` of ``asset``: its bytes read once, hashed, compared with the
    manifest, then loaded. ``features``: the columns the caller will pass; a different list than
    the manifest's is refused (:class:`RegistryError`)."""
    manifest = read_manifest(data_dir, asset, version)
    path, data = _verified_bytes(data_dir, manifest)
    if features is not None and list(features) != list(manifest["features"]):
        raise RegistryError(f"{path}: the model expects features {manifest['features']}, the caller has {list(features)}")
    return LoadedModel(manifest, _session(data, str(path)))


def write_model(data_dir: str, manifest: Mapping[str, Any], data: bytes) -> dict:
    """Store a model file and its manifest (``sha256`` and ``file`` filled in here); the manifest
    is written last. Returns the stored manifest."""
    stored = {**manifest, "manifest_format": MANIFEST_FORMAT, "file": MODEL_FILE, "sha256": sha256_hex(data)}
    folder = _model_dir(data_dir, stored["asset"], stored["version"])
    write_bytes_atomic(folder / MODEL_FILE, data)
    text = json.dumps(stored, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(folder / MANIFEST_FILE, text.encode("utf-8"))
    return stored


def register_model(data_dir: str, *, asset: str, horizon: int, model_file: str, features: Sequence[str],
                   valid_from: dt.date, version: str | None = None, libraries: Mapping[str, str] | None = None) -> dict:
    """Add an externally trained ONNX model: checked (loads, input width = feature count, gives a
    probability), copied, hashed, with a manifest (``source: registered``)."""
    features = [f.strip() for f in features]
    if not features or any(not f for f in features) or len(set(features)) != len(features):
        raise RegistryError(f"--features must be distinct non-empty names, got {','.join(features)!r}")
    if horizon < 1:
        raise RegistryError(f"--horizon must be >= 1, got {horizon}")
    source = UPath(model_file)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{model_file}: cannot read the model file: {exc.strerror or exc}") from None
    check_onnx(data, len(features), where=model_file)
    version = version or f"registered-{valid_from.isoformat()}-h{horizon}-{sha256_hex(data)[:8]}"
    folder = _model_dir(data_dir, asset, version)
    if (folder / MANIFEST_FILE).exists():
        raise RegistryError(f"{folder / MANIFEST_FILE}: version {version!r} of {asset!r} already exists; pick another --version")
    manifest = {
        "version": version,
        "asset": asset,
        "horizon": int(horizon),
        "valid_from": valid_from.isoformat(),
        "trained_on": None,
        "source": "registered",
        "registered_from": source.name,
        "features": features,
        "training_window": None,
        "hyperparameters": None,
        "validation": None,
        "libraries": dict(libraries or {}),
    }
    return write_model(data_dir, manifest, data)
