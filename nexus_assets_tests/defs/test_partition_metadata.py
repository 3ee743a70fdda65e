"""Per-partition metadata computed for a whole run at once equals the same facts computed
partition by partition (the obviously-correct references below), on seeded QDT-like data."""

import datetime as dt

import pandas as pd
import pytest

from nexus_assets.core.contract import coerce_qml_rows, empty_qml_rows
from nexus_assets.core.restatement import rows_sha256
from nexus_assets.defs.ingest import _day_facts
from nexus_assets.qml.sources import QMLPull
from nexus_assets.qml.synthetic import SyntheticProject

START, END = dt.date(2025, 1, 1), dt.date(2025, 2, 15)


def _pull(**kwargs) -> QMLPull:
    project = SyntheticProject(8101, horizons=(1, 3, 5), models_per_horizon=40, seed=31, start=START, end=END, **kwargs)
    rows = coerce_qml_rows(project.rows(START, END))
    days = tuple(START + dt.timedelta(days=i) for i in range((END - START).days + 4))  # 3 days past the data
    return QMLPull(project_id=8101, source="synthetic", rows=rows, watermark=None, contract_version="1", days=days)


def _reference_day_facts(rows: pd.DataFrame) -> dict:
    """What the asset computed per day before: on each day's own frame."""
    return (len(rows), int(rows["symbol"].nunique()), sorted(int(h) for h in rows["n_predict"].unique()), rows_sha256(rows))


def test_day_facts_equal_each_days_own_facts_on_qdt_like_rows():
    pull = _pull()
    by_day = pull.by_day()
    facts = _day_facts(pull.rows)
    assert sum(len(r) == 0 for r in by_day.values()) > 0
    for day, rows in by_day.items():
        if rows.empty:
            assert day not in facts
            continue
        assert tuple(facts[day]) == _reference_day_facts(rows), day
    empty = _reference_day_facts(empty_qml_rows())
    from nexus_assets.defs.ingest import _NO_ROWS

    assert tuple(_NO_ROWS) == empty


# --- the later steps: references are the per-day implementations the assets used before ----------

LONG_START, LONG_DAYS = dt.date(2025, 1, 1), 230


def _reference_slices(day_slices: pd.DataFrame) -> dict:
    per_horizon = day_slices.groupby("horizon")["symbol"].nunique()
    return {
        "rows": len(day_slices),
        "horizons": [int(h) for h in per_horizon.index],
        "models_per_horizon": {str(h): int(n) for h, n in per_horizon.items()},
        "price": float(day_slices["price"].iloc[0]) if len(day_slices) else None,
    }


def _reference_ensembles(rows: pd.DataFrame, mode: str) -> dict:
    return {
        "mode": mode,
        "rows": len(rows),
        "horizons": [int(h) for h in rows["horizon"]],
        "models_per_horizon": {str(int(h)): int(n) for h, n in zip(rows["horizon"], rows["n_models"])},
        "winners_per_strategy": {str(k): int(v) for k, v in rows["strategy"].value_counts().sort_index().items()},
    }


def _reference_search(board: pd.DataFrame) -> dict:
    if board.empty:
        return {"winner": "none (not enough folds or trades yet: the optimised signal uses the raw configuration)",
                "candidates_eligible": 0}
    best = board.iloc[0]
    columns = ["rank", "horizons", "threshold", "combination", "objective", "deflated_sharpe", "trades"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in board.head(10)[columns].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return {
        "winner": f"horizons {best['horizons']} | threshold {best['threshold']:g} | {best['combination']}",
        "objective_mean_fold_sharpe": float(best["objective"]),
        "deflated_sharpe": None if pd.isna(best["deflated_sharpe"]) else float(best["deflated_sharpe"]),
        "eligible_candidates": int(best["eligible"]),
        "trades_in_folds": int(best["trades"]),
        "folds": int(best["n_folds"]),
        "candidates": int(best["candidates"]),
        "method": str(best["method"]),
        "leaderboard": "\n".join(lines),
    }


def _reference_signals(signals: pd.DataFrame) -> dict:
    if signals.empty:
        return {"signal": "none (no ensemble forecast on this date)"}
    rows = {r.variant: r for r in signals.itertuples(index=False)}
    raw, best = rows["raw"], rows["optimised"]
    return {
        "signal": raw.signal,
        "net_prob": float(raw.net_prob),
        "tier": raw.tier,
        "pairs": int(raw.pairs),
        "horizons": raw.horizons,
        "optimised_signal": best.signal,
        "optimised_net_prob": float(best.net_prob),
        "optimised_config": f"horizons {best.horizons} | threshold {best.threshold:g} | {best.combination} "
                            f"({best.config_source})",
        "winner_deflated_sharpe": None if pd.isna(best.deflated_sharpe) else float(best.deflated_sharpe),
    }


def _reference_trades(tables: dict) -> str:
    trades = tables["trades"]
    recent = trades[(trades["basis"] == "point_in_time") & (trades["signal"] == "raw")].tail(30)
    lines = ["| entry | exit | direction | entry price | exit price | net return | status |", "|---|---|---|---|---|---|---|"]
    for t in recent.itertuples(index=False):
        exit_date = "" if pd.isna(t.exit_date) else pd.Timestamp(t.exit_date).date().isoformat()
        lines.append(f"| {pd.Timestamp(t.entry_date).date().isoformat()} | {exit_date} | {t.direction} | "
                     f"{t.entry_price:.4f} | {t.exit_price:.4f} | {t.net_return:.4%} | {t.status} |")
    return "\n".join(lines)


def _plain(metadata: dict) -> dict:
    return {k: getattr(v, "value", getattr(v, "md_str", v)) for k, v in metadata.items()}


@pytest.fixture(scope="module")
def run_tables():
    """A QDT-like asset's tables for 230 days, through the core as the assets call it (the search
    has winners in the last ~80 days), plus 3 days past the data (no rows)."""
    from nexus_assets.core.contract import HORIZON_SLICES
    from nexus_assets.core.ensembles import LOOKBACK, ensembles_with_combinations
    from nexus_assets.core.metrics import record
    from nexus_assets.core.search import FOLD_LENGTH, N_FOLDS, horizon_search
    from nexus_assets.core.signals import daily_signals
    from nexus_assets.core.slicing import slice_horizons

    end = LONG_START + dt.timedelta(days=LONG_DAYS - 1)
    project = SyntheticProject(8101, horizons=(1, 3, 5, 8), models_per_horizon=30, seed=44, start=LONG_START, end=end)
    rows = coerce_qml_rows(project.rows(LONG_START, end))
    days = [LONG_START + dt.timedelta(days=i) for i in range(LONG_DAYS + 3)]
    slices = HORIZON_SLICES.validate(slice_horizons(rows, LONG_START))
    ens = ensembles_with_combinations(slices, mode="point_in_time", lookback=LOOKBACK, dates=days)
    board = horizon_search(ens, dates=days, periods=365, cost_bps=10.0, n_folds=N_FOLDS, fold_length=FOLD_LENGTH)
    sig = daily_signals(ens, threshold=0.0, winners=board[board["rank"] == 1], min_deflated_sharpe=0.0)
    records = record(sig["signals"], as_of=days[-40:], calendar="crypto", cost_bps=10.0, horizons=(1, 3, 5, 8))
    return days, slices, ens, board, sig["signals"], records


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_run_level_metadata_equals_each_days_own(run_tables):
    from nexus_assets.defs.ensembles import _metadata_by_day as ensemble_facts
    from nexus_assets.defs.ingest import _slice_facts
    from nexus_assets.defs.partitions import split_by_day
    from nexus_assets.defs.search import _metadata_by_day as search_facts
    from nexus_assets.defs.signals import _metadata_by_day as signal_facts

    days, slices, ens, board, signals, _ = run_tables
    assert (board["rank"] == 1).sum() > 50 and signals["config_source"].nunique() >= 2  # winners, and fallbacks
    facts = _slice_facts(slices)
    for day, rows in split_by_day(slices, days).items():
        per_horizon, price = facts.get(day, ([], None))
        got = {"rows": len(rows), "horizons": [h for h, _ in per_horizon],
               "models_per_horizon": {str(h): n for h, n in per_horizon}, "price": price}
        assert got == _reference_slices(rows), day
    for name, fast, frame, reference in (
        ("ensembles", lambda f, d: ensemble_facts(f, d, "point_in_time"), ens, lambda r: _reference_ensembles(r, "point_in_time")),
        ("search", search_facts, board, _reference_search),
        ("signals", signal_facts, signals, _reference_signals),
    ):
        got = fast(frame, days)
        for day, rows in split_by_day(frame, days).items():
            assert _plain(got[day]) == reference(rows), (name, day)


def test_trades_table_equals_the_filtered_frames(run_tables):
    from nexus_assets.defs.metrics import _trades_markdown

    *_, records = run_tables
    seen: dict = {}
    assert any(len(r["trades"]) > 30 for r in records.values())
    for day, tables in records.items():
        assert _trades_markdown(tables["trades"], seen) == _reference_trades(tables), day
