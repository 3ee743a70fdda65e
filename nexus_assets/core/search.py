"""Horizon search (Nexus v2's "master ensemble"; ``docs/horizon-search.md``) in point-in-time form, vectorised.

For every requested date ``D`` of one asset, :func:`horizon_search` scores every candidate
configuration of the pairwise-slope signal (:mod:`nexus_assets.core.signals`) on walk-forward folds that end before
``D`` and returns the top of the ranking: the ``leaderboard`` table, whose rank 1 is the
configuration ``core.signals`` uses for ``D``'s "optimised" signal. Nexus v2 instead scored every
configuration once, in sample, on the last 30% of the whole history, so its choice for a date
depended on prices that came after it.

Definitions (the ones Nexus v2 leaves open are fixed here)
----------------------------------------------------------
- Input: the horizon_ensembles rows of ONE asset (``date, horizon, price`` and the columns of the
  within-horizon combinations). Observations ``t_0 < t_1 < ...`` are the distinct dates whose
  price - the first non-NaN ``price`` of the date's rows, in row order - is finite; prices must
  be > 0. The simulation starts at the frame's first observation (``r_0`` below), so a date's
  result depends on where the frame starts, never on rows after the date.
- A candidate configuration is (horizon subset ``S``, threshold, combination): ``S`` any set of
  at least two horizons among those *known* at ``D`` (horizons with a row dated within ``D``'s
  search window, from the observation before its first fold to ``D``), a threshold of
  ``thresholds`` and a combination of :data:`COMBINATIONS` (name -> column; ``ensemble`` is the
  quantile ensemble's ``forecast``).
- Signal at observation ``t`` (as :mod:`nexus_assets.core.signals` defines it): over the pairs ``i < j`` of ``S`` whose forecasts
  (the combination's column at ``(t, h)``) both exist - a row with a non-NaN value -, the slope
  ``F(t, h_j) - F(t, h_i)`` is bullish if > 0 and bearish if < 0; ``net_prob = (bullish -
  bearish) / pairs`` as a float division of the counts (0 with no pairs); the position is +1 if
  ``net_prob > threshold``, -1 if ``net_prob < -threshold``, else 0 - the same float operations as
  ``core.signals.slope_signal``, so the search's positions are the signal's.
- Daily returns (as :mod:`nexus_assets.core.trading` simulates them): ``r_0 = -c |pos_0|`` and ``r_i = pos_{i-1} (p_i / p_{i-1} - 1)
  - c |pos_i - pos_{i-1}|`` with ``c = cost_bps / 1e4``.
- Folds of ``D`` (observation ``d``): the usable returns are ``r_0 .. r_{d-1}``, realised strictly
  before ``D``. The folds are the last ``k = min(n_folds, d // fold_length)`` consecutive blocks
  of ``fold_length`` returns ending with ``r_{d-1}``; with ``k < min_folds`` no candidate is
  eligible and ``D`` has no leaderboard rows (warm-up). A date that is not an observation has no
  rows either.
- Fold Sharpe = mean / sample standard deviation (ddof 1) x ``sqrt(periods)``, and 0 when every
  return of the fold is equal (standard deviation 0). Objective = mean of the ``k`` fold Sharpes.
  Trades = the observations of the folds' span (``t_{d - k fold_length} .. t_{d-1}``) at which the
  position changes to a non-zero one (entries and flips; ``pos_{-1} = 0``). A candidate is
  eligible with ``trades >= min_trades``.
- Leaderboard: the ``top`` eligible candidates by objective, descending; ties go to fewer
  horizons, then the lower threshold, then the :data:`COMBINATIONS` order, then the ascending
  horizon tuple. ``mean_daily_return`` is the mean of the ``k * fold_length`` returns,
  ``fold_sharpes`` the fold Sharpes oldest first (comma-joined, 6 decimals), ``fold_start`` and
  ``fold_end`` the first and last observation of the folds' span, ``candidates`` the number of
  configurations evaluated for the date.
- Method: with at most ``max_exhaustive_horizons`` known horizons every subset is evaluated
  (``exhaustive``: ``2^H - H - 1`` subsets x thresholds x combinations). Beyond, a beam search per
  date (``beam``): size 2 evaluates every pair; each next size evaluates the subsets made by adding
  one known horizon to one of the ``beam_width`` best subsets of the previous size, "best" by the
  subset's best eligible objective over its thresholds and combinations (subsets without an
  eligible configuration last; ties by ascending horizon tuple); it ends with the full set. The
  leaderboard ranks every configuration the date's beam evaluated.

Every output for ``D`` depends only on rows dated on or before ``D``, never on which other dates
are requested, and only on ``D``'s search window: the ``n_folds * fold_length + 1`` observations
up to ``D`` (and the rows dated among them). Early in the history, with fewer observations
before ``D``, the number of folds counts the observations from the frame's first one, so pass the
asset's history from its start there (``nexus_assets.defs`` reads back by observations).

Implementation
--------------
Positions and returns do not depend on ``D``: they are computed once over the series for every
configuration, all subsets at once. Per combination, the pair sign matrix (observations x pairs,
``sign(slope)`` where both forecasts exist, else 0) and the availability matrix, multiplied by the
pair-by-subset incidence matrix, give ``bullish - bearish`` and ``pairs`` of every subset as exact
integers; ``net_prob`` is their float quotient, exactly as a per-date loop computes it. Fold
statistics are computed for every fold end from window sums of ``r`` and ``r^2`` built from
power-of-two block sums, so a window's sum depends only on the returns inside it: two
configurations with the same returns in a date's folds get bit-identical objectives and their tie
is broken by the rules above, never by rounding (cumulative-sum differences would not guarantee
that). Windows whose one-pass variance lost more than 8 significant digits are recomputed in two
passes; equal returns are detected exactly by counting changes. Entries are counted by integer
cumulative sums. Configurations are processed in chunks of subsets (bounded memory); each chunk
keeps per date only its top candidates, ties at the cut included, before the final ranking.

Cost: the series work is shared by every date of a call, so search a range of dates in one call
(10 horizons, all 24,312 configurations: about 1 s for a year of dates, about 0.2-0.3 s for a
single date on a 2-core machine). The simulation of a call starts one observation before its
earliest fold. A multi-date beam search evaluates the union of the dates' paths at each size,
which over a year approaches the exhaustive set (14 horizons: ~14,000 of 16,369 subsets); a single
date evaluates only its own path.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from nexus_assets.core.contract import LEADERBOARD, columns, typed_frame
from nexus_assets.core.signals import COMBINATIONS, format_horizons

__all__ = [
    "COMBINATIONS",
    "THRESHOLDS",
    "N_FOLDS",
    "FOLD_LENGTH",
    "MIN_FOLDS",
    "MIN_TRADES",
    "TOP",
    "MAX_EXHAUSTIVE_HORIZONS",
    "BEAM_WIDTH",
    "METHODS",
    "LEADERBOARD_COLUMNS",
    "EULER_GAMMA",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "horizon_search",
]

THRESHOLDS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
N_FOLDS = 5
FOLD_LENGTH = 30
MIN_FOLDS = 2
MIN_TRADES = 10
TOP = 20
MAX_EXHAUSTIVE_HORIZONS = 12
BEAM_WIDTH = 32
METHODS: tuple[str, ...] = ("exhaustive", "beam")
LEADERBOARD_COLUMNS: tuple[str, ...] = columns(LEADERBOARD)
EULER_GAMMA = 0.5772156649015329

_MAX_HORIZONS = 62  # subsets are int64 bit masks
_CHUNK_CELLS = 2_500_000  # (observations or dates) x configurations per chunk: a few 20 MB arrays
_CANCELLATION = 1e-8  # below this share of sum(r^2) left as variance, recompute it in two passes


def horizon_search(
    ensembles: pd.DataFrame,
    *,
    dates: Sequence[dt.date | pd.Timestamp | str] | None = None,
    periods: int,
    cost_bps: float,
    thresholds: Sequence[float] = THRESHOLDS,
    combinations: Mapping[str, str] | Sequence[str] = COMBINATIONS,
    n_folds: int = N_FOLDS,
    fold_length: int = FOLD_LENGTH,
    min_folds: int = MIN_FOLDS,
    min_trades: int = MIN_TRADES,
    top: int = TOP,
    max_exhaustive_horizons: int = MAX_EXHAUSTIVE_HORIZONS,
    beam_width: int = BEAM_WIDTH,
) -> pd.DataFrame:
    """The walk-forward horizon search of one asset: the leaderboard of every requested date.

    Parameters
    ----------
    ensembles:
        The horizon_ensembles rows of ONE asset over many dates: columns ``date, horizon, price``
        and the combinations' columns (extra columns are ignored), unique per (date, horizon).
        Forecasts may be NaN (absent); horizons may be missing on some dates.
    dates:
        The dates to search (default: every observation). Dates that are not observations, or
        still in the warm-up, get no rows. A date's rows never depend on the other dates.
    periods:
        Observations a year, to annualise the fold Sharpes (``core.periods.ANNUALIZATION``).
    cost_bps:
        Transaction cost per side in basis points, >= 0.
    thresholds, combinations:
        The candidate thresholds (distinct, in [0, 1)) and within-horizon combinations (a mapping
        name -> column in tie-break order, or names of :data:`COMBINATIONS`).
    n_folds, fold_length, min_folds, min_trades, top:
        Walk-forward folds (at most ``n_folds`` blocks of ``fold_length`` observations; at least
        ``min_folds`` needed), eligibility (``trades >= min_trades``) and leaderboard length.
    max_exhaustive_horizons, beam_width:
        Up to this many known horizons every subset is evaluated; beyond, the beam search keeps
        ``beam_width`` subsets per size.

    Returns
    -------
    pandas.DataFrame
        :data:`LEADERBOARD_COLUMNS`, sorted by ``date, rank`` (rank 1 = winner); see the module
        docstring. Dates are ``datetime64[ns]``; ``rank, n_horizons, n_folds, trades,
        candidates`` int64; ``horizons, combination, fold_sharpes, method`` str; the rest float64.
    """
    config = _settings(periods, cost_bps, thresholds, combinations, n_folds, fold_length, min_folds, min_trades, top,
                       max_exhaustive_horizons, beam_width)
    series = _series(ensembles, config)
    rows = _requested(series, dates, config)
    if len(rows) == 0:
        return _table(None)
    known = _known_masks(series, rows, config)
    parts = []
    for mask in np.unique(known):
        group = rows[known == mask]
        bits = _bits(int(mask), series.n_horizons)
        if len(bits) < 2:
            continue
        if len(bits) <= config.max_exhaustive_horizons:
            parts.append(_exhaustive(series, config, group, bits))
        else:
            parts.append(_beam(series, config, group, bits))
    return _leaderboard(series, config, parts)


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class _Settings:
    periods: int
    cost: float  # per side, as a fraction
    thresholds: np.ndarray  # ascending
    names: tuple[str, ...]  # combinations, tie-break order
    columns: tuple[str, ...]
    n_folds: int
    fold_length: int
    min_folds: int
    min_trades: int
    top: int
    max_exhaustive_horizons: int
    beam_width: int

    @property
    def per_subset(self) -> int:
        """Configurations of one horizon subset."""
        return len(self.names) * len(self.thresholds)


@dataclass(frozen=True)
class _Series:
    """The observations of the asset and the pairwise slope signs of every combination."""

    days: np.ndarray  # (T,) datetime64[ns] observation dates
    asset_return: np.ndarray  # (T,) p_i / p_{i-1} - 1; 0 at t_0 (multiplied by pos_{-1} = 0)
    horizons: np.ndarray  # (H,) ascending
    row_dates: tuple[np.ndarray, ...]  # (H,) each horizon's row dates, ascending (observation or not)
    pairs: np.ndarray  # (P, 2) horizon indices i < j
    # (2C, T, P): for combination c, [2c] the sign of F(t, h_j) - F(t, h_i) where both forecasts
    # exist (else 0) and [2c + 1] 1 where both exist; one stack so that one product per chunk
    # gives every count (each BLAS call costs a thread barrier, slow on a loaded machine)
    pair_terms: np.ndarray

    @property
    def n_horizons(self) -> int:
        return len(self.horizons)


def _integer(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _settings(periods, cost_bps, thresholds, combinations, n_folds, fold_length, min_folds, min_trades, top,
              max_exhaustive_horizons, beam_width) -> _Settings:
    if not (isinstance(cost_bps, (int, float, np.number)) and np.isfinite(cost_bps) and cost_bps >= 0):
        raise ValueError(f"cost_bps must be a finite number >= 0 (basis points per side), got {cost_bps!r}")
    levels = np.array([float(t) for t in thresholds], dtype="float64")
    if len(levels) == 0 or not ((levels >= 0) & (levels < 1)).all() or len(np.unique(levels)) != len(levels):
        raise ValueError(f"thresholds must be distinct numbers in [0, 1), got {tuple(thresholds)!r}")
    if isinstance(combinations, Mapping):
        named = dict(combinations)
    else:
        unknown = [n for n in combinations if n not in COMBINATIONS]
        if unknown or isinstance(combinations, str):
            raise ValueError(f"unknown combination(s) {unknown or combinations!r}; use names of {list(COMBINATIONS)} "
                             "or a mapping name -> column")
        named = {n: COMBINATIONS[n] for n in combinations}
    if not named or len(set(named)) != len(named):
        raise ValueError("combinations must name at least one distinct combination")
    n_folds = _integer("n_folds", n_folds, 1)
    min_folds = _integer("min_folds", min_folds, 1)
    if min_folds > n_folds:
        raise ValueError(f"min_folds ({min_folds}) must not exceed n_folds ({n_folds})")
    return _Settings(
        periods=_integer("periods", periods, 1),
        cost=float(cost_bps) / 1e4,
        thresholds=np.sort(levels),
        names=tuple(named),
        columns=tuple(named.values()),
        n_folds=n_folds,
        fold_length=_integer("fold_length", fold_length, 2),
        min_folds=min_folds,
        min_trades=_integer("min_trades", min_trades, 0),
        top=_integer("top", top, 1),
        max_exhaustive_horizons=_integer("max_exhaustive_horizons", max_exhaustive_horizons, 2),
        beam_width=_integer("beam_width", beam_width, 1),
    )


def _series(ensembles: pd.DataFrame, config: _Settings) -> _Series:
    needed = ["date", "horizon", "price", *dict.fromkeys(config.columns)]
    missing = [c for c in needed if c not in ensembles.columns]
    if missing:
        raise ValueError(f"ensembles lack column(s) {missing}; pass the horizon_ensembles table "
                         f"(or only the combinations it has)")
    date = pd.to_datetime(ensembles["date"]).to_numpy("datetime64[ns]")
    if np.isnat(date).any():
        raise ValueError("ensembles have rows without a date")
    horizon_values = pd.to_numeric(ensembles["horizon"], errors="coerce").to_numpy("float64", na_value=np.nan)
    if not (np.isfinite(horizon_values) & (horizon_values == np.round(horizon_values))).all():
        raise ValueError("horizons must be integers (the horizon_ensembles `horizon` column)")
    horizon_values = horizon_values.astype("int64")
    price = ensembles["price"].to_numpy("float64", na_value=np.nan)
    # observations: first non-NaN price of each date in row order
    order = np.argsort(date, kind="stable")
    days, day_code = np.unique(date, return_inverse=True)
    has_price = ~np.isnan(price[order])
    priced = order[has_price]
    first = np.full(len(days), np.nan)
    codes = day_code[priced]
    heads = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else codes
    first[codes[heads]] = price[priced][heads]
    observed = np.isfinite(first)
    if (first[observed] <= 0).any():
        raise ValueError("prices must be > 0")
    obs_code = np.full(len(days), -1)
    obs_code[observed] = np.arange(int(observed.sum()))
    horizons, h_code = np.unique(horizon_values, return_inverse=True)
    H = len(horizons)
    if H > _MAX_HORIZONS:
        raise ValueError(f"at most {_MAX_HORIZONS} horizons are supported, got {H}")
    T = int(observed.sum())
    cell = day_code.astype("int64") * max(H, 1) + h_code
    if len(cell) and np.bincount(cell).max() > 1:
        raise ValueError("ensembles have duplicate (date, horizon) rows; pass one asset's table, deduplicated")
    row_dates = tuple(np.sort(date[h_code == i]) for i in range(H))
    rows = obs_code[day_code]
    on_obs = rows >= 0
    pairs = np.array(list(itertools.combinations(range(H), 2)), dtype="int64").reshape(-1, 2)
    pair_terms = np.zeros((2 * len(config.columns), T, len(pairs)))
    for c, column in enumerate(config.columns):
        values = ensembles[column].to_numpy("float64", na_value=np.nan)
        if np.isinf(values).any():
            raise ValueError(f"column {column!r} has infinite forecasts; forecasts must be finite or NaN")
        F = np.full((T, H), np.nan)
        F[rows[on_obs], h_code[on_obs]] = values[on_obs]
        short, long = F[:, pairs[:, 0]], F[:, pairs[:, 1]]
        both = ~(np.isnan(short) | np.isnan(long))
        pair_terms[2 * c] = np.where(both, np.sign(np.where(both, long - short, 0.0)), 0.0)
        pair_terms[2 * c + 1] = both
    p = first[observed]
    asset_return = np.zeros(T)
    asset_return[1:] = p[1:] / p[:-1] - 1.0
    return _Series(days[observed], asset_return, horizons, row_dates, pairs, pair_terms)


def _requested(series: _Series, dates, config: _Settings) -> np.ndarray:
    """Observation indices of the requested dates that are past the warm-up, ascending."""
    if dates is None:
        rows = np.arange(len(series.days))
    else:
        if isinstance(dates, (str, dt.date, np.datetime64)):  # one date (pd.Timestamp is a dt.date)
            dates = [dates]
        wanted = np.unique(pd.to_datetime(pd.Index(list(dates))).to_numpy("datetime64[ns]"))
        rows = _matches(series.days, wanted)
    k = np.minimum(config.n_folds, rows // config.fold_length)
    return rows[k >= config.min_folds].astype("int64")


def _matches(days: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(days, wanted)
    ok = pos < len(days)
    ok[ok] = days[pos[ok]] == wanted[ok]
    return pos[ok]


def _known_masks(series: _Series, rows: np.ndarray, config: _Settings) -> np.ndarray:
    """Bit mask of the horizons with a row dated within each date's search window, from the
    observation before its first fold to the date (bit ``H - 1 - i`` = horizon i)."""
    H = series.n_horizons
    weights = np.left_shift(np.int64(1), (H - 1 - np.arange(H)).astype("int64"))
    ks = np.minimum(config.n_folds, rows // config.fold_length)
    since = series.days[np.maximum(rows - ks * config.fold_length - 1, 0)]
    until = series.days[rows]
    seen = np.stack([np.searchsorted(d, until, side="right") > np.searchsorted(d, since, side="left")
                     for d in series.row_dates], axis=1) if H else np.zeros((len(rows), 0), dtype=bool)
    return (seen * weights[None, :]).sum(axis=1).astype("int64")


def _bits(mask: int, H: int) -> np.ndarray:
    """Horizon indices (ascending) of a mask."""
    return np.array([i for i in range(H) if mask >> (H - 1 - i) & 1], dtype="int64")


# ---------------------------------------------------------------------------------------------
# evaluation of a set of subsets on a set of dates


@dataclass(frozen=True)
class _Found:
    """Candidates kept for the final ranking (each chunk's top per date, ties at the cut included)."""

    row: np.ndarray  # observation index d of the date
    mask: np.ndarray  # horizon subset
    combination: np.ndarray  # index into the settings' combinations
    threshold: np.ndarray  # index into the sorted thresholds
    objective: np.ndarray
    trades: np.ndarray
    mean_return: np.ndarray
    sharpes: np.ndarray  # (n, n_folds), NaN beyond the date's folds
    span_sharpe: np.ndarray  # per-observation Sharpe of the folds' span returns (not annualised)
    skew: np.ndarray  # skewness and (non-excess) kurtosis of those returns
    kurtosis: np.ndarray


@dataclass
class _Trials:
    """Per date: how many eligible configurations were tried, and the sum and sum of squares of
    their span Sharpe ratios (per observation): the selection the deflated Sharpe ratio corrects."""

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> _Trials:
        return cls(np.zeros(n, dtype="int64"), np.zeros(n), np.zeros(n))

    def add(self, eligible: np.ndarray, sharpe: np.ndarray) -> None:
        self.count += eligible.sum(axis=1)
        self.total += np.where(eligible, sharpe, 0.0).sum(axis=1)
        self.squares += np.where(eligible, sharpe * sharpe, 0.0).sum(axis=1)

    def variance(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (self.squares - self.total * self.total / self.count) / (self.count - 1)
        return np.where(self.count >= 2, np.maximum(var, 0.0), 0.0)


@dataclass(frozen=True)
class _Part:
    """The search of a group of dates that share their known horizons."""

    rows: np.ndarray
    candidates: np.ndarray  # configurations evaluated, per date
    method: str
    found: list[_Found]
    trials: _Trials  # per date of ``rows``


def _exhaustive(series: _Series, config: _Settings, rows: np.ndarray, bits: np.ndarray) -> _Part:
    weights = _weights(series, bits)
    masks = np.array([sum(int(w) for w in combo) for size in range(2, len(bits) + 1)
                      for combo in itertools.combinations(weights, size)], dtype="int64")
    trials = _Trials.zeros(len(rows))
    found, _ = _evaluate(series, config, rows, masks, trials)
    return _Part(rows, np.full(len(rows), len(masks) * config.per_subset, dtype="int64"), METHODS[0], found, trials)


def _beam(series: _Series, config: _Settings, rows: np.ndarray, bits: np.ndarray) -> _Part:
    """Beam search per date; each size evaluates the union of the dates' subsets at once.

    ``member[r, s]``: subset ``s`` of the level is on date ``r``'s own path; only those count for
    the date (its candidates, ranking and next beam), so a date's result never depends on the
    other dates in the run.
    """
    weights = _weights(series, bits)
    level = np.array([a | b for a, b in itertools.combinations(weights, 2)], dtype="int64")  # lexicographic order
    member = np.ones((len(rows), len(level)), dtype=bool)
    counts = np.zeros(len(rows), dtype="int64")
    found_all: list[_Found] = []
    trials = _Trials.zeros(len(rows))
    for size in range(2, len(bits) + 1):
        found, best = _evaluate(series, config, rows, level, trials, member)
        found_all += found
        counts += member.sum(axis=1) * config.per_subset
        if size == len(bits):
            break
        # the beam: best subset score first; NaN (not on the date's path) sorts last; stable keeps
        # the lexicographic order of the level among equal scores
        key = np.where(member, -best, np.nan)
        order = np.argsort(key, axis=1, kind="stable")[:, : config.beam_width]
        chosen = level[order]
        on_path = np.take_along_axis(member, order, axis=1)
        child = chosen[:, :, None] | weights[None, None, :]
        ok = on_path[:, :, None] & ((chosen[:, :, None] & weights[None, None, :]) == 0)
        union = np.unique(child[ok])  # ascending masks = descending lexicographic order
        level = union[::-1].copy()
        where = len(union) - 1 - np.searchsorted(union, child[ok])
        member = np.zeros((len(rows), len(level)), dtype=bool)
        member[np.broadcast_to(np.arange(len(rows))[:, None, None], child.shape)[ok], where] = True
    return _Part(rows, counts, METHODS[1], found_all, trials)


def _weights(series: _Series, bits: np.ndarray) -> np.ndarray:
    """The mask bit of each horizon index: the smallest horizon is the highest bit, so that among
    subsets of one size the ascending horizon tuple is the descending mask."""
    return np.left_shift(np.int64(1), (series.n_horizons - 1 - bits).astype("int64"))


def _evaluate(series: _Series, config: _Settings, rows: np.ndarray, masks: np.ndarray, trials: _Trials,
              member: np.ndarray | None = None) -> tuple[list[_Found], np.ndarray]:
    """Every configuration of ``masks`` on the dates ``rows``, a chunk of subsets at a time.

    Returns the candidates of every chunk and, per (date, subset), the subset's best eligible
    objective (-inf when none is eligible or the subset is not on the date's path).
    """
    L, per = config.fold_length, config.per_subset
    ks = np.minimum(config.n_folds, rows // L)
    T = int(rows.max())  # the dates use the returns r_0 .. r_{T-1}
    first_end = int((rows - (ks - 1) * L).min())
    # ... of which only those from the earliest fold on, and the position just before it
    base = max(0, first_end - L - 1)
    width = max(1, _CHUNK_CELLS // (max(T - base, len(rows)) * per))
    found = []
    best = np.full((len(rows), len(masks)), -np.inf)
    for lo in range(0, len(masks), width):
        chunk = masks[lo : lo + width]
        returns, entries, changes = _simulate(series, config, chunk, base, T)
        sharpe, fold_sum, fold_squares = _fold_statistics(returns, changes, L, first_end - base, config.periods)
        at = rows - first_end  # the fold ends of each date, relative to first_end
        objective = np.empty((len(rows), returns.shape[1]))
        for k in np.unique(ks):
            sel = ks == k
            acc = sharpe[at[sel] - (k - 1) * L].copy()  # oldest fold first, summed in order
            for j in range(1, k):
                acc += sharpe[at[sel] - (k - 1 - j) * L]
            objective[sel] = acc / k
        trades = entries[rows - base] - entries[rows - ks * L - base]
        eligible = trades >= config.min_trades
        if member is not None:
            eligible &= np.tile(member[:, lo : lo + width], (1, per))
        objective = np.where(eligible, objective, -np.inf)
        trials.add(eligible, _span_sharpe(fold_sum, fold_squares, at, ks, L))
        best[:, lo : lo + width] = objective.reshape(len(rows), per, len(chunk)).max(axis=1)
        found.append(_keep(config, rows, ks, chunk, objective, trades, sharpe, fold_sum, first_end, returns, base))
    return found, best


def _simulate(series: _Series, config: _Settings, masks: np.ndarray, base: int, T: int) -> tuple[np.ndarray, ...]:
    """Daily returns of every configuration of ``masks`` (columns ``(combination, threshold, subset)``)
    over ``t_base .. t_{T-1}`` (row 0 = ``t_base``), and the cumulative counts (from 0 before
    ``t_base``) of entries and of return changes.

    Positions before ``t_base`` are taken as 0, so the return, entry and change of ``t_base``
    itself are right only when ``base == 0``; callers use the rows after it.
    """
    short, long = series.pairs[:, 0], series.pairs[:, 1]
    H = series.n_horizons
    incidence = ((masks[None, :] >> (H - 1 - short)[:, None]) & (masks[None, :] >> (H - 1 - long)[:, None]) & 1)
    incidence = incidence.astype("float64")  # (pairs x subsets); the products below are exact counts
    n_thresholds = len(config.thresholds)
    terms = series.pair_terms[:, base:T]
    counts = (terms.reshape(-1, terms.shape[2]) @ incidence).reshape(terms.shape[0], T - base, len(masks))
    position = np.empty((T - base, len(config.names), n_thresholds, len(masks)), dtype="int8")
    for c in range(len(config.names)):
        difference, pairs = counts[2 * c], counts[2 * c + 1]  # bullish - bearish, pairs
        net = np.divide(difference, pairs, out=np.zeros_like(difference), where=pairs > 0)
        for k, level in enumerate(config.thresholds):
            position[:, c, k] = (net > level).astype("int8") - (net < -level)
    position = position.reshape(T - base, -1)
    previous = np.zeros_like(position)
    previous[1:] = position[:-1]
    returns = previous * series.asset_return[base:T, None]
    returns -= config.cost * np.abs(position - previous)
    entries = _cumulative((position != 0) & (position != previous))
    changed = np.zeros(returns.shape, dtype=bool)
    np.not_equal(returns[1:], returns[:-1], out=changed[1:])
    return returns, entries, _cumulative(changed)


def _cumulative(flags: np.ndarray) -> np.ndarray:
    out = np.zeros((flags.shape[0] + 1, flags.shape[1]), dtype="int32")
    np.cumsum(flags, axis=0, dtype="int32", out=out[1:])
    return out


def _span_sharpe(fold_sum: np.ndarray, fold_squares: np.ndarray, at: np.ndarray, ks: np.ndarray, L: int) -> np.ndarray:
    """(dates, configurations): the per-observation Sharpe of each date's folds' span (``k L``
    returns), from the folds' sums and sums of squares; 0 without dispersion."""
    s1 = np.zeros((len(at), fold_sum.shape[1]))
    s2 = np.zeros_like(s1)
    for j in range(int(ks.max(initial=0))):
        has = j < ks
        end = at[has] - (ks[has] - 1 - j) * L
        s1[has] += fold_sum[end]
        s2[has] += fold_squares[end]
    n = (ks * L).astype("float64")[:, None]
    mean = s1 / n
    m2 = s2 - s1 * mean
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(m2 / (n - 1))
        return np.where((m2 > _CANCELLATION * s2) & (std > 0), mean / std, 0.0)


def _fold_statistics(returns: np.ndarray, changes: np.ndarray, L: int, first_end: int,
                     periods: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sharpe, sum and sum of squares of the fold ``returns[e - L : e]`` for every end
    ``e = first_end .. len(returns)``."""
    x = returns[first_end - L :]
    n_ends = len(x) - L + 1
    s1 = _window_sums(x, L)
    s2 = _window_sums(x * x, L)
    mean = s1 / L
    m2 = s2 - s1 * mean  # sum of squared deviations, one pass
    flat = (changes[first_end:] - changes[first_end - L + 1 : first_end - L + 1 + n_ends]) == 0
    shaky = ~flat & (m2 <= _CANCELLATION * s2)
    if shaky.any():  # cancellation: two passes over those windows
        end, col = np.nonzero(shaky)
        window = x[end[:, None] + np.arange(L)[None, :], col[:, None]]
        m2[end, col] = ((window - mean[end, col][:, None]) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(m2 / (L - 1))
        sharpe = np.where(flat | ~(std > 0), 0.0, mean / std * np.sqrt(periods))
    return sharpe, s1, s2


def _window_sums(x: np.ndarray, L: int) -> np.ndarray:
    """``x[s] + ... + x[s + L - 1]`` for every start ``s``, from power-of-two block sums.

    A block of ``2w`` rows is the sum of its two halves; a window is the sum of the blocks of
    ``L``'s binary digits, largest first. Every operation reads only rows inside the window, so a
    window's sum depends on its values alone (unlike differences of cumulative sums).
    """
    n = len(x) - L + 1
    sizes = [1 << b for b in reversed(range(L.bit_length())) if L >> b & 1]
    blocks, level, width = {}, x, 1
    while True:
        if width in sizes:
            blocks[width] = level
        if width == sizes[0]:
            break
        level = level[:-width] + level[width:]
        width *= 2
    total = blocks[sizes[0]][:n].copy()
    offset = sizes[0]
    for size in sizes[1:]:
        total += blocks[size][offset : offset + n]
        offset += size
    return total


def _keep(config: _Settings, rows: np.ndarray, ks: np.ndarray, masks: np.ndarray, objective: np.ndarray,
          trades: np.ndarray, sharpe: np.ndarray, fold_sum: np.ndarray, first_end: int, returns: np.ndarray,
          base: int) -> _Found:
    """Each date's ``top`` best eligible configurations of the chunk, every tie at the cut included."""
    n = objective.shape[1]
    keep = objective > -np.inf
    if n > config.top:
        cut = np.partition(objective, n - config.top, axis=1)[:, n - config.top]  # the top-th largest
        keep &= objective >= cut[:, None]
    r, col = np.nonzero(keep)
    L, k = config.fold_length, ks[r]
    sharpes = np.full((len(r), config.n_folds), np.nan)
    total = np.zeros(len(r))
    at = rows[r] - first_end
    for j in range(config.n_folds):
        has = j < k
        end = at[has] - (k[has] - 1 - j) * L
        sharpes[has, j] = sharpe[end, col[has]]
        total[has] += fold_sum[end, col[has]]
    combination, threshold = np.divmod(col // len(masks), len(config.thresholds))
    span, skew, kurtosis = np.full(len(r), np.nan), np.full(len(r), np.nan), np.full(len(r), np.nan)
    for k_value in np.unique(k):  # the kept configurations' span returns, in two passes
        sel = np.flatnonzero(k == k_value)
        span_rows = (rows[r[sel]] - k_value * L - base)[:, None] + np.arange(k_value * L)[None, :]
        span[sel], skew[sel], kurtosis[sel] = _moments(returns[span_rows, col[sel][:, None]])
    return _Found(rows[r], masks[col % len(masks)], combination, threshold, objective[r, col], trades[r, col],
                  total / (k * L), sharpes, span, skew, kurtosis)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: Sharpe (mean / sample std), skewness and kurtosis (central moments, non-excess)."""
    mean = x.mean(axis=1, keepdims=True)
    dev = x - mean
    m2 = (dev * dev).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(m2 * x.shape[1] / (x.shape[1] - 1))
        sharpe = np.where(sd > 0, mean[:, 0] / sd, 0.0)
        skew = np.where(m2 > 0, (dev**3).mean(axis=1) / m2**1.5, np.nan)
        kurtosis = np.where(m2 > 0, (dev**4).mean(axis=1) / (m2 * m2), np.nan)
    return sharpe, skew, kurtosis


def expected_max_sharpe(trials: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """The Sharpe ratio the best of ``trials`` zero-skill strategies reaches by luck (Bailey and
    Lopez de Prado, 2014): ``sqrt(V) ((1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e)))`` with ``V`` the
    variance of the trials' Sharpe ratios, ``N`` their number and ``g`` Euler's constant; 0 for
    one trial (nothing was selected)."""
    n = np.asarray(trials, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (1 - EULER_GAMMA) * special.ndtri(1 - 1 / n) + EULER_GAMMA * special.ndtri(1 - 1 / (n * np.e))
    return np.where(n >= 2, np.sqrt(variance) * z, 0.0)


def deflated_sharpe_ratio(sharpe: np.ndarray, benchmark: np.ndarray, observations: np.ndarray, skew: np.ndarray,
                          kurtosis: np.ndarray) -> np.ndarray:
    """Probability that the true Sharpe ratio exceeds ``benchmark`` (the expected maximum of the
    trials), given the estimate ``sharpe`` on ``observations`` returns with that skewness and
    (non-excess) kurtosis: ``Z((SR - SR0) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))``
    (Bailey and Lopez de Prado, 2014). All Sharpe ratios per observation, not annualised; NaN
    where the returns have no dispersion."""
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe * sharpe
        z = (sharpe - benchmark) * np.sqrt(observations - 1) / np.sqrt(spread)
    return np.where(spread > 0, special.ndtr(z), np.nan)


# ---------------------------------------------------------------------------------------------
# output


def _leaderboard(series: _Series, config: _Settings, parts: list[_Part]) -> pd.DataFrame:
    found = [f for part in parts for f in part.found]
    if not found:
        return _table(None)
    merged = {name: np.concatenate([getattr(f, name) for f in found]) for name in _Found.__dataclass_fields__}
    size = _popcount(merged["mask"])
    order = np.lexsort((-merged["mask"], merged["combination"], merged["threshold"], size, -merged["objective"],
                        merged["row"]))
    merged = {name: values[order] for name, values in merged.items()}
    row = merged["row"]
    start = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    rank = np.arange(len(row)) - np.repeat(start, np.diff(np.r_[start, len(row)]))
    top = rank < config.top
    merged = {name: values[top] for name, values in merged.items()}
    rank, row = rank[top] + 1, merged["row"]
    candidates = dict(zip(np.concatenate([p.rows for p in parts]).tolist(),
                          np.concatenate([p.candidates for p in parts]).tolist()))
    eligible = dict(zip(np.concatenate([p.rows for p in parts]).tolist(),
                        np.concatenate([p.trials.count for p in parts]).tolist()))
    variance = dict(zip(np.concatenate([p.rows for p in parts]).tolist(),
                        np.concatenate([p.trials.variance() for p in parts]).tolist()))
    method = {int(r): p.method for p in parts for r in p.rows}
    names = {int(m): format_horizons(series.horizons[_bits(int(m), series.n_horizons)])
             for m in np.unique(merged["mask"])}
    ks = np.minimum(config.n_folds, row // config.fold_length)
    trials = np.array([eligible[int(r)] for r in row], dtype="int64")
    benchmark = expected_max_sharpe(trials, np.array([variance[int(r)] for r in row]))
    annual = np.sqrt(config.periods)
    deflated = deflated_sharpe_ratio(merged["span_sharpe"], benchmark, (ks * config.fold_length).astype("float64"),
                                     merged["skew"], merged["kurtosis"])
    records = {
        "date": series.days[row],
        "rank": rank,
        "horizons": [names[int(m)] for m in merged["mask"]],
        "n_horizons": _popcount(merged["mask"]),
        "threshold": config.thresholds[merged["threshold"]],
        "combination": [config.names[c] for c in merged["combination"]],
        "objective": merged["objective"],
        "fold_sharpes": [",".join(f"{s:.6f}" for s in values[:k]) for values, k in zip(merged["sharpes"], ks)],
        "n_folds": ks,
        "trades": merged["trades"],
        "mean_daily_return": merged["mean_return"],
        "fold_start": series.days[row - ks * config.fold_length],
        "fold_end": series.days[row - 1],
        "candidates": [candidates[int(r)] for r in row],
        "method": [method[int(r)] for r in row],
        "eligible": trials,
        "span_sharpe": merged["span_sharpe"] * annual,
        "expected_max_sharpe": benchmark * annual,
        "deflated_sharpe": deflated,
    }
    return _table(records)


def _popcount(masks: np.ndarray) -> np.ndarray:
    return sum((masks >> b) & 1 for b in range(_MAX_HORIZONS)).astype("int64")


def _table(records: dict[str, object] | None) -> pd.DataFrame:
    return typed_frame(records, LEADERBOARD).reset_index(drop=True)
