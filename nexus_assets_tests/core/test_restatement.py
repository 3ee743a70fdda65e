"""``diff_rows`` against a slow, obviously-correct reference (dicts keyed by the contract key)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import QML_KEY, coerce_qml_rows
from nexus_assets.core.restatement import day_hashes, diff_rows, rows_sha256
from nexus_assets.qml.synthetic import SyntheticProject


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "symbol": pd.array([f"50{i % 3}1.0_{100000 + i}" for i in range(n)], dtype="str"),
        "time": np.full(n, np.datetime64("2025-01-04", "ns")),
        "n_predict": (np.arange(n) % 3 + 1).astype("int64"),
        "close_predict": rng.normal(100, 2, n),
        "target_var_price": np.full(n, 100.0),
        "yn_p": rng.integers(0, 2, n).astype("float64"),
        "yn_actual": np.where(rng.random(n) < 0.2, np.nan, 1.0),
    })
    return frame


def naive(old: pd.DataFrame, new: pd.DataFrame) -> tuple[int, int, int]:
    def by_key(frame):
        return {tuple(r[k] for k in QML_KEY): r for r in frame.to_dict("records")}

    def same(a, b):
        return (a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    before, after = by_key(old), by_key(new)
    shared = [c for c in new.columns if c in old.columns and c not in QML_KEY]
    changed = sum(any(not same(before[k][c], after[k][c]) for c in shared) for k in before.keys() & after.keys())
    return len(after.keys() - before.keys()), len(before.keys() - after.keys()), changed


@pytest.mark.parametrize("seed", range(12))
def test_counts_match_the_reference_on_random_edits(seed):
    rng = np.random.default_rng(seed)
    old = rows(60, seed)
    new = old.copy()
    touched = rng.choice(len(new), size=int(rng.integers(0, 10)), replace=False)
    for i in touched:
        column = rng.choice(["close_predict", "yn_p", "yn_actual", "target_var_price"])
        new.loc[i, column] = np.nan if column == "yn_actual" and rng.random() < 0.5 else float(rng.normal(50, 1))
    dropped = rng.choice(len(new), size=int(rng.integers(0, 5)), replace=False)
    new = new.drop(index=dropped)
    extra = rows(int(rng.integers(0, 4)), seed + 100).assign(symbol=lambda f: [f"9{i}.0_1" for i in range(len(f))])
    new = pd.concat([new, extra], ignore_index=True).sample(frac=1, random_state=seed).reset_index(drop=True)

    diff = diff_rows(old, new, old_sha256="a" * 64, new_sha256="b" * 64)
    assert (diff.rows_added, diff.rows_removed, diff.rows_changed) == naive(old, new)
    assert (diff.old_rows, diff.new_rows) == (len(old), len(new))


def test_identical_rows_in_another_order_are_no_row_change():
    old = rows(20, 1)
    diff = diff_rows(old, old.iloc[::-1], old_sha256="a" * 64, new_sha256="b" * 64)
    assert (diff.rows_added, diff.rows_removed, diff.rows_changed) == (0, 0, 0)
    assert "the same rows in another order" in diff.summary()


def test_examples_show_old_and_new_values_and_columns_added():
    old = rows(10, 2)
    new = old.copy()
    new.loc[3, "close_predict"] = 1.5
    new.loc[4, "yn_actual"] = np.nan if not np.isnan(old.loc[4, "yn_actual"]) else 1.0
    new = new.assign(model_note="v2").drop(index=7)
    diff = diff_rows(old, new, old_sha256="0" * 64, new_sha256="f" * 64, examples=5)
    assert diff.columns_added == ("model_note",) and diff.columns_removed == ()
    changed = [e for e in diff.examples if e["change"] == "changed"]
    assert changed[0]["symbol"] == old.loc[3, "symbol"] and changed[0]["time"] == "2025-01-04"
    assert changed[0]["fields"] == {"close_predict": {"old": old.loc[3, "close_predict"], "new": 1.5}}
    assert [e["symbol"] for e in diff.examples if e["change"] == "removed"] == [old.loc[7, "symbol"]]
    metadata = diff.as_metadata()
    assert metadata["old_payload_sha256"] == "0" * 64 and metadata["rows_removed"] == 1 and metadata["rows_changed"] == 2
    assert "columns added model_note" in diff.summary() and "0000000000" in diff.summary()
    import json

    json.dumps(metadata)  # JSON-ready for Dagster metadata


def test_missing_old_file_and_an_empty_old_day():
    new = rows(5, 3)
    gone = diff_rows(None, new, old_sha256="a" * 64, new_sha256="b" * 64)
    assert gone.old_rows is None and gone.rows_added == 5 and "missing" in gone.summary()
    empty = diff_rows(new.iloc[0:0], new, old_sha256="a" * 64, new_sha256="b" * 64)
    assert (empty.rows_added, empty.rows_removed, empty.rows_changed) == (5, 0, 0)


# --- payload hashes: many days at once equal each day's own hash ----------------------------------


def _qdt_like_rows() -> pd.DataFrame:
    start, end = dt.date(2025, 1, 1), dt.date(2025, 2, 15)
    project = SyntheticProject(8101, horizons=(1, 3, 5), models_per_horizon=40, seed=31, start=start, end=end)
    return coerce_qml_rows(project.rows(start, end))


def test_day_hashes_fall_back_for_nested_values_and_still_agree():
    rows = _qdt_like_rows().copy()
    rows["extra"] = pd.Series([{"k": i % 3} if i % 7 == 0 else None for i in range(len(rows))], dtype=object)
    positions = {stamp.date(): pos for stamp, pos in rows.groupby("time", sort=True).indices.items()}
    got = day_hashes(rows, positions)
    for day, pos in positions.items():
        assert got[day] == rows_sha256(rows.take(pos).reset_index(drop=True))


def test_day_hashes_tell_a_changed_value_and_a_changed_order():
    rows = _qdt_like_rows()
    positions = {stamp.date(): pos for stamp, pos in rows.groupby("time", sort=True).indices.items()}
    day, pos = next(iter(positions.items()))
    before = day_hashes(rows, positions)[day]
    changed = rows.copy()
    changed.loc[pos[0], "close_predict"] = np.nextafter(changed.loc[pos[0], "close_predict"], np.inf)
    assert day_hashes(changed, positions)[day] != before
    assert day_hashes(rows, {day: pos[::-1]})[day] != before
