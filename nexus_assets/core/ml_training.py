"""Walk-forward direction models: training pairs, the MLP and its baseline, ONNX export (docs/ml.md#training).

On a training day ``T`` and horizon ``h`` (observations ahead), a pair is the features of
observation ``i`` and whether the close ``h`` observations later is higher (an unchanged close
counts as *not up*). Only pairs whose outcome is known by ``T`` are used (``i + h <= n_T - 1``,
``n_T`` the closes up to ``T``), and of those the latest ``window`` with every feature defined.

The window is split in time, never shuffled: the first 80% train (less the last ``h`` rows, whose
outcomes fall inside the validation span: a purge against overlap), the last 20% validate. The
scaler is fit on the training rows only (it is the first step of the exported pipeline). Two models
learn the same rows: the guide's MLP (64-32-16 ReLU, logistic output, Adam, log-loss) and a
logistic regression baseline; both are scored on the validation rows (accuracy, Brier score). The
MLP trained on the first 80% is the one served, as the guide's Keras ``validation_split`` would.

Determinism: a fixed seed, and training runs single-threaded (threadpoolctl) so BLAS sums in one
order; skl2onnx's export of the same fitted pipeline is byte-identical, also across processes
(its opsets are written in a fixed order; tested).

When retraining happens: :func:`training_anchor` fixes the training days on the calendar (every
``every`` days counted from a Monday in 1970), so they never depend on how dates are grouped into
runs; a date is served by the model of its anchor.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "EPOCH",
    "TrainingConfig",
    "TrainedModel",
    "training_anchor",
    "training_pairs",
    "training_rows",
    "training_rows_sha256",
    "train_direction_model",
    "trained_version",
    "library_versions",
    "brier",
]

EPOCH = dt.date(1970, 1, 5)  # a Monday: a 7-day cadence retrains on Mondays


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of the walk-forward training (written into every manifest)."""

    hidden_layers: tuple[int, ...] = (64, 32, 16)
    max_iter: int = 20  # Adam epochs over the training rows; a fixed budget (no early stop on a shuffled split)
    learning_rate_init: float = 1e-3
    alpha: float = 1e-4  # L2 penalty
    batch_size: int = 128
    seed: int = 13
    window: int = 750  # the latest pairs (about three years of sessions)
    min_pairs: int = 150
    validation_share: float = 0.2
    baseline_c: float = 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "hidden_layers": list(self.hidden_layers)}


@dataclass(frozen=True)
class TrainedModel:
    """One trained model: its ONNX bytes, its manifest (without the file's hash) and the fitted
    sklearn pipeline (for tests comparing ONNX with sklearn)."""

    onnx: bytes
    manifest: dict
    pipeline: object = field(repr=False)


def training_anchor(day: dt.date, every: int) -> dt.date:
    """The latest training day on or before ``day`` for a cadence of ``every`` days."""
    return day - dt.timedelta(days=(day - EPOCH).days % every)


def trained_version(anchor: dt.date, horizon: int) -> str:
    return f"trained-{anchor.isoformat()}-h{horizon}"


def training_pairs(features: pd.DataFrame, names: Sequence[str], horizon: int, as_of: dt.date
                   ) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """``(X, y, dates)`` of every pair whose outcome is known by ``as_of`` and whose features are all
    defined, oldest first. ``features``: the ``features`` table of one asset, one row per close."""
    known = features[features["date"] <= pd.Timestamp(as_of)]
    price = known["price"].to_numpy()
    n = len(known)
    if n <= horizon:
        return np.empty((0, len(names))), np.empty(0, dtype=np.int64), pd.Series([], dtype="datetime64[ns]")
    x = known[list(names)].to_numpy(dtype=np.float64)[: n - horizon]
    y = (price[horizon:] > price[: n - horizon]).astype(np.int64)
    complete = ~np.isnan(x).any(axis=1)
    return x[complete], y[complete], known["date"].iloc[: n - horizon][complete].reset_index(drop=True)


def training_rows(features: pd.DataFrame, names: Sequence[str], horizon: int, as_of: dt.date,
                  config: TrainingConfig = TrainingConfig()) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """The pairs a training on ``as_of`` learns from: :func:`training_pairs`, the latest ``config.window``."""
    x, y, dates = training_pairs(features, names, horizon, as_of)
    return x[-config.window:], y[-config.window:], dates.iloc[-config.window:].reset_index(drop=True)


def training_rows_sha256(x: np.ndarray, y: np.ndarray, dates: pd.Series) -> str:
    """SHA-256 of a training's rows (dates, features, outcomes): what the model learnt from, so a model
    trained while part of the history was not yet stored is recognised and trained again."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(dates.to_numpy(dtype="datetime64[ns]")).view(np.int64).tobytes())
    digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def brier(probability: np.ndarray, outcome: np.ndarray) -> float:
    return float(np.mean((probability - outcome) ** 2))


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _scores(model, x: np.ndarray, y: np.ndarray) -> dict:
    p = model.predict_proba(x)[:, 1]
    return {"accuracy": float(np.mean((p > 0.5) == (y == 1))), "brier": brier(p, y), "rows": len(y),
            "up_share": float(np.mean(y))}


def _to_onnx(pipeline, width: int) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    classifier = pipeline.steps[-1][1]
    proto = convert_sklearn(pipeline, initial_types=[("features", FloatTensorType([None, width]))],
                            options={id(classifier): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3},
                            name="nexus_direction_model")  # a fixed graph name: skl2onnx would pick a random one
    # skl2onnx lists the opsets from a set of domain names, so their order (and the file's bytes)
    # followed the process's string-hash seed; sorted by domain, every process writes the same bytes.
    opsets = sorted((o.domain, o.version) for o in proto.opset_import)
    del proto.opset_import[:]
    for domain, version in opsets:
        proto.opset_import.add(domain=domain, version=version)
    return proto.SerializeToString()


@functools.cache
def _threadpools():
    """The process's BLAS/OpenMP thread pools (threadpoolctl's controller): found once, as the scan of
    the loaded libraries cost ~9 ms per training (threadpool_limits makes a controller per call).
    First called after sklearn's imports, so its libraries are loaded by then."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def train_direction_model(features: pd.DataFrame, names: Sequence[str], *, asset: str, horizon: int,
                          as_of: dt.date, config: TrainingConfig = TrainingConfig()) -> TrainedModel | None:
    """Train the MLP and its baseline for ``asset``'s ``horizon`` on the pairs known by ``as_of``;
    None when fewer than ``config.min_pairs`` pairs are known yet."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, dates = training_rows(features, names, horizon, as_of, config)
    if len(y) < config.min_pairs:
        return None
    split = len(y) - max(int(round(len(y) * config.validation_share)), 1)
    fit_end = split - horizon  # purge: these rows' outcomes lie in the validation span
    x_fit, y_fit, x_val, y_val = x[:fit_end], y[:fit_end], x[split:], y[split:]
    if len(np.unique(y_fit)) < 2:
        return None  # one class only: nothing to learn (a flat series)
    mlp = Pipeline([
        ("scaler", StandardScaler()),
        ("mlp", MLPClassifier(hidden_layer_sizes=config.hidden_layers, activation="relu", solver="adam",
                              alpha=config.alpha, batch_size=min(config.batch_size, len(y_fit)),
                              learning_rate_init=config.learning_rate_init, max_iter=config.max_iter,
                              shuffle=True, random_state=config.seed, early_stopping=False, tol=0.0,
                              n_iter_no_change=config.max_iter + 1)),
    ])
    baseline = Pipeline([("scaler", StandardScaler()),
                         ("logistic", LogisticRegression(C=config.baseline_c, max_iter=500))])
    # One BLAS thread: sums in one order, so the same bytes on every machine and every load.
    with warnings.catch_warnings(), _threadpools().limit(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget, by design
        mlp.fit(x_fit, y_fit)
        baseline.fit(x_fit, y_fit)
    onnx_bytes = _to_onnx(mlp, len(names))
    manifest = {
        "version": trained_version(as_of, horizon),
        "asset": asset,
        "horizon": int(horizon),
        "valid_from": as_of.isoformat(),
        "trained_on": as_of.isoformat(),
        "source": "trained",
        "model": "sklearn MLPClassifier in a StandardScaler pipeline, exported with skl2onnx",
        "output": f"probability that the close {horizon} observation(s) after the row's date is higher",
        "features": list(names),
        "training_window": {
            "first": dates.iloc[0].date().isoformat(),
            "last": dates.iloc[-1].date().isoformat(),
            "rows": len(y),
            "fit_rows": len(y_fit),
            "purged_rows": split - fit_end,
            "validation_first": dates.iloc[split].date().isoformat(),
            "validation_rows": len(y_val),
            "sha256": training_rows_sha256(x, y, dates),
        },
        "hyperparameters": config.as_dict(),
        "validation": {"mlp": _scores(mlp, x_val, y_val), "baseline_logistic": _scores(baseline, x_val, y_val)},
        "libraries": library_versions(),
    }
    return TrainedModel(onnx_bytes, manifest, mlp)
