"""``horizon_search``: the point-in-time grid search (``docs/horizon-search.md``), one leaderboard per date.

Reads a trailing window of ``horizon_ensembles`` counted in observations (the folds and the
observation before them: ``n_folds * fold_length + 1`` priced dates before the run's first date,
further back than the mapped calendar window when upstream has gaps); a range run searches all its
dates of one asset in one call, with the same result for each date as a run of that date alone.
"""

# No `from __future__ import annotations`: Dagster reads the context type hints at definition time.

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, MetadataValue, asset

from nexus_assets.catalog import Catalog
from nexus_assets.core import contract
from nexus_assets.core.contract import empty_frame
from nexus_assets.core.periods import calendar_days, periods_per_year
from nexus_assets.core.search import FOLD_LENGTH, N_FOLDS
from nexus_assets.core.search import horizon_search as search_horizons
from nexus_assets.defs.ensembles import HORIZON_ENSEMBLES
from nexus_assets.defs.metadata import attach_partition_metadata
from nexus_assets.defs.partitions import (
    date_window_mapping,
    days_by_asset,
    partition_key,
    priced_observations,
    split_by_day,
)
from nexus_assets.defs.steps import step_asset_args
from nexus_assets.defs.storage import TABLES_METADATA, PartitionFrames

__all__ = ["HORIZON_SEARCH", "SEARCH_TABLES", "N_FOLDS", "FOLD_LENGTH", "build_search_assets", "search_window_days"]

HORIZON_SEARCH = "horizon_search"
SEARCH_TABLES = ("leaderboard",)


def search_window_days(catalog: Catalog, n_folds: int = N_FOLDS, fold_length: int = FOLD_LENGTH) -> int:
    """Calendar days of ensembles a date's search reads: every fold, the observation before the
    first fold (its return needs the previous price and position) and a margin."""
    return max(calendar_days(n_folds * fold_length + 2, entry.calendar) for entry in catalog.assets)


def build_search_assets(catalog: Catalog, partitions_def) -> list:
    history = search_window_days(catalog)

    @asset(
        name=HORIZON_SEARCH,
        **step_asset_args(partitions_def),
        metadata={TABLES_METADATA: list(SEARCH_TABLES)},
        ins={
            "horizon_ensembles": AssetIn(
                key=HORIZON_ENSEMBLES,
                partition_mapping=date_window_mapping(history),
                metadata={"allow_missing_partitions": True},
            )
        },
        description=(
            "Horizon search (Nexus v2 section 6, point in time): for each date, every horizon subset of size "
            ">= 2 (beam search beyond 12 horizons) x thresholds 0..0.5 x within-horizon combination (quantile "
            f"ensemble, raw mean, median, lowest-variance models), scored by the mean Sharpe over {N_FOLDS} "
            f"walk-forward folds of {FOLD_LENGTH} observations that end before the date, at least 10 trades. "
            "Table `leaderboard`: the top 20 (rank 1 is the winner the optimised signal uses). "
            f"Reads {N_FOLDS * FOLD_LENGTH + 1} priced observations of horizon_ensembles before the run's first date "
            f"(mapped: {history} days, further back when upstream has gaps)."
        ),
    )
    def horizon_search(context: AssetExecutionContext, horizon_ensembles: PartitionFrames) -> dict:
        outputs: dict[str, dict[str, pd.DataFrame]] = {}
        metadata: dict[str, dict] = {}
        for key, days in days_by_asset(context.partition_keys).items():
            entry = catalog[key]
            ensembles = horizon_ensembles.history(key, days, before=priced_observations(N_FOLDS * FOLD_LENGTH + 1))
            board = search_horizons(ensembles if ensembles is not None else empty_frame(contract.HORIZON_ENSEMBLES), dates=days,
                                    periods=periods_per_year(entry.calendar), cost_bps=entry.cost_bps,
                                    n_folds=N_FOLDS, fold_length=FOLD_LENGTH)
            facts = _metadata_by_day(board, days)
            for day, rows in split_by_day(board, days).items():
                pk = partition_key(key, day)
                outputs[pk] = {"leaderboard": rows}
                metadata[pk] = facts[day]
        attach_partition_metadata(context, metadata)
        return outputs

    return [horizon_search]


_TABLE_COLUMNS = ["rank", "horizons", "threshold", "combination", "objective", "deflated_sharpe", "trades"]
_WINNER_COLUMNS = ("horizons", "threshold", "combination", "objective", "deflated_sharpe", "eligible", "trades", "n_folds",
                   "candidates", "method")
_NO_WINNER = {"winner": "none (not enough folds or trades yet: the optimised signal uses the raw configuration)",
              "candidates_eligible": 0}


def _metadata_by_day(board: pd.DataFrame, days) -> dict:
    """Each day's metadata (its winner and its top 10 as a table) from the run's whole leaderboard:
    every row's table line is formatted once, in one pass over plain columns, and a day's table is
    its first ten lines (per-day ``head``/``itertuples`` cost ~5 ms a partition); equal to
    computing it on each day's rows (tested)."""
    values = {c: board[c].tolist() for c in {*_TABLE_COLUMNS, *_WINNER_COLUMNS}}
    lines = ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
             for row in zip(*(values[c] for c in _TABLE_COLUMNS))]
    header = ["| " + " | ".join(_TABLE_COLUMNS) + " |", "|" + "---|" * len(_TABLE_COLUMNS)]
    positions: dict = {}
    for i, stamp in enumerate(board["date"].tolist()):
        positions.setdefault(stamp.date(), []).append(i)
    out = {}
    for day in days:
        if day not in positions:
            out[day] = dict(_NO_WINNER)
            continue
        first = positions[day][0]
        best = {c: values[c][first] for c in _WINNER_COLUMNS}
        out[day] = {
            "winner": f"horizons {best['horizons']} | threshold {best['threshold']:g} | {best['combination']}",
            "objective_mean_fold_sharpe": float(best["objective"]),
            "deflated_sharpe": None if pd.isna(best["deflated_sharpe"]) else float(best["deflated_sharpe"]),
            "eligible_candidates": int(best["eligible"]),
            "trades_in_folds": int(best["trades"]),
            "folds": int(best["n_folds"]),
            "candidates": int(best["candidates"]),
            "method": str(best["method"]),
            "leaderboard": MetadataValue.md("\n".join(header + [lines[i] for i in positions[day][:10]])),
        }
    return out
