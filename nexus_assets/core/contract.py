"""Contracts as code: the QML row contract and the schemas of the tables this project stores.

Every stored table has one pandera schema here (:data:`STORED_TABLES`); its column list, dtypes
and typed empty frame are derived from it (:func:`columns`, :func:`dtypes`, :func:`empty_frame`,
:func:`typed_frame`), and the IO manager checks each partition against it before writing
(:func:`table_problems`: columns, order, dtypes, nulls, simple value ranges and the key's
uniqueness, vectorised; the schemas' custom checks run in pandera's own, slower validation).

Upstream (QML) rows arrive loosely typed (JSON numbers, RFC 1123 or ISO 8601 strings, ``5.0`` for
an integer). :func:`coerce_qml_rows` turns them into the typed contract frame, refusing anything
that would need guessing (a price sent as a string, an unparseable time); :func:`validate_qml_rows`
then checks the value rules and invariants with pandera and reports failure counts and a few
offending rows per rule. Both speak through :class:`ContractViolation`, whose message names the
field, the rule and examples, and never contains credentials (it only ever sees row values).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

__all__ = [
    "CONTRACT_VERSION",
    "QML_REQUIRED",
    "QML_OPTIONAL",
    "QML_COLUMNS",
    "QML_KEY",
    "QML_ROWS",
    "HORIZON_SLICES",
    "HORIZON_SLICE_COLUMNS",
    "ENSEMBLE_ROWS",
    "COMBINATION_ROWS",
    "HORIZON_ENSEMBLES",
    "LEADERBOARD",
    "SIGNALS",
    "SLOPES",
    "STATISTICS",
    "TRADES",
    "DAILY",
    "MODEL_METADATA",
    "ML_SIGNALS",
    "ML_ACCURACY",
    "ML_CALIBRATION",
    "UPSTREAM_HORIZON_FORECASTS",
    "FEATURES",
    "FEATURE_COLUMNS",
    "ML_MODELS",
    "ML_PREDICTIONS",
    "STORED_TABLES",
    "columns",
    "dtypes",
    "empty_frame",
    "typed_frame",
    "table_problems",
    "table_passes",
    "Problem",
    "ContractReport",
    "ContractViolation",
    "ParsedTimes",
    "parse_times",
    "MAX_HORIZON",
    "MAX_PRICE",
    "coerce_qml_rows",
    "validate_qml_rows",
    "empty_qml_rows",
    "check_contract_version",
    "FINITE_FIELDS",
    "NON_FINITE_MARKERS",
    "TimeLimit",
    "time_limit",
    "rows_after",
    "rows_problem",
    "merge_problems",
]

CONTRACT_VERSION = "1"
QML_REQUIRED: tuple[str, ...] = ("symbol", "time", "n_predict", "close_predict", "target_var_price")
QML_OPTIONAL: tuple[str, ...] = ("yn_p", "yn_actual")
QML_COLUMNS: tuple[str, ...] = QML_REQUIRED + QML_OPTIONAL
QML_KEY: list[str] = ["symbol", "time", "n_predict"]
_EXAMPLES = 5
# Sanity bounds: a horizon is a count of observations (the longest in use is a few hundred); a
# price beyond a trillion is a unit or parsing error, and would overflow returns downstream.
MAX_HORIZON = 10_000
MAX_PRICE = 1e12
_HORIZON_RANGE = (pa.Check.ge(1), pa.Check.le(MAX_HORIZON))
_PRICE_RANGE = (pa.Check.gt(0), pa.Check.le(MAX_PRICE))
# Times are stored as nanosecond timestamps; anything outside their range would wrap silently.
# The first whole day is the first one whose midnight fits.
_FIRST_TIME = pd.Timestamp.min.ceil("D")
_LAST_TIME = pd.Timestamp.max
_TIME_RANGE_RULE = f"within the nanosecond timestamp range ({_FIRST_TIME.date()} .. {_LAST_TIME.date()})"
# Fields that must be finite numbers: a NaN or an infinity there is refused, never read as null.
FINITE_FIELDS: tuple[str, ...] = ("n_predict", "close_predict", "target_var_price")
# JSON has no NaN or Infinity, yet Python's json module (and so Flask) writes them as bare tokens.
# Readers hand such tokens over as these marker strings (and a Parquet NaN, which is not a null,
# the same way), so the contract can name the field and the rows instead of a parser failing on
# the first one, and a NaN price is not mistaken for "not yet known".
NON_FINITE_MARKERS: dict[str, float] = {"\x00NaN": float("nan"), "\x00Infinity": float("inf"), "\x00-Infinity": float("-inf")}
# Upstream clocks may run a little ahead of ours; a row dated later than this is "in the future".
_CLOCK_SLACK = dt.timedelta(days=1)


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype="float64", na_value=np.nan)), index=series.index)


def _one_price_per_time(df: pd.DataFrame) -> pd.Series:
    """Row-wise: does this row's ``target_var_price`` agree with every other row of its ``time``?"""
    prices = df.groupby("time")["target_var_price"]
    return (prices.transform("min") == prices.transform("max")) | df["target_var_price"].isna()


QML_ROWS = pa.DataFrameSchema(
    {
        "symbol": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
        "time": pa.Column("datetime64[ns]", nullable=False),
        "n_predict": pa.Column("int64", list(_HORIZON_RANGE), nullable=False),
        "close_predict": pa.Column(
            "float64", [pa.Check(_finite, name="finite"), *_PRICE_RANGE], nullable=False
        ),
        "target_var_price": pa.Column(
            "float64", [pa.Check(_finite, name="finite", ignore_na=True), *_PRICE_RANGE], nullable=True
        ),
        "yn_p": pa.Column("float64", nullable=True),
        "yn_actual": pa.Column("float64", nullable=True),
    },
    checks=[pa.Check(_one_price_per_time, name="one_target_var_price_per_time")],
    unique=QML_KEY,
    strict=False,  # unknown extra fields are allowed and kept
    ordered=False,
    name="qml_rows",
    description="QML model rows, contract version 1 (docs/ingestion.md)",
)

def _col(dtype: Any, *checks: pa.Check, nullable: bool = False, required: bool = True,
         description: str | None = None) -> pa.Column:
    return pa.Column(dtype, list(checks), nullable=nullable, required=required, description=description)


def _table(name: str, description: str, cols: Mapping[str, pa.Column], unique: list[str] | None = None) -> pa.DataFrameSchema:
    """A stored table: exactly these columns, in this order (optional ones only where they are shown)."""
    return pa.DataFrameSchema(dict(cols), unique=unique, strict=True, ordered=True, name=name, description=description)


_DATE = "datetime64[ns]"
_HORIZON = (pa.Check.ge(1),)
_COUNT = (pa.Check.ge(0),)
_POSITION = (pa.Check.isin([-1, 0, 1]),)
_SHARE = (pa.Check.ge(0), pa.Check.le(1))

HORIZON_SLICES = _table(
    "horizon_slices", "Golden-engine horizon slices: one row per date, horizon and child model",
    {
        "date": _col(_DATE),
        "horizon": _col("int64", *_HORIZON),
        "symbol": _col(str),
        "forecast": _col("float64"),
        "price": _col("float64", nullable=True, description="the day's first target_var_price of the horizon"),
    },
    unique=["date", "horizon", "symbol"],
)

_ENSEMBLE_HEAD = {
    "date": _col(_DATE),
    "horizon": _col("int64", *_HORIZON),
    "forecast": _col("float64", nullable=True),
    "actual": _col("float64", nullable=True, required=False, description="nexus_v2 mode only: the price h later"),
    "strategy": _col(str),
    "aggregator": _col(str, nullable=True, description="null when the forecast is upstream's (strategy 'upstream')"),
    "quantile": _col("float64", nullable=True),
    "n_selected": _col("int64", *_COUNT),
    "n_models": _col("int64", *_COUNT),
    "best_child_forecast": _col("float64", nullable=True),
    "best_child": _col(str, nullable=True),
    **{f"p{p:02d}": _col("float64", nullable=True, description=f"{p}th percentile of the selected models' forecasts")
       for p in (5, 25, 75, 95)},
}
_COMBINATIONS = {
    "price": _col("float64", nullable=True),
    "raw_mean": _col("float64", nullable=True, description="mean of every model's forecast"),
    "raw_median": _col("float64", nullable=True, description="median of every model's forecast"),
    "low_variance": _col("float64", nullable=True, description="mean of the lowest-variance models' forecasts"),
}
_MODE = {"mode": _col(str, pa.Check.isin(["point_in_time", "nexus_v2", "upstream"]))}

ENSEMBLE_ROWS = _table(
    "ensemble_rows", "The dynamic quantile ensemble's result: one row per date and horizon",
    {**_ENSEMBLE_HEAD, **_MODE}, unique=["date", "horizon"],
)
COMBINATION_ROWS = _table(
    "combination_rows", "The day's price and the plain within-horizon combinations, per date and horizon",
    {"date": _col(_DATE), "horizon": _col("int64", *_HORIZON), **_COMBINATIONS}, unique=["date", "horizon"],
)
HORIZON_ENSEMBLES = _table(
    "horizon_ensembles", "The stored ensemble table: the quantile ensemble, the price and the plain combinations",
    {**_ENSEMBLE_HEAD, **_COMBINATIONS, **_MODE}, unique=["date", "horizon"],
)

LEADERBOARD = _table(
    "leaderboard", "horizon_search: the top configurations per date (rank 1 is the winner)",
    {
        "date": _col(_DATE),
        "rank": _col("int64", pa.Check.ge(1)),
        "horizons": _col(str),
        "n_horizons": _col("int64", *_COUNT),
        "threshold": _col("float64"),
        "combination": _col(str),
        "objective": _col("float64", nullable=True),
        "fold_sharpes": _col(str),
        "n_folds": _col("int64", *_COUNT),
        "trades": _col("int64", *_COUNT),
        "mean_daily_return": _col("float64", nullable=True),
        "fold_start": _col(_DATE),
        "fold_end": _col(_DATE),
        "candidates": _col("int64", *_COUNT),
        "method": _col(str),
        "eligible": _col("int64", *_COUNT),
        "span_sharpe": _col("float64", nullable=True),
        "expected_max_sharpe": _col("float64", nullable=True),
        "deflated_sharpe": _col("float64", nullable=True),
    },
    unique=["date", "rank"],
)

SIGNALS = _table(
    "signals", "The day's pairwise-slope signal per variant (raw, optimised)",
    {
        "date": _col(_DATE),
        "variant": _col(str, pa.Check.isin(["raw", "optimised"])),
        "combination": _col(str),
        "horizons": _col(str),
        "threshold": _col("float64"),
        "n_horizons": _col("int64", *_COUNT),
        "pairs": _col("int64", *_COUNT),
        "bullish": _col("int64", *_COUNT),
        "bearish": _col("int64", *_COUNT),
        "bullish_prob": _col("float64", nullable=True),
        "bearish_prob": _col("float64", nullable=True),
        "net_prob": _col("float64", nullable=True),
        "mean_drift": _col("float64", nullable=True),
        "strength": _col("float64", nullable=True),
        "tier": _col(str, nullable=True),
        "agreement_ratio": _col("float64", nullable=True),
        "signal": _col(str, nullable=True),
        "position": _col("int64", *_POSITION),
        "weighted_net_prob": _col("float64", nullable=True),
        "weighted_signal": _col(str, nullable=True),
        "price": _col("float64", nullable=True),
        "config_source": _col(str, pa.Check.isin(["catalog", "search", "not_significant", "fallback"])),
        "deflated_sharpe": _col("float64", nullable=True),
    },
    unique=["date", "variant"],
)
SLOPES = _table(
    "slopes", "Every horizon pair's slope behind a signal (the heatmap)",
    {
        "date": _col(_DATE),
        "variant": _col(str, pa.Check.isin(["raw", "optimised"])),
        "horizon_short": _col("int64", *_HORIZON),
        "horizon_long": _col("int64", *_HORIZON),
        "forecast_short": _col("float64"),
        "forecast_long": _col("float64"),
        "slope": _col("float64", nullable=True),
        "weight": _col("int64"),
        "direction": _col("int64", *_POSITION),
    },
)

STATISTICS = _table(
    "statistics", "The track record as of a date, long format: one row per signal, basis and statistic",
    {
        "date": _col(_DATE),
        "signal": _col(str),
        "basis": _col(str, pa.Check.isin(["point_in_time", "legacy"])),
        "statistic": _col(str),
        "value": _col("float64", nullable=True, description="NaN: undefined for this sample"),
        "n": _col("int64", *_COUNT),
        "min_n": _col("int64", *_COUNT),
        "sufficient": _col(bool),
        "definition": _col(str),
    },
    unique=["date", "signal", "basis", "statistic"],
)
_TRADE = {
    "trade": _col("int64", pa.Check.ge(1)),
    "direction": _col(str, pa.Check.isin(["long", "short"])),
    "entry_date": _col(_DATE),
    "entry_price": _col("float64"),
    "exit_date": _col(_DATE),
    "exit_price": _col("float64"),
    "status": _col(str, pa.Check.isin(["open", "closed"])),
    "holding_observations": _col("int64", *_COUNT),
    "holding_days": _col("int64", *_COUNT),
    "gross_return": _col("float64"),
    "cost": _col("float64"),
    "net_return": _col("float64"),
}
TRADE_ROWS = _table("trade_rows", "One simulation's trades, numbered from 1 in entry order", _TRADE)
TRADES = _table(
    "trades", "Every trade of the record as of a date, per signal and basis",
    {"signal": _col(str), "basis": _col(str, pa.Check.isin(["point_in_time", "legacy"])), **_TRADE},
)
_DAILY = {
    "price": _col("float64", nullable=True),
    "price_known": _col(bool),
    "net_prob": _col("float64", nullable=True),
    "position": _col("int64", *_POSITION),
    "asset_return": _col("float64", nullable=True),
    "strategy_return": _col("float64", nullable=True),
    "cost": _col("float64"),
    "equity": _col("float64", nullable=True),
    "drawdown": _col("float64", nullable=True),
    "buy_and_hold": _col("float64", nullable=True),
}
DAILY_ROWS = _table("daily_rows", "One simulation's daily rows, priced or not", {"date": _col(_DATE), **_DAILY})
DAILY = _table(
    "daily", "The record's daily rows as of a date: returns, equity, drawdown, per signal",
    {"date": _col(_DATE), "signal": _col(str), **_DAILY},
)

MODEL_METADATA = _table(
    "qml_model_metadata", "The child models known as of a date: when qml_models first and last had them, and what "
    "upstream's model metadata endpoint says they are (where it was recorded)",
    {
        "date": _col(_DATE),
        "horizon": _col("int64", *_HORIZON),
        "symbol": _col(str),
        "first_seen": _col(_DATE, nullable=True, description="first day with a qml_models row (null: never published)"),
        "last_seen": _col(_DATE, nullable=True, description="latest day up to the date with a qml_models row"),
        "live": _col(bool, description="published on the horizon's latest day with rows up to the date"),
        "metadata_source": _col(str, pa.Check.isin(["upstream", "qml_models"]),
                                description="upstream: the fields below are upstream's; qml_models: derived from "
                                "qml_models alone (upstream offers no metadata, or none recorded for the date)"),
        "algorithm": _col(str, nullable=True),
        "training_window": _col("Int64", nullable=True),
        "code_version": _col(str, nullable=True),
        "upstream_fields": _col(str, nullable=True, description="every other field upstream sent, as JSON"),
    },
    unique=["date", "horizon", "symbol"],
)
_ML_KEY = {
    "date": _col(_DATE),
    "horizon": _col("int64", *_HORIZON),
}
ML_SIGNALS = _table(
    "ml_signals", "The ML direction strategy per date and horizon: BUY / SELL / HOLD from ml_predictions' "
    "probability of an up move, shaped like the slope signals so that metrics simulates it the same way",
    {
        "date": _col(_DATE),
        "variant": _col(str, description="ml_h<horizon>: the record's signal name"),
        "horizon": _col("int64", *_HORIZON),
        "horizons": _col(str, description="the horizon as text, the slope signals' column (metrics' legacy h_min)"),
        "model_version": _col(str, description="empty: no model serves on this date"),
        "model_sha256": _col(str),
        "probability_up": _col("float64", *_SHARE, nullable=True),
        "confidence": _col("float64", *_SHARE, nullable=True),
        "threshold": _col("float64", *_SHARE),
        "net_prob": _col("float64", pa.Check.ge(-1), pa.Check.le(1), nullable=True,
                         description="2 probability_up - 1: the signed confidence, the slope signals' net_prob"),
        "signal": _col(str, pa.Check.isin(["BUY", "SELL", "HOLD"])),
        "position": _col("int64", *_POSITION),
        "reason": _col(str, pa.Check.isin(["confident_up", "confident_down", "below_threshold", "no_direction",
                                           "no_model", "no_probability"])),
        "price": _col("float64", nullable=True),
    },
    unique=["date", "horizon"],
)
_ML_SCOPE = {
    "scope": _col(str, pa.Check.isin(["all", "version"]), description="all: every model version pooled"),
    "model_version": _col(str, description="empty for scope all"),
}
ML_ACCURACY = _table(
    "ml_accuracy", "The ML probabilities' accuracy as of a date, per horizon and model version, on outcomes "
    "realised by then",
    {
        **_ML_KEY,
        **_ML_SCOPE,
        "first_date": _col(_DATE, description="the scope's first prediction with a probability"),
        "predictions": _col("int64", *_COUNT, description="predictions with a probability, on or before the date"),
        "scored": _col("int64", *_COUNT, description="those whose outcome is realised by the date"),
        "hits": _col("int64", *_COUNT),
        "hit_rate": _col("float64", *_SHARE, nullable=True),
        "brier": _col("float64", *_SHARE, nullable=True),
        "mean_predicted": _col("float64", *_SHARE, nullable=True),
        "observed_frequency": _col("float64", *_SHARE, nullable=True, description="share of up moves (base rate)"),
        "min_n": _col("int64", *_COUNT),
        "sufficient": _col(bool),
    },
    unique=["date", "horizon", "scope", "model_version"],
)
ML_CALIBRATION = _table(
    "ml_calibration", "The ML probabilities' calibration as of a date: scored predictions per probability bin",
    {
        **_ML_KEY,
        **_ML_SCOPE,
        "bin": _col("int64", pa.Check.ge(0)),
        "bin_low": _col("float64", *_SHARE),
        "bin_high": _col("float64", *_SHARE),
        "count": _col("int64", pa.Check.ge(1)),
        "mean_predicted": _col("float64", *_SHARE),
        "observed_frequency": _col("float64", *_SHARE),
    },
    unique=["date", "horizon", "scope", "model_version", "bin"],
)
UPSTREAM_HORIZON_FORECASTS = pa.DataFrameSchema(
    {
        "time": pa.Column(_DATE),
        "n_predict": pa.Column("int64", list(_HORIZON)),
        "forecast": pa.Column("float64", [pa.Check.gt(0)]),
    },
    strict=False, ordered=False, unique=["time", "n_predict"], name="upstream_horizon_forecasts",
    description="/get_qml_horizon_forecast rows as the pipeline needs them: one forecast per day and horizon; "
    "n_models, target_var_price and other fields optional",
)

_MAYBE = {"nullable": True}
FEATURE_COLUMNS: tuple[str, ...] = (
    "return_1", "return_5", "close_sma_10", "close_sma_20", "close_ema_12", "close_ema_26", "rsi_14",
    "macd", "macd_signal", "macd_hist", "bb_position", "bb_width", "volume_sma_10", "volume_oscillator",
)
"""The indicator columns of ``features``, all scale-free (close/SMA - 1, MACD over the close, ...;
definitions in nexus_assets/core/features.py and docs/ml.md); NaN while warming up, and the volume
ones NaN for a series without volume."""
FEATURES = _table(
    "features", "Technical indicators of the asset's closes up to the date, one row per day with a price",
    {
        "date": _col(_DATE),
        "price": _col("float64", pa.Check.gt(0), description="the day's close"),
        "observations": _col("int64", *_COUNT, description="closes up to and including the date"),
        **{name: _col("float64", **_MAYBE) for name in FEATURE_COLUMNS},
        "day_of_week": _col("int64", pa.Check.ge(0), pa.Check.le(6), description="of the bar's date, Monday 0"),
        "month": _col("int64", pa.Check.ge(1), pa.Check.le(12), description="of the bar's date"),
    },
    unique=["date"],
)
ML_MODELS = _table(
    "ml_models", "The direction model serving each ML horizon as of the date (from the registry), per horizon",
    {
        "date": _col(_DATE),
        "horizon": _col("int64", *_HORIZON),
        "model_version": _col(str, description="empty: no model serves this horizon yet"),
        "model_sha256": _col(str, description="the model file's SHA-256 (empty with no model)"),
        "source": _col(str, pa.Check.isin(["", "trained", "registered"])),
        "valid_from": _col(_DATE, nullable=True, description="the first date the model may serve"),
        "trained_on_date": _col(bool, description="the serving model was trained with this date's data"),
        "train_rows": _col("int64", *_COUNT, description="training pairs behind the model (0: none or registered)"),
        "mlp_val_accuracy": _col("float64", *_SHARE, nullable=True, description="the MLP on the last 20% of the window"),
        "mlp_val_brier": _col("float64", *_SHARE, nullable=True),
        "baseline_val_accuracy": _col("float64", *_SHARE, nullable=True, description="logistic regression, same rows"),
        "baseline_val_brier": _col("float64", *_SHARE, nullable=True),
    },
    unique=["date", "horizon"],
)
ML_PREDICTIONS = _table(
    "ml_predictions", "The registry's current model's probability of an up move, per date and ML horizon",
    {
        "date": _col(_DATE, description="the as-of day D"),
        "horizon": _col("int64", *_HORIZON, description="observations ahead"),
        "model_version": _col(str, description="empty when no model serves yet"),
        "model_sha256": _col(str, description="empty when no model serves yet"),
        "probability_up": _col("float64", *_SHARE, nullable=True,
                               description="P(close h observations after D > close of D); NaN: no model or features "
                               "still warming up"),
        "confidence": _col("float64", *_SHARE, nullable=True, description="|p - 0.5| x 2, NaN with p"),
        "price": _col("float64", pa.Check.gt(0), description="the close of D"),
    },
    unique=["date", "horizon"],
)

STORED_TABLES: Mapping[str, pa.DataFrameSchema] = MappingProxyType({
    "qml_models": QML_ROWS,
    "horizon_slices": HORIZON_SLICES,
    "horizon_ensembles": HORIZON_ENSEMBLES,
    "leaderboard": LEADERBOARD,
    "signals": SIGNALS,
    "slopes": SLOPES,
    "statistics": STATISTICS,
    "trades": TRADES,
    "daily": DAILY,
    "qml_model_metadata": MODEL_METADATA,
    "features": FEATURES,
    "ml_models": ML_MODELS,
    "ml_predictions": ML_PREDICTIONS,
    "ml_signals": ML_SIGNALS,
    "ml_accuracy": ML_ACCURACY,
    "ml_calibration": ML_CALIBRATION,
})
"""The schema of every table the IO manager stores, by table name (a single-table asset's name)."""
HORIZON_SLICE_COLUMNS: tuple[str, ...] = tuple(HORIZON_SLICES.columns)


def _pandas_dtype(column: pa.Column) -> Any:
    return column.dtype.type  # numpy dtype, or pandas' ``str`` dtype for a string column


def columns(schema: pa.DataFrameSchema, *, optional: Iterable[str] = ()) -> tuple[str, ...]:
    """The schema's columns in order: the required ones, and of the optional ones those named."""
    shown = set(optional)
    return tuple(name for name, column in schema.columns.items() if column.required or name in shown)


def dtypes(schema: pa.DataFrameSchema, *, optional: Iterable[str] = ()) -> dict[str, Any]:
    """``{column: pandas dtype}`` of :func:`columns`, for ``DataFrame.astype``."""
    return {name: _pandas_dtype(schema.columns[name]) for name in columns(schema, optional=optional)}


_EMPTIES: dict[tuple[int, tuple[str, ...]], tuple[pa.DataFrameSchema, pd.DataFrame]] = {}


def empty_frame(schema: pa.DataFrameSchema, *, optional: Iterable[str] = ()) -> pd.DataFrame:
    """A zero-row frame with the schema's columns and dtypes (a new frame each call: a copy of one
    built once per schema, ~0.06 ms against ~2.3 ms to build; steps return one for every date
    without rows)."""
    key = (id(schema), tuple(optional))
    known = _EMPTIES.get(key)
    if known is None or known[0] is not schema:
        frame = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes(schema, optional=optional).items()})
        known = _EMPTIES[key] = (schema, frame)
    return known[1].copy()


def typed_frame(records: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | None, schema: pa.DataFrameSchema,
                *, optional: Iterable[str] = ()) -> pd.DataFrame:
    """Records (a list of row dicts, or a dict of columns) as a frame of the schema's columns and dtypes."""
    names = list(columns(schema, optional=optional))
    if isinstance(records, Mapping):
        frame = pd.DataFrame(records or {c: [] for c in names}, columns=names)
    else:
        frame = pd.DataFrame.from_records(list(records or []), columns=names)
    return frame.astype(dtypes(schema, optional=optional))


_RANGE_CHECKS: dict[str, Callable[[pd.Series, dict], np.ndarray]] = {
    "greater_than_or_equal_to": lambda v, s: v.to_numpy() >= s["min_value"],
    "less_than_or_equal_to": lambda v, s: v.to_numpy() <= s["max_value"],
    "greater_than": lambda v, s: v.to_numpy() > s["min_value"],
    "less_than": lambda v, s: v.to_numpy() < s["max_value"],
    "isin": lambda v, s: _isin(v, s["allowed_values"]),
    "str_length": lambda v, s: _within(v.str.len().to_numpy(dtype="float64", na_value=np.nan), s),
}
"""pandera's built-in checks the fast path runs itself: value -> passes, for a column's values."""


def _isin(values: pd.Series, allowed) -> np.ndarray:
    """``values.isin(allowed)``; the usual case, every value allowed, is told from a set of a few
    values (pandas' isin costs a millisecond even on two rows of strings)."""
    try:
        if set(values.tolist()) <= set(allowed):
            return np.ones(len(values), dtype=bool)
    except TypeError:  # an unhashable value: pandas decides
        pass
    return values.isin(list(allowed)).to_numpy()


def _duplicated(frame: pd.DataFrame, key: list[str], nulls_possible: bool) -> np.ndarray:
    """``frame.duplicated(key, keep=False)``; a key without nulls whose rows are all distinct as
    Python tuples (the usual case) is told without pandas' factorising of every key column."""
    if not nulls_possible:
        rows = list(zip(*(frame[name].to_numpy().tolist() for name in key)))
        if len(set(rows)) == len(rows):
            return np.zeros(len(frame), dtype=bool)
    return frame.duplicated(key, keep=False).to_numpy()


def _within(lengths: np.ndarray, stats: dict) -> np.ndarray:
    low, high = stats.get("min_value"), stats.get("max_value")
    return (lengths >= (low if low is not None else 0)) & (lengths <= (high if high is not None else np.inf))


@dataclass(frozen=True)
class _Plan:
    """What :func:`table_problems` checks of one schema, worked out once."""

    names: tuple[str, ...]  # every column, in order
    dtypes: dict[str, Any]
    watched: tuple[tuple[str, bool, tuple[pa.Check, ...]], ...]  # (column, nullable, fast checks): columns with rules
    key_nullable: bool  # some column of the unique key may hold nulls (so tuples cannot tell its duplicates)


_PLANS: dict[int, tuple[pa.DataFrameSchema, _Plan]] = {}


def _plan(schema: pa.DataFrameSchema) -> _Plan:
    known = _PLANS.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    watched = []
    for name, column in schema.columns.items():
        checks = tuple(c for c in column.checks if c.name in _RANGE_CHECKS)
        if checks or not column.nullable:
            watched.append((name, column.nullable, checks))
    key_nullable = any(name not in schema.columns or schema.columns[name].nullable for name in schema.unique or ())
    plan = _Plan(tuple(schema.columns), {n: _pandas_dtype(c) for n, c in schema.columns.items()}, tuple(watched),
                 key_nullable)
    _PLANS[id(schema)] = (schema, plan)
    return plan


def _nulls(values: pd.Series) -> np.ndarray | None:
    """The null mask of a column, or None when it has none (found without a mask where the dtype allows)."""
    kind = values.dtype.kind
    if kind in "iub":
        return None
    if kind == "f":
        array = values.to_numpy()
        if not np.isnan(array.sum()):  # one pass, no mask: NaN propagates (inf - inf too: checked below)
            return None
        mask = np.isnan(array)
    elif kind == "M":
        mask = np.isnat(values.to_numpy())
    else:
        if not values.hasnans:
            return None
        mask = values.isna().to_numpy()
    return mask if mask.any() else None


def table_problems(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> list[Problem]:
    """What breaks the schema in ``frame``: columns (set and order), dtypes, nulls, the ranges and
    value sets of its built-in checks, and the uniqueness of its key. Vectorised, and only the
    columns with a rule are looked at, so that it is cheap enough for every write (the IO manager
    runs it on each partition); the schema's custom checks (e.g. QML's one price per day) are left
    to pandera's own validation. An empty list: the frame satisfies all of them."""
    plan = _plan(schema)
    problems: list[Problem] = []
    present = list(frame.columns)
    missing = [n for n, c in schema.columns.items() if c.required and n not in set(present)]
    for name in missing:
        problems.append(Problem(name, "column present", len(frame), [{"columns": ", ".join(map(str, present))}]))
    if schema.strict:
        for name in [c for c in present if c not in plan.dtypes]:
            problems.append(Problem(str(name), f"no column outside the schema of {schema.name}", len(frame)))
    if problems:
        return problems
    known = [c for c in present if c in plan.dtypes]
    if schema.ordered and known != [c for c in plan.names if c in set(present)]:
        problems.append(Problem(", ".join(map(str, known)), f"column order {', '.join(plan.names)}", len(frame)))
    got = frame.dtypes
    wrong = {name for name in known if got[name] != plan.dtypes[name]}
    for name in sorted(wrong, key=known.index):
        problems.append(Problem(name, f"dtype {plan.dtypes[name]}", len(frame), [{"dtype": str(got[name])}]))
    if not len(frame):
        return problems
    for name, nullable, checks in plan.watched:
        if name in wrong or name not in got.index:
            continue
        values = frame[name]
        nulls = _nulls(values)
        if not nullable and nulls is not None:
            problems.append(Problem(name, "not null", int(nulls.sum()), _examples(frame, nulls, [name])))
        for check in checks:
            with np.errstate(invalid="ignore"):
                broken = ~_RANGE_CHECKS[check.name](values, check.statistics)
            if nulls is not None:
                broken &= ~nulls
            if broken.any():
                problems.append(Problem(name, check.error or check.name, int(broken.sum()),
                                        _examples(frame, broken, [name])))
    key = schema.unique
    if key and len(frame) > 1 and not problems:
        doubled = _duplicated(frame, list(key), plan.key_nullable)
        if doubled.any():
            problems.append(Problem(", ".join(key), f"unique ({', '.join(key)})", int(doubled.sum()),
                                    _examples(frame, doubled, list(key))))
    return problems


def table_passes(schema: pa.DataFrameSchema, frame: pd.DataFrame, table: pyarrow.Table,
                 dtypes: Sequence[Any] | None = None) -> bool:
    """True only if :func:`table_problems` finds nothing in ``frame``, told from ``table`` (``frame``
    as Arrow, the table about to be stored) where Arrow knows it without a pass in Python: null
    counts, minima and maxima, distinct values. False means "maybe a problem": ask
    :func:`table_problems`, which also says what it is. (~0.1 ms a small frame against ~1 ms.)
    ``dtypes``: the frame's column dtypes in order, when the caller has them (``frame.dtypes``
    builds a Series)."""
    plan = _plan(schema)
    present = frame.columns.tolist()
    have = set(present)
    if not (schema.strict and schema.ordered) or present != [c for c in plan.names if c in have]:
        return False
    if any(schema.columns[name].required and name not in have for name in plan.names):
        return False
    if table.column_names != present or table.num_rows != len(frame):
        return False
    got = dict(zip(present, frame.dtypes.tolist() if dtypes is None else dtypes))
    if len(got) != len(present) or any(got[name] != plan.dtypes[name] for name in present):
        return False
    if not len(frame):
        return True
    for name, nullable, checks in plan.watched:
        if name not in got:
            continue
        column = table.column(name)  # pandas' nulls (NaN, NaT, NA) are Arrow's nulls
        if not nullable and column.null_count:
            return False
        bounds: dict = {}  # the column's (min, max), and its strings' lengths', each computed once
        for check in checks:
            if not _arrow_check(check, column, bounds):
                return False
    key = schema.unique
    return not (key and len(frame) > 1 and _arrow_duplicates(frame, table, list(key)))


def _arrow_duplicates(frame: pd.DataFrame, table: pyarrow.Table, key: list[str]) -> bool:
    """Whether some rows share the key (``frame.duplicated(key).any()``): told from the Arrow
    columns as Python tuples when the key holds no null (equal values give equal tuples: numbers,
    strings, timestamps as integers), else by :func:`_duplicated` (pandas' rules for nulls)."""
    columns = [table.column(name) for name in key]
    if any(column.null_count for column in columns):
        return bool(_duplicated(frame, key, True).any())
    if len(columns) == 1 and not pyarrow.types.is_floating(columns[0].type):  # (floats: -0.0 is 0.0 to pandas)
        return pc.count_distinct(columns[0], mode="all").as_py() != table.num_rows
    return len(set(zip(*(column.to_numpy().tolist() for column in columns)))) != table.num_rows


def _arrow_check(check: pa.Check, column: pyarrow.ChunkedArray, bounds: dict) -> bool:
    """True if every non-null value passes the built-in check (False: maybe not). ``bounds``: the
    column's minimum and maximum (and its strings' lengths'), kept for the column's next check."""
    stats = check.statistics
    if check.name == "isin":
        allowed = set(stats["allowed_values"])
        return all(v is None or v in allowed for v in pc.unique(column).to_pylist())
    lengths = check.name == "str_length"
    if lengths:
        if not pyarrow.types.is_string(column.type) and not pyarrow.types.is_large_string(column.type):
            return False
    elif not (pyarrow.types.is_integer(column.type) or pyarrow.types.is_floating(column.type)):
        return False  # dates and the rest: pandas decides
    if lengths not in bounds:
        low_high = pc.min_max(pc.utf8_length(column) if lengths else column)
        bounds[lengths] = (low_high["min"].as_py(), low_high["max"].as_py())
    low, high = bounds[lengths]
    if low is None:  # no non-null value
        return True
    return _BOUNDS_CHECKS[check.name](low, high, stats)


_BOUNDS_CHECKS: dict[str, Callable[[Any, Any, dict], bool]] = {
    "greater_than_or_equal_to": lambda low, high, s: low >= s["min_value"],
    "less_than_or_equal_to": lambda low, high, s: high <= s["max_value"],
    "greater_than": lambda low, high, s: low > s["min_value"],
    "less_than": lambda low, high, s: high < s["max_value"],
    "str_length": lambda low, high, s: bool(_within(np.array([low, high], dtype="float64"), s).all()),
}
"""The range checks of :data:`_RANGE_CHECKS` told from a column's smallest and largest value."""


@dataclass(frozen=True)
class Problem:
    """One broken rule: which field, which rule, how many rows, a few of them."""

    field: str
    rule: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        shown = "; ".join(_format_row(r) for r in self.examples[:_EXAMPLES])
        return f"field {self.field!r} breaks rule {self.rule!r} in {self.count} row(s), e.g. {shown}"

    def scrubbed(self, scrub: Callable[[str], str]) -> Problem:
        """This problem with ``scrub`` applied to every text it shows (field, rule, example keys
        and values): examples are upstream content, which may echo a secret back."""
        return Problem(scrub(self.field), scrub(self.rule), self.count, [_scrub_value(e, scrub) for e in self.examples])


@dataclass(frozen=True)
class ContractReport:
    """The outcome of validating a frame of QML rows."""

    rows: int
    problems: tuple[Problem, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def failure_counts(self) -> dict[str, int]:
        return {f"{p.field}:{p.rule}": p.count for p in self.problems}

    def message(self, context: str = "QML rows") -> str:
        if self.passed:
            return f"{context}: {self.rows} rows satisfy QML contract v{CONTRACT_VERSION}"
        lines = [f"{context}: QML contract v{CONTRACT_VERSION} violated ({self.rows} rows checked):"]
        lines += [f"  - {p.describe()}" for p in self.problems]
        return "\n".join(lines)

    def raise_if_failed(self, context: str = "QML rows") -> None:
        if not self.passed:
            raise ContractViolation(self.message(context), self.problems)


class ContractViolation(ValueError):
    """Upstream data that breaks the QML contract; not retryable."""

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)

    def scrubbed(self, scrub: Callable[[str], str]) -> ContractViolation:
        """The same violation with ``scrub`` applied to its message and every problem."""
        return ContractViolation(scrub(str(self)), [p.scrubbed(scrub) for p in self.problems])


def _scrub_value(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {_scrub_value(k, scrub): _scrub_value(v, scrub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, scrub) for v in value]
    shown = repr(value)  # bytes, arrays and other objects are shown by their repr
    cleaned = scrub(shown)
    return value if cleaned == shown else cleaned


_VERSION_FORMAT = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){0,3}")


def check_contract_version(version: str | None) -> str:
    """Accept a missing header (today's endpoint) or the same major version; fail fast otherwise.

    The value is recorded in metadata, so anything but a version number (``1``, ``1.9``) is refused
    rather than stored: a header is upstream content like any other."""
    if version is None or not str(version).strip():
        return CONTRACT_VERSION
    if not _VERSION_FORMAT.fullmatch(str(version).strip()):
        shown = str(version)[:40]
        raise ContractViolation(
            f"upstream's X-QML-Contract-Version is not a version number (such as 1 or 1.2): {shown!r}",
            [Problem("X-QML-Contract-Version", "format: a version number such as 1 or 1.2", 1, [{"received": shown}])],
        )
    major = str(version).strip().split(".")[0]
    if major != CONTRACT_VERSION:
        raise ContractViolation(
            f"upstream announces X-QML-Contract-Version {version!r}; this client speaks major version "
            f"{CONTRACT_VERSION}. Refusing to guess: upgrade nexus-assets or pin the upstream version.",
            [Problem("X-QML-Contract-Version", f"major version {CONTRACT_VERSION}", 1, [{"received": str(version)}])],
        )
    return str(version).strip()


@dataclass(frozen=True)
class TimeLimit:
    """The latest ``time`` a response may carry, and why (for the message)."""

    latest: pd.Timestamp
    reason: str

    @property
    def rule(self) -> str:
        return f"not in the future (at most {self.latest.date().isoformat()}, {self.reason})"


def time_limit(watermark: pd.Timestamp | None, today: dt.date) -> TimeLimit:
    """Rows may not be dated after the upstream watermark (when the server states one) nor after
    tomorrow (UTC, one day of clock slack): either means a broken clock or a broken feed, and such
    rows would also push a watermark derived from the rows past days not yet published."""
    tomorrow = pd.Timestamp(today + _CLOCK_SLACK)
    if watermark is not None and watermark.normalize() < tomorrow:
        return TimeLimit(watermark.normalize(), "the upstream watermark")
    return TimeLimit(tomorrow, "tomorrow, UTC")


def rows_after(frame: pd.DataFrame, times: pd.Series, limit: TimeLimit) -> Problem | None:
    """The rows of ``frame`` whose parsed ``times`` lie after ``limit``, as a problem of field ``time``."""
    late = (times > limit.latest).to_numpy()
    if not late.any():
        return None
    shown = frame.loc[late].assign(time=times[late].dt.date.astype(str))
    return Problem("time", limit.rule, int(late.sum()), _examples(shown, np.ones(len(shown), dtype=bool), QML_KEY))


def rows_problem(frame: pd.DataFrame, mask: pd.Series | np.ndarray, field_name: str, rule: str) -> Problem:
    """``field_name`` breaking ``rule`` in the rows of ``frame`` under ``mask``, a few shown by key."""
    mask = np.asarray(mask, dtype=bool)
    shown = QML_KEY + ([field_name] if field_name not in QML_KEY else [])
    return Problem(field_name, rule, int(mask.sum()), _examples(frame, mask, shown))


def merge_problems(first: Problem | None, second: Problem | None) -> Problem | None:
    """One problem from two reports of the same field and rule (e.g. two chunks of one payload)."""
    if first is None or second is None:
        return first or second
    return Problem(first.field, first.rule, first.count + second.count, (first.examples + second.examples)[:_EXAMPLES])


def _format_row(row: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in row.items()) + "}"


def _parse_time_text(text: str) -> dt.datetime | None:
    text = text.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)  # RFC 1123, Flask's default
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


class ParsedTimes(NamedTuple):
    """QML ``time`` values as timezone-naive UTC dates, and which could not be used (NaT in ``times``)."""

    times: pd.Series
    unreadable: pd.Series  # not a date-time in any accepted form
    out_of_range: pd.Series  # a date-time, but outside the nanosecond timestamp range


def _in_range(stamp: dt.datetime) -> bool:
    return _FIRST_TIME <= pd.Timestamp(stamp) <= _LAST_TIME


def parse_times(values: pd.Series) -> ParsedTimes:
    """Normalise QML ``time`` values to timezone-naive UTC dates (midnight).

    Accepts ISO 8601 with or without offset, RFC 1123 (``Wed, 01 Jan 2025 00:00:00 GMT``) and
    already-typed datetimes of any unit. Each distinct text is parsed once (a day repeats thousands
    of times). A date-time outside the nanosecond range (``9999-12-31``) is reported as such, never
    wrapped around into another century.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        times = values
        if getattr(times.dt, "tz", None) is not None:
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        out_of_range = times.notna() & ((times < _FIRST_TIME) | (times > _LAST_TIME))
        if out_of_range.any():
            times = times.where(~out_of_range)
        times = times.astype("datetime64[ns]").dt.normalize()
        return ParsedTimes(times, times.isna() & ~out_of_range, out_of_range)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    parsed: list[Any] = []
    outside = np.zeros(len(uniques) + 1, dtype=bool)  # the extra slot is for missing values (code -1)
    for position, value in enumerate(uniques):
        if isinstance(value, str):
            stamp = _parse_time_text(value)
        elif isinstance(value, (dt.datetime, pd.Timestamp)):
            as_timestamp = pd.Timestamp(value)
            stamp = (as_timestamp.tz_convert("UTC").tz_localize(None) if as_timestamp.tz else as_timestamp).to_pydatetime()
        else:
            stamp = None
        if stamp is not None and not _in_range(stamp):
            outside[position], stamp = True, None
        parsed.append(stamp)
    lookup = pd.to_datetime(pd.Series(parsed, dtype=object), errors="coerce").dt.normalize()
    lookup_values = np.append(lookup.to_numpy(dtype="datetime64[ns]"), np.datetime64("NaT", "ns"))
    result = pd.Series(lookup_values[codes], index=values.index, name=values.name).astype("datetime64[ns]")
    out_of_range = pd.Series(outside[codes], index=values.index)
    return ParsedTimes(result, result.isna() & ~out_of_range, out_of_range)


_NUMBER_TYPES = (int, float, np.integer, np.floating)


def _examples(frame: pd.DataFrame, mask: pd.Series | np.ndarray, columns: Iterable[str]) -> list[dict[str, Any]]:
    picked = frame.loc[np.asarray(mask)].head(_EXAMPLES)
    cols = [c for c in columns if c in frame.columns]
    return [{"row": int(i), **{c: _plain(picked.at[i, c]) for c in cols}} for i in picked.index]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _numeric(frame: pd.DataFrame, name: str, nullable: bool, problems: list[Problem]) -> np.ndarray:
    """A float64 array of column ``name``; strings, booleans and other objects are a type problem.

    Non-finite markers (:data:`NON_FINITE_MARKERS`) are a ``finite`` problem in the fields that
    must be finite, and plain numbers (NaN being null) in the others.
    """
    column = frame[name]
    size = len(column)
    marked = np.zeros(size, dtype=bool)
    if pd.api.types.is_bool_dtype(column.dtype):
        values, nulls, bad = np.full(size, np.nan), np.zeros(size, dtype=bool), np.ones(size, dtype=bool)
    elif pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        nulls, bad = np.isnan(values), np.zeros(size, dtype=bool)
    else:
        raw = column.to_numpy(dtype=object)
        nulls = pd.isna(column).to_numpy()
        is_number = np.fromiter(
            (isinstance(v, _NUMBER_TYPES) and not isinstance(v, (bool, np.bool_)) for v in raw), dtype=bool, count=size
        )
        marked = np.fromiter((isinstance(v, str) and v in NON_FINITE_MARKERS for v in raw), dtype=bool, count=size)
        bad = ~(is_number | nulls | marked)
        values = np.full(size, np.nan)
        values[is_number] = raw[is_number].astype("float64")
        values[marked] = [NON_FINITE_MARKERS[v] for v in raw[marked]]
    shown = QML_KEY + [name]
    if not nullable and nulls.any():
        problems.append(Problem(name, "required (not null)", int(nulls.sum()), _examples(frame, nulls, shown)))
    if bad.any():
        problems.append(Problem(name, "type: number", int(bad.sum()), _examples(frame, bad, shown)))
    if name in FINITE_FIELDS and marked.any():
        examples = [{k: NON_FINITE_MARKERS.get(v, v) if isinstance(v, str) else v for k, v in row.items()}
                    for row in _examples(frame, marked, shown)]
        problems.append(Problem(name, "finite", int(marked.sum()), examples))
    return values


def coerce_qml_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """Type a frame of raw QML rows into the contract's dtypes, or raise :class:`ContractViolation`.

    - ``symbol``: non-null string;
    - ``time``: see :func:`parse_times`;
    - ``n_predict``: integral number in 1 .. :data:`MAX_HORIZON` (``5.0`` accepted, ``5.5`` and ``"5"`` refused);
    - prices and direction fields: JSON numbers (strings refused: the contract says float);
    - ``yn_p`` / ``yn_actual`` may be absent (filled with null); unknown extra fields are kept.
    Column order: the contract's columns, then extras in arrival order.
    """
    problems: list[Problem] = []
    missing = [c for c in QML_REQUIRED if c not in raw.columns]
    if missing:
        present = ", ".join(map(str, raw.columns)) or "none"
        for name in missing:
            problems.append(Problem(name, "required field present", len(raw), [{"fields_received": present}]))
        raise ContractViolation(ContractReport(len(raw), tuple(problems)).message(), problems)

    frame = raw.reset_index(drop=True)
    out: dict[str, Any] = {}

    symbols = frame["symbol"]
    if pd.api.types.is_string_dtype(symbols.dtype) and not pd.api.types.is_object_dtype(symbols.dtype):
        bad_symbol = symbols.isna().to_numpy()
    else:
        bad_symbol = ~np.fromiter((isinstance(v, str) for v in symbols.to_numpy(dtype=object)), dtype=bool, count=len(frame))
    if bad_symbol.any():
        problems.append(Problem("symbol", "type: non-empty string", int(bad_symbol.sum()), _examples(frame, bad_symbol, QML_KEY)))
    out["symbol"] = symbols.astype(str)

    parsed = parse_times(frame["time"])
    for mask, rule in ((parsed.unreadable, "format: ISO 8601 or RFC 1123 date-time"), (parsed.out_of_range, _TIME_RANGE_RULE)):
        if mask.any():
            problems.append(Problem("time", rule, int(mask.sum()), _examples(frame, mask, QML_KEY)))
    out["time"] = parsed.times

    horizon = _numeric(frame, "n_predict", nullable=False, problems=problems)
    fractional = np.isfinite(horizon) & (np.floor(horizon) != horizon)
    if fractional.any():
        problems.append(Problem("n_predict", "integer", int(fractional.sum()), _examples(frame, fractional, QML_KEY)))
    # Refused here, before the cast: a horizon like 1e30 would wrap around in int64.
    too_long = np.isfinite(horizon) & (horizon > MAX_HORIZON)
    if too_long.any():
        problems.append(Problem("n_predict", _HORIZON_RANGE[1].error, int(too_long.sum()), _examples(frame, too_long, QML_KEY)))
    out["n_predict"] = np.where(np.isfinite(horizon) & ~too_long, horizon, 0).astype("int64")

    out["close_predict"] = _numeric(frame, "close_predict", nullable=False, problems=problems)
    out["target_var_price"] = _numeric(frame, "target_var_price", nullable=True, problems=problems)
    for name in QML_OPTIONAL:
        out[name] = _numeric(frame, name, nullable=True, problems=problems) if name in frame.columns else np.full(len(frame), np.nan)

    if problems:
        raise ContractViolation(ContractReport(len(frame), tuple(problems)).message(), problems)
    typed = pd.DataFrame(out, index=frame.index)
    for extra in frame.columns:
        if extra not in QML_COLUMNS:
            typed[extra] = frame[extra]
    return typed


def validate_qml_rows(rows: pd.DataFrame) -> ContractReport:
    """Check typed QML rows against :data:`QML_ROWS`: value rules, uniqueness, one price per day."""
    try:
        QML_ROWS.validate(rows, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return ContractReport(len(rows), tuple(_problems_from(errors.failure_cases, rows)))
    return ContractReport(len(rows))


# Frame-level pandera checks report every column of an offending row; name them once, by rule.
_FRAME_RULES: dict[str, tuple[str, str, list[str]]] = {
    "multiple_fields_uniqueness": ("symbol, time, n_predict", "unique (symbol, time, n_predict)", QML_KEY),
    "one_target_var_price_per_time": ("target_var_price", "one target_var_price per time", QML_KEY + ["target_var_price"]),
}


def _problems_from(cases: pd.DataFrame, rows: pd.DataFrame) -> list[Problem]:
    cases = cases.assign(column=cases["column"].astype(str), check=cases["check"].astype(str))
    frame_level = cases["check"].isin(list(_FRAME_RULES))
    groups = [(*_FRAME_RULES[check], g) for check, g in cases[frame_level].groupby("check", sort=True)]
    groups += [
        (column, check, QML_KEY + ([column] if column not in QML_KEY else []), g)
        for (column, check), g in cases[~frame_level].groupby(["column", "check"], sort=True)
    ]
    positional = rows.reset_index(drop=True)
    problems = []
    for field_name, rule, shown, group in groups:
        labels = pd.to_numeric(group["index"], errors="coerce").dropna().astype("int64").unique()
        positions = rows.index.get_indexer(labels)
        mask = np.zeros(len(rows), dtype=bool)
        mask[positions[positions >= 0]] = True
        if mask.any():
            problems.append(Problem(field_name, rule, int(mask.sum()), _examples(positional, mask, shown)))
        else:  # a schema-level failure with no row (e.g. a missing column or a wrong dtype)
            cases_shown = [{"value": _plain(v)} for v in group["failure_case"].head(_EXAMPLES)]
            problems.append(Problem(field_name, rule, len(group), cases_shown))
    return problems


def empty_qml_rows() -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes (an empty trading day)."""
    return empty_frame(QML_ROWS)
