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
import functools
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
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
    "ModelInput",
    "LoadedModel",
    "Verification",
    "registry_root",
    "ManifestProblem",
    "scan_manifests",
    "list_manifests",
    "read_manifest",
    "current_manifest",
    "verify",
    "load_model",
    "write_model",
    "check_onnx",
    "register_model",
    "sha256_hex",
    "SIGNING_KEY_ENV",
    "manifest_signature",
    "sign",
    "SIGN_MODES",
]

REGISTRY_FOLDER = "ml_registry"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
SIGNING_KEY_ENV = "NEXUS_MODEL_SIGNING_KEY"  # a secret: read from the environment only, never written or shown
_SIGNATURE_PREFIX = "hmac-sha256:"
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
    except OSError as exc:  # its strerror only: str(exc) repeats the path, which the API must not show
        raise RegistryError(f"{path}: unreadable manifest: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:
        raise RegistryError(f"{path}: unreadable manifest: {exc}") from None
    folder_asset, folder_version = path.parent.parent.name, path.parent.name
    if not isinstance(manifest, dict) or (manifest.get("asset"), manifest.get("version")) != (folder_asset, folder_version):
        raise RegistryError(f"{path}: the manifest's asset/version is not its folder's ({folder_asset}/{folder_version})")
    wrong = _manifest_problems(manifest)
    if wrong:
        raise RegistryError(f"{path}: incomplete manifest: {'; '.join(wrong)}")
    return manifest


def _iso_day(value: object) -> bool:
    try:
        return isinstance(value, str) and dt.date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


# what serving, loading and listing read of a manifest: (field, test, what it must be)
_MANIFEST_FIELDS = (
    ("horizon", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    ("valid_from", _iso_day, "a date YYYY-MM-DD"),
    ("source", lambda v: v in ("trained", "registered"), "'trained' or 'registered'"),
    ("features", lambda v: isinstance(v, list) and bool(v) and all(isinstance(f, str) and f for f in v),
     "a non-empty list of feature names"),
    ("sha256", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "64 hex digits"),
    ("file", lambda v: v is None or v == MODEL_FILE, f"{MODEL_FILE!r}"),
    ("trained_on", lambda v: v is None or _iso_day(v), "a date YYYY-MM-DD or null"),
)


def _manifest_problems(manifest: Mapping[str, Any]) -> list[str]:
    """The fields a manifest lacks or holds wrongly (what reading it further would trip on)."""
    problems = []
    for name, good, what in _MANIFEST_FIELDS:
        if name not in manifest and name in ("file", "trained_on"):
            continue
        if name not in manifest:
            problems.append(f"no {name!r}")
        elif not good(manifest[name]):
            problems.append(f"{name!r} must be {what}, not {manifest[name]!r}"[:200])
    if manifest.get("source") == "trained" and not _iso_day(manifest.get("trained_on")):
        problems.append("a trained model's 'trained_on' must be a date YYYY-MM-DD")
    return problems


@dataclass(frozen=True)
class ManifestProblem:
    """A manifest that cannot be read: unparsable, or not its folder's (copied or edited by hand)."""

    asset: str  # the folder names: the manifest itself may say otherwise, or nothing
    version: str
    path: str
    reason: str

    def line(self) -> str:
        return f"BAD {self.asset} {self.version} {self.path}: {self.reason}"


def scan_manifests(data_dir: str, asset: str | None = None, *, assets: Collection[str] | None = None
                   ) -> tuple[list[dict], list[ManifestProblem]]:
    """Every readable manifest (of ``asset``, or of the ``assets`` given), in :func:`list_manifests`
    order, and one :class:`ManifestProblem` per manifest that cannot be read, in folder order: one
    bad manifest does not hide the others (``models verify`` reports each, the API lists the rest)."""
    root = registry_root(data_dir)
    if asset is not None:
        folders = [root / _check_name("asset", asset)]
    else:
        folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name) if root.is_dir() else []
    if assets is not None:
        folders = [folder for folder in folders if folder.name in assets]
    manifests, problems = [], []
    for folder in folders:
        if not folder.is_dir():
            continue
        for version_dir in sorted(folder.iterdir(), key=lambda p: p.name):
            path = version_dir / MANIFEST_FILE
            if not (version_dir.is_dir() and path.is_file()):
                continue
            try:
                manifests.append(_read_json(path))
            except RegistryError as exc:
                problems.append(ManifestProblem(folder.name, version_dir.name, str(path), str(exc).removeprefix(f"{path}: ")))
    return sorted(manifests, key=manifest_order), problems


def list_manifests(data_dir: str, asset: str | None = None) -> list[dict]:
    """Every manifest (of ``asset``, if given), sorted by asset, horizon, valid_from, registered
    after trained, version: the order :func:`current_manifest` resolves ties in. A manifest that
    cannot be read stops it (:class:`RegistryError` naming the file): the pipeline serves from a
    registry it can read whole, or not at all."""
    manifests, problems = scan_manifests(data_dir, asset)
    if problems:
        raise RegistryError(f"{problems[0].path}: {problems[0].reason}")
    return manifests


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


def _signing_key() -> bytes | None:
    """The manifests' signing key from ``NEXUS_MODEL_SIGNING_KEY`` (None when unset or empty)."""
    key = os.environ.get(SIGNING_KEY_ENV, "")
    if not key:
        return None
    if key != key.strip():  # a pasted newline would sign with another key than the one meant
        raise RegistryError(f"{SIGNING_KEY_ENV} has leading or trailing whitespace; set it without")
    if len(key.encode("utf-8")) < 16:  # never echoed: its length only
        raise RegistryError(f"{SIGNING_KEY_ENV} is too short to sign with ({len(key.encode('utf-8'))} bytes; at least 16, "
                            "e.g. `python3 -c 'import secrets; print(secrets.token_hex(32))'`)")
    return key.encode("utf-8")


def manifest_signature(manifest: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the manifest's canonical JSON (sorted keys, no spaces), its ``signature`` left out."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return _SIGNATURE_PREFIX + hmac.new(key, canonical, hashlib.sha256).hexdigest()


def _check_signature(data_dir: str, manifest: Mapping[str, Any], asset_signed: Callable[[str], bool] | None = None) -> bool:
    """With a signing key set, refuse a manifest whose signature is missing or wrong; without one,
    refuse a signed manifest (a process that lacks the key must not serve a signed registry
    unchecked). :class:`ModelIntegrityError` names the manifest's file. True when checked.
    ``asset_signed``: :func:`_asset_is_signed` of an asset, for a caller checking many manifests."""
    key = _signing_key()
    path = _model_dir(data_dir, manifest["asset"], manifest["version"]) / MANIFEST_FILE
    found = manifest.get("signature")
    if key is None:
        if found or (asset_signed or functools.partial(_asset_is_signed, data_dir))(manifest["asset"]):
            raise ModelIntegrityError(f"{path}: the {'manifest' if found else 'registry of this asset'} is signed but "
                                      f"{SIGNING_KEY_ENV} is not set in this process; refusing to load its model "
                                      "unchecked (set the key; to stop signing, remove the signatures with "
                                      "`nexus-assets models sign --remove` while it is set)")
        return False
    if not found:
        raise ModelIntegrityError(f"{path}: the manifest is not signed and {SIGNING_KEY_ENV} is set; refusing to load "
                                  "its model (sign the registry's models once with `nexus-assets models sign`)")
    if not _signature_matches(manifest, key):
        raise ModelIntegrityError(f"{path}: the manifest's signature does not match: it was changed after it was "
                                  f"signed, or signed with another {SIGNING_KEY_ENV}; refusing to load its model")
    return True


def _asset_is_signed(data_dir: str, asset: str) -> bool:
    """Whether any manifest of ``asset`` carries a signature: then a process without the key refuses
    even an unsigned one (a signature stripped from one manifest of a signed registry)."""
    folder = registry_root(data_dir) / _check_name("asset", asset)
    if not folder.is_dir():
        return False
    for version_dir in folder.iterdir():
        path = version_dir / MANIFEST_FILE
        try:
            if '"signature"' in path.read_text(encoding="utf-8"):
                return True
        except (OSError, UnicodeDecodeError):
            continue
    return False


def _signature_matches(manifest: Mapping[str, Any], key: bytes) -> bool:
    found = manifest.get("signature")
    return isinstance(found, str) and hmac.compare_digest(found, manifest_signature(manifest, key))


def _verified_bytes(data_dir: str, manifest: Mapping[str, Any],
                    asset_signed: Callable[[str], bool] | None = None) -> tuple[UPath, bytes]:
    """The model file's bytes, after the manifest's signature (:func:`_check_signature`) and the file's hash."""
    _check_signature(data_dir, manifest, asset_signed)
    path = _model_dir(data_dir, manifest["asset"], manifest["version"]) / manifest.get("file", MODEL_FILE)
    return path, _hashed_bytes(path, manifest)


def _hashed_bytes(path: UPath, manifest: Mapping[str, Any]) -> bytes:
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
            "after its manifest was written; refusing to load it")
    return data


def _selected(data_dir: str, asset: str | None, version: str | None, note: str = "") -> tuple[list[dict], list[Verification]]:
    """The readable manifests of ``asset``/``version`` (all when None), and a ``BAD`` result (reason
    plus ``note``) for each of the selection's manifests that cannot be read."""
    if version is not None:
        if asset is None:
            raise RegistryError("a version needs its asset")
        try:
            return [read_manifest(data_dir, asset, version)], []
        except UnknownModelError:
            raise
        except RegistryError as exc:  # there, but unreadable: a BAD line like any other model's
            path = str(_model_dir(data_dir, asset, version) / MANIFEST_FILE)
            return [], [Verification(asset, version, path, False, str(exc).removeprefix(f"{path}: ") + note)]
    manifests, problems = scan_manifests(data_dir, asset)
    return manifests, [Verification(p.asset, p.version, p.path, False, p.reason + note) for p in problems]


def verify(data_dir: str, asset: str | None = None, version: str | None = None) -> list[Verification]:
    """Check every model's file (of ``asset``, of ``version``) against its manifest's hash and
    feature list; one result per model: first each manifest that cannot be read, then the others
    in :func:`list_manifests` order."""
    key = _signing_key()  # a key that cannot sign is refused once, not once per model
    signed = functools.cache(functools.partial(_asset_is_signed, data_dir))  # each asset's folder read once
    manifests, results = _selected(data_dir, asset, version)
    for manifest in manifests:
        path = _model_dir(data_dir, manifest["asset"], manifest["version"]) / manifest.get("file", MODEL_FILE)
        try:
            _, data = _verified_bytes(data_dir, manifest, signed)
            check_onnx(data, len(manifest["features"]), where=str(path))
        except RegistryError as exc:
            results.append(Verification(manifest["asset"], manifest["version"], str(path), False,
                                        str(exc).removeprefix(f"{path}: ")))
            continue
        checked = "signature valid" if key else f"signature not checked ({SIGNING_KEY_ENV} unset)"
        results.append(Verification(manifest["asset"], manifest["version"], str(path), True,
                                    f"sha256 {manifest['sha256'][:12]}... matches, {len(manifest['features'])} features, "
                                    f"{checked}"))
    return results


SIGN_MODES = ("sign", "force", "remove")


def sign(data_dir: str, asset: str | None = None, version: str | None = None, *, mode: str = "sign") -> list[Verification]:
    """Sign the manifests (of ``asset``, of ``version``) with ``NEXUS_MODEL_SIGNING_KEY``, once, when
    signing is turned on. Only a readable manifest whose model file still matches its hash is
    signed; one already signed with another signature is left as it is (it was changed after it was
    signed, or signed with another key: ``mode="force"`` re-signs it, after the operator checked the
    model, e.g. to rotate the key). ``mode="remove"`` takes valid signatures off (turning signing
    off). The others come back ``ok=False`` with the reason, unchanged."""
    if mode not in SIGN_MODES:
        raise RegistryError(f"sign mode must be one of {', '.join(SIGN_MODES)}, got {mode!r}")
    key = _signing_key()
    if key is None:
        raise RegistryError(f"{SIGNING_KEY_ENV} is not set: nothing to sign with")
    manifests, results = _selected(data_dir, asset, version, "; unchanged")
    for manifest in manifests:
        folder = _model_dir(data_dir, manifest["asset"], manifest["version"])
        path = folder / manifest.get("file", MODEL_FILE)
        where = str(folder / MANIFEST_FILE)
        try:
            _hashed_bytes(path, manifest)
        except RegistryError as exc:
            results.append(Verification(manifest["asset"], manifest["version"], str(path), False,
                                        f"{str(exc).removeprefix(f'{path}: ')}; unchanged"))
            continue
        if manifest.get("signature") and not _signature_matches(manifest, key) and mode != "force":
            results.append(Verification(manifest["asset"], manifest["version"], where, False,
                                        "signed, and the signature does not match: changed after it was signed, or "
                                        "signed with another key; unchanged (check the model, then `--force`)"))
            continue
        unsigned = {k: v for k, v in manifest.items() if k != "signature"}
        wanted = unsigned if mode == "remove" else {**unsigned, "signature": manifest_signature(unsigned, key)}
        if wanted != manifest:
            _write_manifest(folder, wanted)
        results.append(Verification(manifest["asset"], manifest["version"], where, True,
                                    "signature removed" if mode == "remove" else "signed"))
    return results


@dataclass(frozen=True)
class ModelInput:
    """The one input of a direction model: its name, the element type rows are cast to, and its
    batch size when the export fixed one (``None``: any number of rows in one call)."""

    name: str
    dtype: type
    batch: int | None


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: its manifest, an onnxruntime session over the verified bytes and its input."""

    manifest: dict
    session: Any
    input: ModelInput

    def probability_up(self, rows: np.ndarray) -> np.ndarray:
        """P(up) for each row of ``rows`` (float, one column per manifest feature, in order)."""
        return _up(_run(self.session, self.input, np.asarray(rows))[1])


# onnxruntime's element types that feature rows are cast to; a float32 model gets exactly the
# float32 rows it always got, so the pipeline's own models predict the same bits as before
_ELEMENT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def _session(data: bytes, where: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the same numbers on every machine, and no extra threads on a shared host
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="nexus-no-external-data-") as empty:
        # A model loaded from bytes reads tensors it keeps in a side file ("external data") from the
        # working directory: bytes the manifest's hash does not cover. Pointed at an empty folder,
        # onnxruntime refuses such a model instead.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        try:
            return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for any malformed model
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "external data" in first.lower() or empty in first:  # onnxruntime 1.21 names only the missing file
        raise ModelIntegrityError(
            f"{where}: the model keeps tensors in a separate file (ONNX external data), which its SHA-256 does not "
            "cover; refusing it: register the model with its .data file beside it (the registry stores one "
            "self-contained file), or export with torch.onnx.export(..., external_data=False)")
    hint = ""
    if "Type Error" in first and "tensor(double)" in first:  # skl2onnx 1.20: DoubleTensorType with ZipMap or trees
        hint = ("; a scikit-learn export in double that onnxruntime cannot type: convert with FloatTensorType, or "
                "(enough for a linear model) options={'zipmap': False}")
    raise ModelIntegrityError(f"{where}: not a loadable ONNX model for onnxruntime {ort.__version__}: {first[:300]}{hint}")


def _model_input(session, where: str, n_features: int) -> ModelInput:
    """The model's one input, refused unless it is float or double rows x ``n_features``."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RegistryError(f"{where}: the model takes {len(inputs)} inputs; one (rows x features) is needed")
    name, shape, kind = inputs[0].name, inputs[0].shape, inputs[0].type
    if kind not in _ELEMENT_TYPES:
        raise RegistryError(f"{where}: the model's input {name!r} is {kind}; features are fed as float or double "
                            "(tensor(float) or tensor(double)): export the model with a float32 or float64 input")
    if len(shape) != 2:
        raise RegistryError(f"{where}: the model's input {name!r} has shape {shape}; rows x features is needed: "
                            f"export it with an input of shape (batch, {n_features})")
    batch, width = shape
    if not isinstance(width, int):
        raise RegistryError(f"{where}: the model's input width is symbolic ({width!r}), the feature list has "
                            f"{n_features} names: export it with a fixed feature dimension of {n_features}")
    if width != n_features:
        raise RegistryError(f"{where}: the model's input width is {width!r}, the feature list has {n_features} names: "
                            "--features must name the model's inputs, in order")
    # a fixed batch (an export without a dynamic batch axis, torch.onnx.export's default) is run in
    # batches of that size; a symbolic or unknown one takes every row in one call
    return ModelInput(name, _ELEMENT_TYPES[kind], batch if isinstance(batch, int) and batch > 0 else None)


def _probability_output(names: Sequence[str], outputs: Sequence[Any], n: int) -> tuple[str, np.ndarray]:
    """``(name, values)`` of the output that holds the probability: P(up) as ``(n,)``, or the two class
    probabilities as ``(n, 2)`` (class 1, the last column, is up). Taken in this order: scikit-learn's
    probability map, an ``(n, 1)`` or ``(n, 2)`` float tensor, an ``(n,)`` float tensor (after the
    others, so that a float label beside the probabilities is never taken for them)."""
    one_column = None
    for name, output in zip(names, outputs):
        if isinstance(output, list) and output and isinstance(output[0], dict):  # skl2onnx's ZipMap: {class: p} rows
            key = next((k for k in (1, "1") if k in output[0]), None)
            if key is None:
                raise RegistryError(f"the model's probability map {name!r} has classes {sorted(map(str, output[0]))}; "
                                    "class 1 is read as up: train on labels 0/1 (or -1/1) with 1 = up")
            return name, np.array([float(row[key]) for row in output])
        values = np.asarray(output) if isinstance(output, np.ndarray) else None
        if values is not None and values.ndim == 0 and n == 1:  # `.squeeze()` of one row's output, batch fixed at 1
            values = values.reshape(1)
        if values is None or values.dtype.kind != "f" or values.ndim not in (1, 2) or values.shape[0] != n:
            continue
        if values.ndim == 2 and values.shape[1] in (1, 2):
            return name, values[:, 0].astype(np.float64) if values.shape[1] == 1 else values.astype(np.float64)
        if values.ndim == 1 and one_column is None:
            one_column = name, values.astype(np.float64)
    if one_column is not None:
        return one_column
    given = ", ".join(f"{name} {_describe(output)}" for name, output in zip(names, outputs))
    raise RegistryError("the model gives no probability output (an (n,), (n, 1) or (n, 2) float tensor, or "
                        f"scikit-learn's probability map) for {n} rows; it gives {given}")


def _describe(output: Any) -> str:
    if isinstance(output, np.ndarray):
        return f"{output.dtype} {tuple(output.shape)}"
    return type(output).__name__


def _run(session, model_input: ModelInput, rows: np.ndarray) -> tuple[str, np.ndarray]:
    """The probability output (:func:`_probability_output`) for ``rows``, cast to the input's type,
    in one call, or in batches of a fixed batch size (the last padded with zero rows, whose outputs
    are dropped)."""
    x = rows.astype(model_input.dtype)
    names = [o.name for o in session.get_outputs()]
    if model_input.batch is None:
        return _probability_output(names, session.run(None, {model_input.name: x}), len(x))
    size, name, parts = model_input.batch, names[0], []
    for start in range(0, len(x), size):
        chunk = np.zeros((size, x.shape[1]), dtype=model_input.dtype)
        chunk[: min(size, len(x) - start)] = x[start:start + size]
        name, values = _probability_output(names, session.run(None, {model_input.name: chunk}), size)
        parts.append(values[: len(x) - start])
    return name, np.concatenate(parts) if parts else np.empty((0,))


# how far past [0, 1] a probability may round (a tree ensemble's average of leaves gives -1.5e-8);
# served probabilities are clipped to [0, 1] (ml_serving.predictions_table)
_ROUNDING = 1e-6


def _up(values: np.ndarray) -> np.ndarray:
    return values if values.ndim == 1 else values[:, -1]


def check_onnx(data: bytes, n_features: int, *, where: str) -> None:
    """Refuse an ONNX model that does not load, whose one input is not float or double rows x
    ``n_features``, or whose output is not a probability in [0, 1] (two columns must sum to 1),
    tried on zero and unit rows and a few seeded random ones."""
    session = _session(data, where)
    model_input = _model_input(session, where, n_features)
    probe = np.vstack([np.zeros(n_features), np.ones(n_features), -np.ones(n_features),
                       np.random.default_rng(0).normal(0.0, 3.0, (8, n_features))])
    try:
        name, values = _run(session, model_input, probe)
    except RegistryError as exc:
        raise RegistryError(f"{where}: {exc}") from None
    except Exception as exc:
        raise RegistryError(f"{where}: the model fails on a probe input: {str(exc).splitlines()[0][:300]}") from None
    if not np.all(np.isfinite(values)) or np.any(values < -_ROUNDING) or np.any(values > 1 + _ROUNDING):
        finite = values[np.isfinite(values)]
        seen = f"from {finite.min():.4g} to {finite.max():.4g}" if finite.size else "no finite value"
        nan = ", and NaN" if finite.size < values.size else ""
        raise RegistryError(f"{where}: the model's output {name!r} is not a probability in [0, 1] (on the probe rows: "
                            f"{seen}{nan}): raw logits or a score? end the network with a sigmoid (one output) or a "
                            "softmax (two outputs) before exporting")
    if values.ndim == 2 and not np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        sums = values.sum(axis=1)
        raise RegistryError(f"{where}: the model's two outputs {name!r} do not sum to 1 (row sums from "
                            f"{sums.min():.4g} to {sums.max():.4g}): not class probabilities; end the network with a "
                            "softmax over the two classes, or give one sigmoid output")


def load_model(data_dir: str, asset: str, version: str, *, features: Sequence[str] | None = None) -> LoadedModel:
    """The verified model ``version`` of ``asset``: its bytes read once, hashed, compared with the
    manifest, then loaded. ``features``: the columns the caller will pass; a different list than
    the manifest's is refused (:class:`RegistryError`)."""
    manifest = read_manifest(data_dir, asset, version)
    path, data = _verified_bytes(data_dir, manifest)
    if features is not None and list(features) != list(manifest["features"]):
        raise RegistryError(f"{path}: the model expects features {manifest['features']}, the caller has {list(features)}")
    session = _session(data, str(path))
    return LoadedModel(manifest, session, _model_input(session, str(path), len(manifest["features"])))


def write_model(data_dir: str, manifest: Mapping[str, Any], data: bytes) -> dict:
    """Store a model file and its manifest (``sha256`` and ``file`` filled in here); the manifest
    is written last. Returns the stored manifest."""
    stored = {k: v for k, v in manifest.items() if k != "signature"}
    stored.update(manifest_format=MANIFEST_FORMAT, file=MODEL_FILE, sha256=sha256_hex(data))
    key = _signing_key()
    if key is not None:
        stored["signature"] = manifest_signature(stored, key)
    folder = _model_dir(data_dir, stored["asset"], stored["version"])
    write_bytes_atomic(folder / MODEL_FILE, data)
    _write_manifest(folder, stored)
    return stored


def _write_manifest(folder: UPath, manifest: Mapping[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(folder / MANIFEST_FILE, text.encode("utf-8"))


def _tensors(graph) -> Iterator[Any]:
    """Every tensor stored in ``graph``: initializers and node attributes, through subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def _inline_external_data(source: UPath, data: bytes, where: str) -> tuple[bytes, list[str]]:
    """``(bytes, side files)``: the model as one self-contained file when it keeps tensors in side
    files beside it (ONNX external data: torch.onnx.export's default exporter writes ``<file>.data``),
    else the bytes unchanged. The registry stores and hashes one file, so side files are read here,
    once, and folded into it."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, uses_external_data

    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # not a model at all: check_onnx says so in onnxruntime's words
        return data, []
    external = [t for t in _tensors(model.graph) if uses_external_data(t)]
    if not external:
        return data, []
    files = sorted({ExternalDataInfo(t).location for t in external})
    fix = "copy it next to the model file, or export with torch.onnx.export(..., external_data=False)"
    if source.protocol not in ("", "file"):
        raise RegistryError(f"{where}: the model keeps its weights in {', '.join(files)} beside it, which is read "
                            f"from a local folder only: copy both files to a local folder first")
    try:
        load_external_data_for_model(model, str(source.parent))
        return model.SerializeToString(), files
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:  # missing, short, outside the folder, > 2 GiB
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RegistryError(f"{where}: the model keeps its weights in {', '.join(files)} beside it, which cannot "
                            f"be read into one file ({reason}): {fix}") from None


def register_model(data_dir: str, *, asset: str, horizon: int, model_file: str, features: Sequence[str],
                   valid_from: dt.date, version: str | None = None, libraries: Mapping[str, str] | None = None) -> dict:
    """Add an externally trained ONNX model: checked (:func:`check_onnx`), copied (its external data
    folded into the one stored file), hashed, with a manifest (``source: registered``)."""
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
    data, inlined = _inline_external_data(source, data, model_file)
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
        "external_data_inlined": inlined,
        "features": features,
        "training_window": None,
        "hyperparameters": None,
        "validation": None,
        "producer": _producer(data),
        "libraries": dict(libraries or {}),
    }
    return write_model(data_dir, manifest, data)


def _producer(data: bytes) -> dict:
    """What the ONNX file says made it (``producer_name``/``producer_version``, e.g. ``pytorch`` 2.13,
    ``skl2onnx`` 1.20, ``tf2onnx``): a registered model's own framework, not the registry's."""
    import onnx

    proto = onnx.load_model_from_string(data)  # the stored bytes: external data already folded in
    return {"name": proto.producer_name or None, "version": proto.producer_version or None}
