"""The instrument catalog: one TOML file, one ``[[assets]]`` table per traded instrument.

The catalog is the single place that says which QML projects the pipeline follows, where their
rows come from (``api``, ``sandbox`` or ``synthetic``), which calendar they trade on and how the
later steps treat them. Every asset's ``key`` becomes a partition key and a path segment, so it is
validated strictly; a bad catalog fails at load with a message naming the file, the asset and the
field.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from nexus_assets.core.periods import has_session

__all__ = [
    "CALENDARS",
    "SOURCES",
    "SELECTION_MODES",
    "ENSEMBLE_SOURCES",
    "CatalogAsset",
    "Catalog",
    "CatalogError",
    "load_catalog",
    "bundled_catalog_path",
]

Calendar = Literal["crypto", "exchange"]
Source = Literal["api", "sandbox", "synthetic"]
SelectionMode = Literal["point_in_time", "nexus_v2"]
EnsembleSource = Literal["child_models", "upstream"]

CALENDARS: tuple[str, ...] = ("crypto", "exchange")
SOURCES: tuple[str, ...] = ("api", "sandbox", "synthetic")
SELECTION_MODES: tuple[str, ...] = ("point_in_time", "nexus_v2")
# child_models: our dynamic quantile ensemble over the child models; upstream: QML's own
# per-horizon forecasts (/get_qml_horizon_forecast), for a team that trusts upstream's ensemble
ENSEMBLE_SOURCES: tuple[str, ...] = ("child_models", "upstream")
# Matched with fullmatch: a `$` would also match before a final newline ("1_A\n").
KEY_PATTERN = re.compile(r"[0-9]+_[A-Za-z0-9_]+")
SANDBOX_SERIES: tuple[str, ...] = ("sp500", "nasdaq", "wti", "vix")


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the asset and the field."""


@dataclass(frozen=True)
class CatalogAsset:
    """One instrument (a QML project) as the pipeline follows it."""

    key: str
    project_id: int
    name: str
    display_name: str
    category: str
    calendar: Calendar
    start_date: dt.date
    source: Source
    end_date: dt.date | None = None
    selection_mode: SelectionMode = "point_in_time"
    ensemble_source: EnsembleSource = "child_models"
    signal_threshold: float = 0.1
    # the optimised signal follows the horizon search's winner only when the winner's deflated
    # Sharpe ratio (selection-adjusted, a probability) is at least this; 0 turns the check off
    min_deflated_sharpe: float = 0.95
    cost_bps: float = 0.0
    # qml_model_metadata's churn check warns when a horizon loses more than this share of its
    # live child models from one day to the next
    model_loss_warn_share: float = 0.25
    # source "sandbox": which bundled price series the model farm trains on
    series: str | None = None
    # sources "sandbox" and "synthetic": forecast horizons (observations ahead)
    horizons: tuple[int, ...] | None = None
    # source "synthetic": scale and seed of the generator
    models_per_horizon: int | None = None
    seed: int | None = None
    # the ML layer (docs/ml.md): the horizons (observations ahead) whose up/down direction the
    # ML models predict, how many calendar days a trained model serves before the next training,
    # and the confidence (|p - 0.5| x 2) from which the ML signal acts (BUY/SELL, else HOLD)
    ml_horizons: tuple[int, ...] = (1, 5)
    ml_retrain_days: int = 7
    ml_signal_threshold: float = 0.6
    # training pairs: a model is trained once at least ml_min_train_pairs pairs are known, on the
    # latest ml_train_window of them (a short history, e.g. a year of a new project, serves sooner
    # with fewer pairs, at the price of noisier models)
    ml_min_train_pairs: int = 150
    ml_train_window: int = 750

    def is_trading_day(self, day: dt.date) -> bool:
        """Whether the asset's calendar expects a publication on ``day``."""
        return has_session(self.calendar, day)

    def covers(self, day: dt.date) -> bool:
        """Whether ``day`` lies within the asset's catalogued history."""
        return day >= self.start_date and (self.end_date is None or day <= self.end_date)


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: its source file and its assets in file order."""

    path: str
    assets: tuple[CatalogAsset, ...] = field(default_factory=tuple)

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.assets]

    def __getitem__(self, key: str) -> CatalogAsset:
        for asset in self.assets:
            if asset.key == key:
                return asset
        raise KeyError(f"asset {key!r} is not in catalog {self.path} (known: {', '.join(self.keys)})")

    @property
    def start_date(self) -> dt.date:
        return min(a.start_date for a in self.assets)

    @property
    def end_date(self) -> dt.date | None:
        """The last catalogued day when every asset has an ``end_date`` (a closed history)."""
        ends = [a.end_date for a in self.assets]
        return None if any(e is None for e in ends) else max(ends)  # type: ignore[type-var]


_REQUIRED = ("key", "project_id", "name", "display_name", "category", "calendar", "start_date", "source")
_KNOWN = tuple(f.name for f in fields(CatalogAsset))


def bundled_catalog_path(name: str = "sandbox") -> Path:
    """Path of a catalog shipped with the project (``catalogs/<name>.toml``)."""
    here = Path(__file__).resolve().parent
    for folder in (here / "_catalogs", here.parent / "catalogs"):  # wheel install, then source tree
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise CatalogError(f"bundled catalog {name!r} not found next to the nexus_assets package")


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a catalog file (default: the bundled sandbox catalog)."""
    path = Path(path) if path else bundled_catalog_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found (set NEXUS_CATALOG to an existing TOML file)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None

    extra = sorted(set(document) - {"assets"})
    if extra:
        raise CatalogError(f"{path}: unknown top-level field(s) {extra}; a catalog holds only [[assets]] tables")
    entries = document.get("assets")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{path}: no [[assets]] tables; a catalog needs at least one asset")

    assets: list[CatalogAsset] = []
    seen: dict[str, int] = {}
    for position, entry in enumerate(entries, start=1):
        asset = _parse_asset(path, position, entry)
        if asset.key in seen:
            raise CatalogError(
                f"{path}: asset {asset.key!r} (entry #{position}): field 'key': duplicate, "
                f"already used by entry #{seen[asset.key]}"
            )
        seen[asset.key] = position
        assets.append(asset)
    return Catalog(path=str(path), assets=tuple(assets))


def _parse_asset(path: Path, position: int, entry: dict[str, Any]) -> CatalogAsset:
    label = repr(entry.get("key")) if isinstance(entry.get("key"), str) else "<no key>"

    def fail(field_name: str, problem: str) -> CatalogError:
        return CatalogError(f"{path}: asset {label} (entry #{position}): field {field_name!r}: {problem}")

    unknown = sorted(set(entry) - set(_KNOWN))
    if unknown:
        raise fail(unknown[0], f"unknown field (known fields: {', '.join(_KNOWN)})")
    for name in _REQUIRED:
        if name not in entry:
            raise fail(name, "required field is missing")

    def text(name: str) -> str:
        value = entry[name]
        if not isinstance(value, str) or not value.strip():
            raise fail(name, f"must be a non-empty string, got {value!r}")
        return value

    def choice(name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = entry.get(name, default)
        if value not in allowed:
            raise fail(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def day(name: str) -> dt.date | None:
        value = entry.get(name)
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            raise fail(name, f"must be a date (YYYY-MM-DD), got a date-time {value!r}")
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise fail(name, f"must be a date YYYY-MM-DD, got {value!r}")

    def number(name: str, default: float, minimum: float, maximum: float) -> float:
        value = entry.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
            raise fail(name, f"must be a number in [{minimum}, {maximum}], got {value!r}")
        return float(value)

    def integer(name: str, minimum: int, maximum: int) -> int | None:
        value = entry.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise fail(name, f"must be an integer in [{minimum}, {maximum}], got {value!r}")
        return value

    key = text("key")
    if not KEY_PATTERN.fullmatch(key):
        raise fail("key", f"{key!r} must match {KEY_PATTERN.pattern} in full (keys become partition keys and paths)")
    project_id = entry["project_id"]
    if isinstance(project_id, bool) or not isinstance(project_id, int) or project_id < 0:
        raise fail("project_id", f"must be a non-negative integer, got {project_id!r}")
    name = text("name")
    if key != f"{project_id}_{name}":
        raise fail("key", f"{key!r} must be '<project_id>_<name>' = {project_id}_{name!r}")

    start_date = day("start_date")
    end_date = day("end_date")
    if end_date is not None and start_date is not None and end_date < start_date:
        raise fail("end_date", f"{end_date} is before start_date {start_date}")

    source = choice("source", SOURCES)
    horizons = entry.get("horizons")
    if horizons is not None:
        if (
            not isinstance(horizons, list)
            or not horizons
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in horizons)
            or len(set(horizons)) != len(horizons)
        ):
            raise fail("horizons", f"must be a non-empty list of distinct integers >= 1, got {horizons!r}")
        horizons = tuple(sorted(horizons))
    series = entry.get("series")
    if source == "sandbox":
        if series not in SANDBOX_SERIES:
            raise fail("series", f"source 'sandbox' needs series = one of {', '.join(SANDBOX_SERIES)}, got {series!r}")
    elif series is not None:
        raise fail("series", f"only used with source 'sandbox', not {source!r}")
    models_per_horizon = integer("models_per_horizon", 1, 100_000)
    seed = integer("seed", 0, 2**32 - 1)
    if source != "synthetic":
        for name_ in ("models_per_horizon", "seed"):
            if entry.get(name_) is not None:
                raise fail(name_, f"only used with source 'synthetic', not {source!r}")
    if source == "api" and horizons is not None:
        raise fail("horizons", "source 'api' discovers horizons from the data; remove this field")
    ml_horizons = entry.get("ml_horizons", [1, 5])
    if (
        not isinstance(ml_horizons, list)
        or not ml_horizons
        or any(isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= 250 for h in ml_horizons)
        or len(set(ml_horizons)) != len(ml_horizons)
    ):
        raise fail("ml_horizons", f"must be a non-empty list of distinct integers in [1, 250], got {ml_horizons!r}")
    ml_retrain_days = entry.get("ml_retrain_days", 7)
    if isinstance(ml_retrain_days, bool) or not isinstance(ml_retrain_days, int) or not 1 <= ml_retrain_days <= 366:
        raise fail("ml_retrain_days", f"must be an integer in [1, 366], got {ml_retrain_days!r}")
    ml_min_train_pairs = integer("ml_min_train_pairs", 30, 100_000)
    ml_min_train_pairs = 150 if ml_min_train_pairs is None else ml_min_train_pairs
    ml_train_window = integer("ml_train_window", 30, 100_000)
    ml_train_window = max(750, ml_min_train_pairs) if ml_train_window is None else ml_train_window
    if ml_train_window < ml_min_train_pairs:
        raise fail("ml_train_window", f"must be at least ml_min_train_pairs ({ml_min_train_pairs}), got {ml_train_window}")

    return CatalogAsset(
        key=key,
        project_id=project_id,
        name=name,
        display_name=text("display_name"),
        category=text("category"),
        calendar=choice("calendar", CALENDARS),  # type: ignore[arg-type]
        start_date=start_date,  # type: ignore[arg-type]
        end_date=end_date,
        source=source,  # type: ignore[arg-type]
        selection_mode=choice("selection_mode", SELECTION_MODES, "point_in_time"),  # type: ignore[arg-type]
        ensemble_source=choice("ensemble_source", ENSEMBLE_SOURCES, "child_models"),  # type: ignore[arg-type]
        signal_threshold=number("signal_threshold", 0.1, 0.0, 1.0),
        min_deflated_sharpe=number("min_deflated_sharpe", 0.95, 0.0, 1.0),
        cost_bps=number("cost_bps", 0.0, 0.0, 10_000.0),
        model_loss_warn_share=number("model_loss_warn_share", 0.25, 0.0, 1.0),
        series=series,
        horizons=horizons,
        models_per_horizon=models_per_horizon,
        seed=seed,
        ml_horizons=tuple(sorted(ml_horizons)),
        ml_retrain_days=ml_retrain_days,
        ml_signal_threshold=number("ml_signal_threshold", 0.6, 0.0, 1.0),
        ml_min_train_pairs=ml_min_train_pairs,
        ml_train_window=ml_train_window,
    )
