"""The ML layer's steps: ``features``, ``ml_models`` and ``ml_predictions`` (docs/ml.md).

- ``features``: the technical indicators of the asset's closes up to each date
  (:func:`nexus_assets.core.features.feature_frame`), one row on a day with a price;
- ``ml_models``: makes sure the model of each date's training day (the catalog's
  ``ml_retrain_days`` cadence, :func:`~nexus_assets.core.ml_training.training_anchor`) is in the
  registry, training it when missing, and stores which version serves each ``ml_horizons``
  horizon as of the date (:func:`nexus_assets.ml_registry.current_manifest`);
- ``ml_predictions``: that version's probability of an up move from the date's features, after
  its file's hash was checked against its manifest; a tampered or unknown model fails the step
  before anything is written.

Price history: a ``sandbox`` asset's bundled daily closes (with the history before the catalog's
``start_date``, so models train from the first day; volume for the two equity indices); an
``api`` or ``synthetic`` asset's per-day ``target_var_price`` from the stored ``qml_models``
partitions, two columns of each file (there is no volume there). Every feature of a date is
computed from closes up to that date, so computing the whole history and keeping a date's row is
the same as computing it on the prefix (tested in core).
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.
import datetime as dt
import functools
import importlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Failure, ResourceParam, asset

from nexus_assets.catalog import Catalog, CatalogAsset
from nexus_assets.core.features import feature_frame, model_features
from nexus_assets.core.ml_serving import ModelError, predictions_table, serving_table
from nexus_assets.core.ml_training import (
    TrainingConfig,
    train_direction_model,
    trained_version,
    training_anchor,
    training_rows,
    training_rows_sha256,
)
from nexus_assets.core.parallel import ordered_map
from nexus_assets.defs.ingest import QML_MODELS
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import days_by_asset, partition_key, split_sorted_by_day
from nexus_assets.defs.steps import step_asset_args
from nexus_assets.defs.storage import ParquetPartitionIOManager, PartitionFrames
from nexus_assets.ml_registry import RegistryError, list_manifests, load_model, write_model
from nexus_assets.qml.sandbox import load_prices

__all__ = ["FEATURES", "ML_MODELS", "ML_PREDICTIONS", "build_ml_assets", "current_manifests", "has_volume", "price_history",
           "run_frame", "training_config"]

FEATURES = "features"
ML_MODELS = "ml_models"
ML_PREDICTIONS = "ml_predictions"
# sandbox series with a volume column in their bundled data (arch module, column)
_SANDBOX_VOLUME = {"sp500": ("sp500", "Volume"), "nasdaq": ("nasdaq", "Volume")}


def has_volume(entry: CatalogAsset) -> bool:
    """Whether ``entry``'s price history has a volume series (the volume features need one): only the
    bundled sandbox equity indices; ``api``/``synthetic`` assets read closes from qml_models alone."""
    return entry.source == "sandbox" and entry.series in _SANDBOX_VOLUME


@functools.cache
def _sandbox_volume(series: str) -> pd.Series | None:
    if series not in _SANDBOX_VOLUME:
        return None
    module, column = _SANDBOX_VOLUME[series]
    raw = importlib.import_module(f"arch.data.{module}").load()[column]
    index = pd.DatetimeIndex(raw.index)
    index = (index.tz_localize(None) if index.tz is not None else index).normalize().as_unit("ns")
    volume = pd.Series(np.asarray(raw, dtype=np.float64), index=index)
    return volume[~volume.index.duplicated(keep="last")].sort_index()


def price_history(entry: CatalogAsset, qml_models: PartitionFrames, last_day: dt.date) -> tuple[pd.Series, pd.Series | None]:
    """``(close, volume or None)`` of ``entry`` up to ``last_day``: one close per day with a price."""
    cutoff = pd.Timestamp(last_day)
    if entry.source == "sandbox":
        close = load_prices(entry.series)
        volume = _sandbox_volume(entry.series)
        close = close[close.index <= cutoff]
        return close, (None if volume is None else volume[volume.index <= cutoff])
    # one price per day (the contract checks a day's rows agree): the first row's, taken a stored
    # day at a time (a year of every model's rows of a large project would not fit twice in memory)
    parts = []
    for rows in qml_models.iter_days(entry.key, through=last_day, columns=["time", "target_var_price"]):
        rows = rows[rows["target_var_price"].notna() & (rows["time"] <= cutoff)]
        if len(rows):
            parts.append(rows.groupby("time", sort=True)["target_var_price"].first())
    if not parts:
        return pd.Series([], dtype="float64", index=pd.DatetimeIndex([], dtype="datetime64[ns]")), None
    # days in date order, each day's times sorted: what one groupby over all the rows gives
    close = pd.concat(parts).astype("float64")
    close.index = pd.DatetimeIndex(close.index).as_unit("ns")
    return close[close > 0], None


def build_ml_assets(catalog: Catalog, partitions_def) -> list:
    qml_input = {"qml_models": AssetIn(key=QML_MODELS, metadata={"allow_missing_partitions": True})}

    @asset(
        name=FEATURES,
        **step_asset_args(partitions_def),
        ins=qml_input,
        description=(
            "Technical features of the asset's closes up to the date (docs/ml.md#features), one row on a day with a "
            "price: returns 1/5, close over SMA 10/20 and EMA 12/26, RSI 14, MACD line/signal/histogram over the "
            "close, Bollinger position and width, volume over its SMA 10 and the volume oscillator (NaN without a "
            "volume series), day of week and month of the bar's date. Sandbox: the bundled closes; api/synthetic: "
            "qml_models' target_var_price."
        ),
    )
    def features(context: AssetExecutionContext, qml_models: PartitionFrames) -> dict:
        outputs, metadata = {}, {}
        for key, days in days_by_asset(context.partition_keys).items():
            close, volume = price_history(catalog[key], qml_models, days[-1])
            frame = feature_frame(close, volume)
            per_day = split_sorted_by_day(frame, days)
            for day in days:
                pk = partition_key(key, day)
                outputs[pk] = per_day[day]
                row = per_day[day]
                metadata[pk] = ({"price": float(row["price"].iloc[0]), "observations": int(row["observations"].iloc[0]),
                                 "rsi_14": _number(row["rsi_14"].iloc[0]), "volume": volume is not None}
                                if len(row) else {"price": None, "note": "no price on this date"})
        attach_partition_metadata(context, metadata)
        return outputs

    @asset(
        name=ML_MODELS,
        **step_asset_args(partitions_def),
        ins=qml_input,
        deps=[FEATURES],
        description=(
            "The direction model serving each ML horizon (catalog ml_horizons) as of the date, from the registry "
            "(docs/ml.md#the-registry). Trains the model of the date's training day (every ml_retrain_days days, "
            "anchored on the calendar) when the registry lacks it, or again when its training rows or the catalog's "
            "training settings changed (only the current cadence's and settings' models serve): scikit-learn's MLP "
            "64-32-16 ReLU with a logistic "
            "regression baseline, walk-forward on pairs known by that day, exported as ONNX with a manifest. "
            "Columns: version, SHA-256, source, valid_from, whether trained on the date, training rows, both "
            "models' validation accuracy and Brier score."
        ),
    )
    def ml_models(context: AssetExecutionContext, parquet_io_manager: ResourceParam[ParquetPartitionIOManager],
                  qml_models: PartitionFrames) -> dict:
        data_dir = parquet_io_manager.base_dir
        outputs, metadata = {}, {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            anchors = sorted({training_anchor(day, entry.ml_retrain_days) for day in days})
            have = {m["version"]: m for m in list_manifests(data_dir, key)}
            close, volume = price_history(entry, qml_models, anchors[-1])
            frame = feature_frame(close, volume)
            names = model_features(volume is not None)
            config = training_config(entry)
            # a model is trained when missing, and again when the rows it learnt from are no longer the
            # rows known by its training day (trained while older partitions were not yet stored) or the
            # catalog's training settings changed: so a date's model does not depend on the order its
            # range was backfilled in
            missing = [(a, h) for a in anchors for h in entry.ml_horizons
                       if _needs_training(have.get(trained_version(a, h)), frame, names, h, a, config)]
            trained = []
            if missing:
                for anchor, horizon in missing:
                    model = train_direction_model(frame, names, asset=key, horizon=horizon, as_of=anchor, config=config)
                    if model is not None:
                        stored = write_model(data_dir, model.manifest, model.onnx)
                        have[stored["version"]] = stored  # the registry as it is now, without listing it again
                        trained.append(stored["version"])
            servable = current_manifests(list(have.values()), entry.ml_retrain_days, config)
            per_day = split_sorted_by_day(serving_table(servable, key, entry.ml_horizons, days), days)
            for day in days:
                pk = partition_key(key, day)
                table = per_day[day]
                outputs[pk] = table
                horizons = table["horizon"].to_numpy()  # arrays: a boolean .loc per day cost ~0.4 ms
                metadata[pk] = {
                    **{f"h{h}_version": v or "none" for h, v in zip(horizons, table["model_version"])},
                    "trained_on_date": [int(h) for h in horizons[table["trained_on_date"].to_numpy(dtype=bool)]],
                }
            if trained:
                context.log.info(f"{key}: trained {len(trained)} model(s): {', '.join(trained)}")
        attach_partition_metadata(context, metadata)
        return outputs

    @asset(
        name=ML_PREDICTIONS,
        **step_asset_args(partitions_def),
        ins={"features": AssetIn(key=FEATURES), "ml_models": AssetIn(key=ML_MODELS)},
        description=(
            "Probability of an up move (close h observations after the date above the date's close) per ML "
            "horizon, from the version ml_models names for the date, after checking the model file's SHA-256 "
            "against its manifest (a tampered or unknown file fails the step; nothing is written). confidence = "
            "|p - 0.5| x 2. NaN (and an empty version) while no model serves or the features are warming up; "
            "no rows on a day without a price."
        ),
    )
    def ml_predictions(context: AssetExecutionContext, parquet_io_manager: ResourceParam[ParquetPartitionIOManager],
                       features: PartitionFrames, ml_models: PartitionFrames) -> dict:
        data_dir = parquet_io_manager.base_dir
        outputs, metadata = {}, {}
        for key, days in days_by_asset(context.partition_keys).items():
            rows = run_frame(features, key)
            serving = run_frame(ml_models, key, ["date", "horizon", "model_version", "model_sha256"])
            try:
                table = predictions_table(rows, serving, functools.partial(load_model, data_dir, key))
            except (RegistryError, ModelError) as exc:
                raise Failure(description=f"{key}: {exc}; no ml_predictions partition was written",
                              allow_retries=False) from None
            per_day = split_sorted_by_day(table, days)
            for day in days:
                pk = partition_key(key, day)
                outputs[pk] = per_day[day]
                metadata[pk] = {f"h{h}_probability_up": _number(p)
                                for h, p in zip(per_day[day]["horizon"], per_day[day]["probability_up"])}
        attach_partition_metadata(context, metadata)
        return outputs

    return [features, ml_models, ml_predictions]


def training_config(entry: CatalogAsset) -> TrainingConfig:
    """The training settings of ``entry``: the defaults with the catalog's pair counts."""
    return TrainingConfig(min_pairs=entry.ml_min_train_pairs, window=entry.ml_train_window)


def current_manifests(manifests: Sequence[dict], every: int, config: TrainingConfig) -> list[dict]:
    """The manifests that may serve under the catalog's current settings: every registered model, and
    the trained models of today's cadence (trained on one of its training days) and settings. A model
    left in the registry by an earlier cadence or other settings stays there but serves no date, so
    a date's model does not depend on what earlier runs trained."""
    settings = config.as_dict()
    return [m for m in manifests if m.get("source") != "trained" or (
        m.get("hyperparameters") == settings
        and training_anchor(dt.date.fromisoformat(m["trained_on"]), every).isoformat() == m["trained_on"])]


def _needs_training(manifest: dict | None, frame: pd.DataFrame, names, horizon: int, anchor: dt.date,
                    config: TrainingConfig | None = None) -> bool:
    """Whether the trained model of ``anchor`` and ``horizon`` is missing, was trained with other
    settings than ``config``, or learnt from other rows than the ones known by ``anchor`` now (a
    registered model is never retrained)."""
    if manifest is None:
        return True
    if manifest.get("source") != "trained":
        return False
    config = config or TrainingConfig()
    if manifest.get("hyperparameters") != config.as_dict():
        return True
    recorded = (manifest.get("training_window") or {}).get("sha256")
    return recorded != training_rows_sha256(*training_rows(frame, names, horizon, anchor, config))


def _number(value) -> float | None:
    return None if pd.isna(value) else float(value)


def run_frame(frames: PartitionFrames, asset: str, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
    """``frames.concat(asset)`` (the run's non-empty partitions of ``asset``, in order; None when
    none) built from column arrays, only ``columns`` if given: a one-row DataFrame per partition
    and their concat cost ~3x reading the files (text comes back as object columns)."""
    prefix = f"{asset}|"
    parts = ordered_map(frames.arrays, [pk for pk in frames if pk.startswith(prefix)])
    parts = [part for part in parts if len(next(iter(part.values()), ()))]
    if not parts:
        return None
    names = list(parts[0]) if columns is None else list(columns)
    return pd.DataFrame({name: np.concatenate([part[name] for part in parts]) for name in names})
