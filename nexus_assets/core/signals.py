"""Pairwise-slope signals (Nexus v2's "matrix drift"; ``docs/signals.md``).

For a date and the ascending horizons ``h_1 < ... < h_k`` that have a forecast that day, every
pair ``i < j`` gives the slope ``F(h_j) - F(h_i)``: bullish if > 0, bearish if < 0 (a zero slope
is a pair that is neither). With ``pairs`` the number of pairs:

- ``net_prob = (bullish - bearish) / pairs`` (0 with no pairs), ``bullish_prob``,
  ``bearish_prob``, ``mean_drift`` = mean slope (price units, NaN with no pairs),
  ``strength = |net_prob|``, ``agreement_ratio = max(bullish, bearish) / pairs`` (0 with no pairs);
- ``signal``: BULLISH if ``net_prob > threshold``, BEARISH if ``< -threshold``, else NEUTRAL, and
  ``position`` +1 / -1 / 0;
- ``tier`` from the strength: ``none`` (0), ``weak`` (below 0.4), ``moderate`` (below 0.7),
  ``strong`` (0.7 and above);
- the separation-weighted variant: each pair weighted by ``h_j - h_i``:
  ``weighted_net_prob = sum(w * sign(slope)) / sum(w)``, ``weighted_signal`` at the same threshold.

Only pairs where both forecasts exist count (Nexus v2's chart forward-filled missing forecasts and
then filled 0, which made early slopes meaningless). Each date's signal reads only that date's
forecasts, so it is point in time whenever the forecasts are.

Two variants per date: ``raw``, the all-horizon signal on the quantile-ensemble forecasts at the
catalog's threshold, and ``optimised``, the configuration (horizon subset, threshold,
within-horizon combination) that ``horizon_search`` chose for that date (``config_source =
"search"``). The search's winner is the best of thousands of candidates, so its objective is
biased upwards by the selection itself; it is followed only when its deflated Sharpe ratio
(``deflated_sharpe``: the probability that its true Sharpe ratio beats the best that luck alone
gives among the trials) is at least ``min_deflated_sharpe``. Otherwise the optimised row is the
raw configuration: ``config_source = "not_significant"`` (a winner below the bar) or
``"fallback"`` (no eligible winner yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from nexus_assets.core import contract

__all__ = [
    "COMBINATIONS",
    "CONFIG_SOURCES",
    "DEFAULT_MIN_DEFLATED_SHARPE",
    "SIGNAL_COLUMNS",
    "SLOPE_COLUMNS",
    "VARIANTS",
    "daily_signals",
    "format_horizons",
    "parse_horizons",
    "slope_signal",
    "strength_tier",
]

# within-horizon combination name -> horizon_ensembles column, in the search's tie-break order
COMBINATIONS: dict[str, str] = {
    "ensemble": "forecast",
    "mean": "raw_mean",
    "median": "raw_median",
    "low_variance": "low_variance",
}
VARIANTS: tuple[str, ...] = ("raw", "optimised")
LABELS = {1: "BULLISH", -1: "BEARISH", 0: "NEUTRAL"}
_TIER_BOUNDS = ((0.7, "strong"), (0.4, "moderate"))

SIGNAL_COLUMNS: tuple[str, ...] = contract.columns(contract.SIGNALS)
CONFIG_SOURCES: tuple[str, ...] = ("catalog", "search", "not_significant", "fallback")
DEFAULT_MIN_DEFLATED_SHARPE = 0.95
"""The bar a search winner's deflated Sharpe ratio must reach (the catalog's ``min_deflated_sharpe``)."""
SLOPE_COLUMNS: tuple[str, ...] = contract.columns(contract.SLOPES)


def format_horizons(horizons: Iterable[int]) -> str:
    """``"1,3,5"``: how a horizon set is written in every table."""
    return ",".join(str(int(h)) for h in sorted(horizons))


def parse_horizons(text: str) -> tuple[int, ...]:
    """The inverse of :func:`format_horizons` (empty text: no horizons)."""
    return tuple(int(h) for h in text.split(",")) if text else ()


def strength_tier(strength: float) -> str:
    if not strength > 0:
        return "none"
    for bound, name in _TIER_BOUNDS:
        if strength >= bound:
            return name
    return "weak"


def _label(value: float, threshold: float) -> int:
    return 1 if value > threshold else (-1 if value < -threshold else 0)


def slope_signal(forecasts: pd.Series, *, threshold: float) -> tuple[dict, list[dict]]:
    """The signal of one date from its forecasts (index: horizon, values: forecast; NaN = absent).

    Returns the signal's fields (``SIGNAL_COLUMNS`` from ``horizons`` to ``weighted_signal``) and
    one slope record per pair where both forecasts exist.
    """
    series = forecasts.dropna().sort_index()
    horizons = [int(h) for h in series.index]
    values = series.to_numpy(dtype="float64")
    slopes = []
    bullish = bearish = 0
    weighted = total_weight = drift = 0.0
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            slope = values[j] - values[i]
            direction = int(np.sign(slope))
            weight = horizons[j] - horizons[i]
            bullish += direction > 0
            bearish += direction < 0
            weighted += weight * direction
            total_weight += weight
            drift += slope
            slopes.append({
                "horizon_short": horizons[i], "horizon_long": horizons[j], "forecast_short": values[i],
                "forecast_long": values[j], "slope": slope, "weight": weight, "direction": direction,
            })
    pairs = len(slopes)
    net = (bullish - bearish) / pairs if pairs else 0.0
    weighted_net = weighted / total_weight if pairs else 0.0
    position = _label(net, threshold)
    fields = {
        "horizons": format_horizons(horizons),
        "threshold": float(threshold),
        "n_horizons": len(horizons),
        "pairs": pairs,
        "bullish": int(bullish),
        "bearish": int(bearish),
        "bullish_prob": bullish / pairs if pairs else 0.0,
        "bearish_prob": bearish / pairs if pairs else 0.0,
        "net_prob": net,
        "mean_drift": drift / pairs if pairs else np.nan,
        "strength": abs(net),
        "tier": strength_tier(abs(net)),
        "agreement_ratio": max(bullish, bearish) / pairs if pairs else 0.0,
        "signal": LABELS[position],
        "position": position,
        "weighted_net_prob": weighted_net,
        "weighted_signal": LABELS[_label(weighted_net, threshold)],
    }
    return fields, slopes


def daily_signals(
    ensembles: pd.DataFrame,
    *,
    threshold: float,
    winners: pd.DataFrame | None = None,
    dates: Sequence[object] | None = None,
    min_deflated_sharpe: float = DEFAULT_MIN_DEFLATED_SHARPE,
) -> dict[str, pd.DataFrame]:
    """The ``signals`` and ``slopes`` tables of one asset for ``dates`` (default: every date).

    ``ensembles``: the stored horizon_ensembles rows of the dates (columns ``date, horizon,
    price`` and the :data:`COMBINATIONS` columns). ``winners``: the horizon_search leaderboard rows
    of rank 1 (``date, horizons, threshold, combination, deflated_sharpe``), at most one per date;
    the optimised signal of a date follows its winner when the winner's ``deflated_sharpe`` is at
    least ``min_deflated_sharpe`` (0: always; a missing figure counts as NaN, below any bar above
    0), and is the raw configuration otherwise.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if not 0.0 <= min_deflated_sharpe <= 1.0:
        raise ValueError(f"min_deflated_sharpe must be a probability in [0, 1], got {min_deflated_sharpe!r}")
    needed = ["date", "horizon", "price", *COMBINATIONS.values()]
    missing = [c for c in needed if c not in ensembles.columns]
    if missing:
        raise ValueError(f"ensembles lack column(s) {missing}; pass the horizon_ensembles table")
    frame = ensembles.copy()
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    if dates is not None:
        frame = frame[frame["date"].isin(pd.to_datetime(list(dates)))]
    chosen: dict[pd.Timestamp, tuple[tuple[int, ...], float, str, float]] = {}
    if winners is not None and len(winners):
        if winners["date"].duplicated().any():
            raise ValueError("winners must hold at most one row (rank 1) per date")
        deflated = winners["deflated_sharpe"] if "deflated_sharpe" in winners else pd.Series(np.nan, index=winners.index)
        for row, dsr in zip(winners.itertuples(index=False), deflated.to_numpy("float64", na_value=np.nan)):
            if row.combination not in COMBINATIONS:
                raise ValueError(f"unknown combination {row.combination!r}; expected one of {list(COMBINATIONS)}")
            chosen[pd.Timestamp(row.date)] = (parse_horizons(row.horizons), float(row.threshold), row.combination, dsr)
    signal_rows: list[dict] = []
    slope_rows: list[dict] = []
    for date, day in frame.groupby("date", sort=True):
        day = day.drop_duplicates("horizon").set_index("horizon").sort_index()
        prices = day["price"].dropna()
        price = float(prices.iloc[0]) if len(prices) else np.nan
        raw = ("raw", tuple(day.index), float(threshold), "ensemble", "catalog", np.nan)
        configs = [raw]
        if date in chosen:
            horizons, chosen_threshold, combination, dsr = chosen[date]
            if min_deflated_sharpe == 0.0 or dsr >= min_deflated_sharpe:
                configs.append(("optimised", horizons, chosen_threshold, combination, "search", dsr))
            else:
                configs.append(("optimised", *raw[1:4], "not_significant", dsr))
        else:
            configs.append(("optimised", *raw[1:4], "fallback", np.nan))
        for variant, horizons, level, combination, source, dsr in configs:
            values = day[COMBINATIONS[combination]].reindex(list(horizons))
            fields, slopes = slope_signal(values, threshold=level)
            if source == "search":  # the configuration's subset, even where a forecast is absent today
                fields["horizons"] = format_horizons(horizons)
            signal_rows.append({"date": date, "variant": variant, "combination": combination, **fields,
                                "price": price, "config_source": source, "deflated_sharpe": dsr})
            slope_rows.extend({"date": date, "variant": variant, **s} for s in slopes)
    return {"signals": contract.typed_frame(signal_rows, contract.SIGNALS),
            "slopes": contract.typed_frame(slope_rows, contract.SLOPES)}
