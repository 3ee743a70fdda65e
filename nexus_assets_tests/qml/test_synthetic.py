import datetime as dt

import pandas as pd
import pytest

from nexus_assets.core.contract import validate_qml_rows
from nexus_assets.qml.synthetic import SyntheticProject


def project(**kw):
    args = dict(horizons=(1, 2, 3), models_per_horizon=50, seed=3, start=dt.date(2025, 1, 1), end=dt.date(2025, 3, 31))
    args.update(kw)
    return SyntheticProject(77, **args)


def test_contract_and_scale():
    rows = project().rows(dt.date(2025, 1, 1), dt.date(2025, 1, 31))
    assert validate_qml_rows(rows).passed
    assert rows["time"].nunique() == 31  # crypto: every day
    per_day = rows.groupby(["time", "n_predict"]).size()
    assert per_day.max() == 50 and per_day.min() >= 45  # a few models missing some days
    assert rows["symbol"].str.match(r"^\d+\.0_\d+$").all()


def test_deterministic_and_range_independent():
    a, b = project(), project()
    year = a.rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31))
    pd.testing.assert_frame_equal(year, b.rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31)))
    day = pd.Timestamp("2025-02-10")
    alone = a.rows(day.date(), day.date())
    pd.testing.assert_frame_equal(alone, year[year["time"] == day].reset_index(drop=True))
    assert not year.equals(project(seed=4).rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31)))


def test_exchange_calendar_and_watermark():
    p = project(calendar="exchange", end=dt.date(2025, 1, 12))  # a Sunday
    rows = p.rows(dt.date(2025, 1, 1), dt.date(2025, 1, 31))
    assert sorted(rows["time"].dt.dayofweek.unique()) == [0, 1, 2, 3, 4]
    assert p.watermark() == pd.Timestamp("2025-01-10")
    assert rows["time"].max() == pd.Timestamp("2025-01-10")


def test_models_metadata():
    models = project().models()
    assert len(models) == 150 and models["symbol"].is_unique
    assert set(models.columns) >= {"symbol", "parent", "algorithm", "horizon", "training_window", "code_version"}


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        project(models_per_horizon=0)
