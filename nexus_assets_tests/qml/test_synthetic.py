"""The synthetic generator has the traits of real QDT tables (as measured on project 1860), deterministically."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import validate_qml_rows
from nexus_assets.qml.synthetic import CLEAN_TRAITS, SyntheticProject

START, END = dt.date(2025, 1, 1), dt.date(2025, 12, 31)


def project(**kw):
    args = dict(horizons=(1, 2, 3), models_per_horizon=50, seed=3, start=dt.date(2025, 1, 1), end=dt.date(2025, 3, 31))
    args.update(kw)
    return SyntheticProject(77, **args)


@pytest.fixture(scope="module")
def year():
    p = project(models_per_horizon=300, end=END, start_price=90_000.0)
    return p, p.rows(START, END)


def test_contract_and_scale():
    rows = project().rows(dt.date(2025, 1, 1), dt.date(2025, 1, 31))
    assert validate_qml_rows(rows).passed
    assert rows["time"].nunique() == 31  # crypto: every day
    per_day = rows.groupby(["time", "n_predict"])["symbol"].nunique()
    assert per_day.max() <= 50 and per_day.median() >= 40  # a few models missing some days, some not born yet


def test_parents_children_and_bare_parent_symbols(year):
    p, rows = year
    for _h, group in rows.groupby("n_predict"):
        symbols = pd.Series(group["symbol"].unique())
        parents = symbols.str.split("_").str[0].unique()
        assert 2 <= len(parents) <= 4  # each horizon has its own 2 to 4 parent models
        assert symbols.isin(parents).sum() == len(parents)  # the bare parent id is a symbol too
        assert symbols.str.match(r"^\d+\.0(_\d+)?$").all()
    per_horizon = {h: set(g["symbol"]) for h, g in rows.groupby("n_predict")}
    assert not per_horizon[1] & per_horizon[2]  # model sets differ per horizon


def test_near_copies_tie_exactly_and_some_columns_are_duplicates(year):
    _, rows = year
    one = rows[rows["n_predict"] == 3]
    X = one.pivot(index="time", columns="symbol", values="close_predict").sort_index()
    price = one.groupby("time")["target_var_price"].first().reindex(X.index).to_numpy()
    actual = np.r_[price[3:], [np.nan] * 3]
    prev = np.r_[np.nan, actual[:-1]]
    direction = np.sign(X.to_numpy() - prev[:, None])
    shares = []
    for i in range(60, len(X), 10):
        fit = direction[i - 59 : i - 18]  # 41 rows of a fit window
        present = ~np.isnan(X.to_numpy()[i - 59 : i - 18]).any(axis=0)
        keys = pd.Series([fit[:, c].tobytes() for c in np.flatnonzero(present)])
        shares.append((keys.map(keys.value_counts()) > 1).mean())
    assert 0.14 <= np.mean(shares) <= 0.6  # real: 14 % (h3) to 36 % (h8) of the children
    full = X.dropna(axis=1)
    duplicated = full.T.duplicated(keep=False).sum()
    assert 2 <= duplicated <= 20  # exactly duplicated columns are rarer (4 to 6 per horizon in real tables)
    spread = (X.quantile(0.95, axis=1) - X.quantile(0.05, axis=1)) / one.groupby("time")["target_var_price"].first()
    assert 0.02 <= spread.median() <= 0.08  # real: about 4.6 % of the price between p5 and p95


def test_models_retire_and_appear(year):
    _, rows = year
    seen = rows.groupby("symbol")["time"].agg(["min", "max"])
    assert (seen["min"] > pd.Timestamp(START) + pd.Timedelta(days=15)).sum() >= 10  # appear mid-history
    assert (seen["max"] < pd.Timestamp(END) - pd.Timedelta(days=30)).sum() >= 10  # retire months before the end


def test_missing_horizon_days_and_days_without_a_price(year):
    _, rows = year
    days = pd.date_range(START, END)
    cells = rows.groupby(["time", "n_predict"]).size()
    assert len(cells) < len(days) * 3  # some (day, horizon) have no row at all
    unpriced = rows.groupby("time")["target_var_price"].apply(lambda s: s.isna().all())
    assert 1 <= unpriced.sum() <= 15 and not rows.groupby("time")["target_var_price"].apply(
        lambda s: s.isna().any() and s.notna().any()).any()  # a day is priced or not, never half
    assert validate_qml_rows(rows).passed  # null prices are allowed by the contract


def test_deterministic_and_range_independent():
    a, b = project(), project()
    year = a.rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31))
    pd.testing.assert_frame_equal(year, b.rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31)))
    day = pd.Timestamp("2025-02-10")
    alone = a.rows(day.date(), day.date())
    pd.testing.assert_frame_equal(alone, year[year["time"] == day].reset_index(drop=True))
    assert not year.equals(project(seed=4).rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31)))
    # a longer published history does not change the past (churn is dated from the start)
    longer = project(end=dt.date(2025, 6, 30)).rows(dt.date(2025, 1, 1), dt.date(2025, 3, 31))
    pd.testing.assert_frame_equal(longer, year)


def test_clean_traits_keep_the_plain_shape():
    rows = project(traits=CLEAN_TRAITS).rows(dt.date(2025, 1, 1), dt.date(2025, 1, 31))
    per_day = rows.groupby(["time", "n_predict"]).size()
    assert len(per_day) == 31 * 3 and per_day.max() == 50 and per_day.min() >= 45
    assert rows["target_var_price"].notna().all()


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
    with pytest.raises(ValueError):
        project(calendar="weekly")
