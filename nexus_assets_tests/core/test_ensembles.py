"""The dynamic quantile ensemble against its slow, line-by-line reference (docs/ensembles.md), both modes."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_assets.core import ensembles
from nexus_assets.core.combinations import within_horizon_combinations
from nexus_assets.core.ensembles import dynamic_quantile_ensemble, ensemble_columns, ensembles_with_combinations
from nexus_assets.core.slicing import empty_slices, horizon_frames, slice_horizons
from nexus_assets.qml.synthetic import SyntheticProject
from nexus_assets_tests.core import reference_ensembles as reference

START = dt.date(2025, 1, 1)
FEW_QUANTILES = (0.01, 0.05, 0.15, 0.30)  # keeps the reference quick; the full list runs once below
NUMBERS = ["forecast", "quantile", "best_child_forecast", "p05", "p25", "p75", "p95"]
LABELS = ["date", "horizon", "strategy", "aggregator", "n_selected", "n_models", "best_child", "mode"]


def synthetic_slices(seed=5, horizons=(1, 2, 5), models=14, days=48, calendar="crypto"):
    end = START + dt.timedelta(days=days - 1)
    project = SyntheticProject(700 + seed, horizons=horizons, models_per_horizon=models, seed=seed,
                               start=START, end=end, calendar=calendar)
    return slice_horizons(project.rows(START, end))


def roughen(slices, seed, drop=0.06, nan=0.03):
    """Models missing on some days and NaN forecasts, as real QML output has."""
    rng = np.random.default_rng(seed)
    out = slices.drop(index=rng.choice(len(slices), size=int(len(slices) * drop), replace=False))
    out = out.reset_index(drop=True)
    out.loc[rng.random(len(out)) < nan, "forecast"] = np.nan
    return out


def with_single_model_horizon(slices, horizon=7):
    """A horizon whose only model is a copy of one model of horizon 1."""
    first = slices[slices["horizon"] == 1]
    one = first[first["symbol"] == first["symbol"].min()].copy()
    one["horizon"] = horizon
    one["symbol"] = "9999.0_1"
    return pd.concat([slices, one], ignore_index=True)


def assert_same(got, want):
    """Fast path equals the reference: labels exactly, numbers within 1e-9 relative."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got[LABELS].reset_index(drop=True), want[LABELS].reset_index(drop=True),
                                  check_dtype=False)
    for column in NUMBERS + (["actual"] if "actual" in got else []):
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=1e-9, atol=0,
                                   err_msg=column)


@pytest.fixture(scope="module")
def rough():
    """Three horizons with their own model sets, gaps, NaN forecasts and a single-model horizon."""
    return with_single_model_horizon(roughen(synthetic_slices(days=36), seed=11))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["nexus_v2", "point_in_time"])
def test_matches_reference_on_rough_data(rough, mode):
    got = dynamic_quantile_ensemble(rough, mode=mode, lookback=16, quantiles=FEW_QUANTILES)
    want = reference.reference_ensemble(rough, mode=mode, lookback=16, quantiles=FEW_QUANTILES)
    assert_same(got, want)
    assert set(got["horizon"]) == {1, 2, 5, 7}
    single = got[got["horizon"] == 7]
    assert (single["strategy"] == "single_model").all() and (single["aggregator"] == "none").all()
    assert (single["quantile"] == 1.0).all() and (single["n_selected"] == 1).all()
    rows_7 = rough[rough["horizon"] == 7]["date"].nunique()
    if mode == "nexus_v2":
        assert len(single) == rows_7  # spec: a one-model horizon outputs every row, no warm-up
    else:
        assert len(single) == rows_7 - (16 + 7 - 1)  # point in time: only once the window is complete
    ensembled = got[got["horizon"] != 7]
    assert len(ensembled) >= 50
    assert ensembled["strategy"].nunique() >= 3 and ensembled["aggregator"].nunique() == 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["nexus_v2", "point_in_time"])
def test_matches_reference_with_default_lookback(mode):
    slices = roughen(synthetic_slices(seed=8, horizons=(1, 3), models=40, days=100, calendar="exchange"), seed=3)
    dates = sorted(slices["date"].unique())[-8:]
    got = dynamic_quantile_ensemble(slices, mode=mode, dates=dates)
    want = reference.reference_ensemble(slices, mode=mode, dates=dates)
    assert_same(got, want)
    # n = max(1, int(M q)) of the row's own M (models retire and appear, so M varies by date)
    allowed = got["n_models"].map(lambda m: {max(1, int(m * q)) for q in ensembles.QUANTILES})
    assert all(n in ok for n, ok in zip(got["n_selected"], allowed))
    assert got["n_models"].max() <= 40 and got["n_models"].nunique() >= 1


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_exact_ties_follow_symbol_order():
    """Twin models tie exactly in every metric and score: in point-in-time mode the earlier symbol
    is ordered first (nexus_v2 follows pandas' sort, checked against the reference).

    One model of horizon 1 is made perfect (its forecast is the realised price), so that it and
    its twin lead every strategy's ordering. The twin differs only on the last date, which is in
    no window, so which of the two comes first shows in that date's ``best_child_forecast``.
    """
    slices = synthetic_slices(seed=2, horizons=(1, 4), models=10, days=44)
    actual = horizon_frames(slices)[1].actual
    best = slices.loc[slices["horizon"] == 1, "symbol"].iloc[3]
    rows = (slices["symbol"] == best) & slices["date"].map(actual).notna()
    slices.loc[rows, "forecast"] = slices.loc[rows, "date"].map(actual)
    twin = slices[slices["symbol"] == best].copy()
    twin["symbol"] = best + "_twin"  # sorts right after the original
    twin.loc[twin["date"] == twin["date"].max(), "forecast"] *= 1.5
    slices = pd.concat([slices, twin], ignore_index=True)
    dates = sorted(slices["date"].unique())[-3:]
    original = slices[(slices["symbol"] == best) & (slices["date"] == dates[-1])]["forecast"].item()
    for mode in ("nexus_v2", "point_in_time"):
        got = dynamic_quantile_ensemble(slices, mode=mode, lookback=20, dates=dates)
        assert_same(got, reference.reference_ensemble(slices, mode=mode, lookback=20, dates=dates))
    final = got[(got["date"] == dates[-1]) & (got["horizon"] == 1)]
    assert final["best_child_forecast"].item() == original  # the original, not its twin (1.5x)


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_no_winner_falls_back_to_first_combination():
    """A long horizon whose windows hold no realised price yet: every score is NaN."""
    slices = synthetic_slices(seed=4, horizons=(1, 15), models=9, days=40)
    dates = sorted(slices["date"].unique())[-6:]
    got = dynamic_quantile_ensemble(slices, mode="nexus_v2", lookback=12, dates=dates)
    assert_same(got, reference.reference_ensemble(slices, mode="nexus_v2", lookback=12, dates=dates))
    blind = got[(got["horizon"] == 15) & got["actual"].isna()].tail(3)
    assert len(blind) == 3
    assert (blind["strategy"] == "Balanced").all() and (blind["aggregator"] == "mean").all()
    assert (blind["quantile"] == ensembles.QUANTILES[0]).all()
    X = horizon_frames(slices)[15].forecasts
    np.testing.assert_allclose(blind["forecast"], X.loc[blind["date"]].iloc[:, 0])  # n = 1, first column


@pytest.mark.parametrize("mode", ["nexus_v2", "point_in_time"])
def test_few_rows(mode):
    slices = synthetic_slices(seed=6, horizons=(1, 2), models=8, days=30)
    empty = dynamic_quantile_ensemble(slices, mode=mode, lookback=30)  # fewer rows than the lookback
    assert empty.empty and list(empty.columns) == ensemble_columns(mode)
    assert empty.dtypes.equals(dynamic_quantile_ensemble(slices, mode=mode, lookback=20).dtypes)
    got = dynamic_quantile_ensemble(slices, mode=mode, lookback=26, quantiles=FEW_QUANTILES)
    assert_same(got, reference.reference_ensemble(slices, mode=mode, lookback=26, quantiles=FEW_QUANTILES))
    per_horizon = got.groupby("horizon").size().to_dict()
    assert per_horizon == ({1: 4, 2: 4} if mode == "nexus_v2" else {1: 4, 2: 3})  # point in time waits h - 1 more


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_fit_validate_fallback_on_short_lookback():
    """int(0.7 L) < 10: fit and validate are both the whole window."""
    slices = roughen(synthetic_slices(seed=9, horizons=(2,), models=11, days=24), seed=9)
    for mode in ("nexus_v2", "point_in_time"):
        assert_same(dynamic_quantile_ensemble(slices, mode=mode, lookback=8, quantiles=FEW_QUANTILES),
                    reference.reference_ensemble(slices, mode=mode, lookback=8, quantiles=FEW_QUANTILES))


def test_output_schema():
    slices = synthetic_slices(seed=1, horizons=(1, 3), models=9, days=32)
    for mode in ("nexus_v2", "point_in_time"):
        out = dynamic_quantile_ensemble(slices, mode=mode, lookback=20)
        assert list(out.columns) == ensemble_columns(mode)
        dtypes = out.dtypes.astype(str).to_dict()
        assert dtypes["date"] == "datetime64[ns]"
        assert {dtypes[c] for c in ("horizon", "n_selected", "n_models")} == {"int64"}
        assert {dtypes[c] for c in ("strategy", "aggregator", "best_child", "mode")} == {"str"}
        assert set(out["best_child"]) <= set(slices["symbol"])
        floats = [c for c in out.columns if c not in ("date", "horizon", "n_selected", "n_models", "strategy",
                                                      "aggregator", "best_child", "mode")]
        assert {dtypes[c] for c in floats} == {"float64"}
        assert out[["date", "horizon"]].equals(out[["date", "horizon"]].sort_values(["date", "horizon"]))
        assert not out.duplicated(["date", "horizon"]).any()
        assert (out["mode"] == mode).all()
        assert set(out["strategy"]) <= set(ensembles.STRATEGIES)
        assert (out["p05"] <= out["p25"]).all() and (out["p25"] <= out["p75"]).all() and (out["p75"] <= out["p95"]).all()
    assert ensemble_columns("nexus_v2").index("actual") == ensemble_columns("nexus_v2").index("forecast") + 1
    for mode in ("nexus_v2", "point_in_time"):  # no input, or no date that can be forecast: typed and empty
        typed = dynamic_quantile_ensemble(slices, mode=mode, lookback=20).dtypes
        assert dynamic_quantile_ensemble(empty_slices(), mode=mode).dtypes.equals(typed)
        assert dynamic_quantile_ensemble(slices, mode=mode, lookback=20, dates=["1999-01-01"]).dtypes.equals(typed)


def test_the_stored_table_is_the_ensemble_with_its_rows_plain_combinations():
    """horizon_ensembles: the ensemble's rows and columns, the combinations of the same (date,
    horizon) between them, ``mode`` last; the same for a dates subset."""
    slices = roughen(synthetic_slices(seed=4, horizons=(1, 3), models=10, days=40), seed=4)
    for mode, dates in (("nexus_v2", None), ("point_in_time", None), ("point_in_time", [START + dt.timedelta(days=30)])):
        ensemble = dynamic_quantile_ensemble(slices, mode=mode, lookback=20, dates=dates)
        plain = within_horizon_combinations(slices, dates=dates)
        got = ensembles_with_combinations(slices, mode=mode, lookback=20, dates=dates)
        assert list(got.columns) == [*ensemble.columns[:-1], *plain.columns[2:], "mode"] and len(got) == len(ensemble) > 0
        pd.testing.assert_frame_equal(got[list(ensemble.columns)], ensemble)
        for row in got.itertuples(index=False):
            match = plain[(plain["date"] == row.date) & (plain["horizon"] == row.horizon)]
            assert len(match) == 1
            for column in plain.columns[2:]:
                want, have = match[column].iloc[0], getattr(row, column)
                assert (pd.isna(want) and pd.isna(have)) or want == have, (row.date, row.horizon, column)


def test_dates_subset_equals_rows_of_full_output():
    slices = roughen(synthetic_slices(seed=12, horizons=(1, 3), models=10, days=40), seed=12)
    for mode in ("nexus_v2", "point_in_time"):
        full = dynamic_quantile_ensemble(slices, mode=mode, lookback=20)
        picked = sorted(full["date"].unique())[::4]
        part = dynamic_quantile_ensemble(slices, mode=mode, lookback=20, dates=[d.date() for d in picked])
        pd.testing.assert_frame_equal(part, full[full["date"].isin(picked)].reset_index(drop=True))


def test_point_in_time_is_scale_free_nexus_v2_is_not():
    """Multiplying every price by 1024 (exact in binary) changes no choice in point-in-time mode."""
    slices = roughen(synthetic_slices(seed=13, horizons=(1, 2), models=16, days=40), seed=13)
    scaled = slices.assign(forecast=slices["forecast"] * 1024, price=slices["price"] * 1024)
    base = dynamic_quantile_ensemble(slices, lookback=20)
    big = dynamic_quantile_ensemble(scaled, lookback=20)
    pd.testing.assert_frame_equal(big[LABELS + ["quantile"]], base[LABELS + ["quantile"]])
    np.testing.assert_array_equal(big["forecast"], base["forecast"] * 1024)
    v2, v2_big = (dynamic_quantile_ensemble(s, mode="nexus_v2", lookback=20) for s in (slices, scaled))
    assert (v2[["strategy", "aggregator", "quantile"]] != v2_big[["strategy", "aggregator", "quantile"]]).any(axis=None)


@pytest.fixture(scope="module")
def history():
    return roughen(synthetic_slices(seed=21, horizons=(1, 3, 4), models=12, days=45), seed=21)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=25, max_value=42), change=st.sampled_from(["forecasts", "prices", "drop", "new_model"]),
       seed=st.integers(min_value=0, max_value=10_000))
def test_point_in_time_never_looks_ahead(history, cut, change, seed):
    """Changing any input dated after D never changes the outputs for D (or earlier)."""
    D = pd.Timestamp(START) + pd.Timedelta(days=cut)
    after = history["date"] > D
    rng = np.random.default_rng(seed)
    future = history.copy()
    if change == "forecasts":
        future.loc[after, "forecast"] *= rng.uniform(0.5, 1.5, int(after.sum()))
    elif change == "prices":
        future.loc[after, "price"] *= rng.uniform(0.5, 1.5)
    elif change == "drop":
        future = future[~after | (rng.random(len(future)) < 0.5)]
    else:  # a model that appears only after D, best on every later day
        newcomer = future[after & (future["symbol"] == future["symbol"].min())].copy()
        newcomer["symbol"] = "0000.0_0"  # sorts first
        newcomer["forecast"] = newcomer["price"]
        future = pd.concat([future, newcomer], ignore_index=True)
    before = dynamic_quantile_ensemble(history, lookback=16)
    later = dynamic_quantile_ensemble(future, lookback=16)
    known = before[before["date"] <= D].reset_index(drop=True)
    assert len(known) > 0
    pd.testing.assert_frame_equal(later[later["date"] <= D].reset_index(drop=True), known)


def test_nexus_v2_looks_ahead():
    """The flaw point-in-time mode fixes: in nexus_v2 a date's forecast moves when later prices do."""
    slices = synthetic_slices(seed=21, horizons=(1, 4), models=12, days=45)
    D = pd.Timestamp(START) + pd.Timedelta(days=30)
    future = slices.copy()
    future.loc[future["date"] > D, "price"] *= 1.3
    days = [D - pd.Timedelta(days=k) for k in range(4)]  # windows whose targets reach past D
    before = dynamic_quantile_ensemble(slices, mode="nexus_v2", lookback=16, dates=days)
    later = dynamic_quantile_ensemble(future, mode="nexus_v2", lookback=16, dates=days)
    h4 = (before["horizon"] == 4).to_numpy()
    last = h4 & (before["date"] == D).to_numpy()
    assert before.loc[last, "actual"].item() != later.loc[last, "actual"].item()  # y_h is the price h rows later
    moved = (before[["forecast", "strategy", "quantile"]] != later[["forecast", "strategy", "quantile"]]).any(axis=1)
    assert moved[h4].any()
    pit = [dynamic_quantile_ensemble(s, lookback=16, dates=[D]) for s in (slices, future)]
    pd.testing.assert_frame_equal(pit[0], pit[1])


def test_constants_are_the_spec():
    assert ensembles.LOOKBACK == reference.LOOKBACK
    assert ensembles.QUANTILES == reference.QUANTILES
    assert ensembles.AGGREGATORS == reference.AGGREGATORS
    assert dict(ensembles.STRATEGIES) == reference.STRATEGIES
    assert list(ensembles.STRATEGIES) == list(reference.STRATEGIES)  # evaluation order matters
    assert ensembles.PERCENTILES == reference.PERCENTILES


def test_rejects_bad_input():
    slices = synthetic_slices(seed=1, horizons=(1,), models=5, days=25)
    with pytest.raises(ValueError, match="mode"):
        dynamic_quantile_ensemble(slices, mode="future")
    with pytest.raises(ValueError, match="lookback"):
        dynamic_quantile_ensemble(slices, lookback=1)
    with pytest.raises(ValueError, match="quantiles"):
        dynamic_quantile_ensemble(slices, quantiles=[0.0])
    with pytest.raises(ValueError, match="symbol"):
        dynamic_quantile_ensemble(slices.drop(columns="symbol"))
    with pytest.raises(ValueError, match="duplicate"):
        dynamic_quantile_ensemble(pd.concat([slices, slices.head(3)], ignore_index=True))


def test_categorical_and_object_symbols_give_the_same_result():
    slices = roughen(synthetic_slices(seed=3, horizons=(1, 2), models=9, days=30), seed=3)
    base = dynamic_quantile_ensemble(slices, lookback=20)
    for dtype in ("category", object):
        pd.testing.assert_frame_equal(dynamic_quantile_ensemble(slices.astype({"symbol": dtype}), lookback=20), base)
    shuffled = slices.sample(frac=1.0, random_state=1).reset_index(drop=True)
    pd.testing.assert_frame_equal(dynamic_quantile_ensemble(shuffled, lookback=20), base)


# ---------------------------------------------------------------------------------------------
# real-data traits: exact ties, model churn (issue: exact and reproducible numbers on real tables)


def qdt_like_slices(seed=3, horizons=(1, 5), models=120, days=70, start_price=90_000.0):
    """Shaped like a real QDT table: parents with clusters of near-copy children (many exact
    direction-sequence ties), duplicated columns, models that appear and retire, missing
    horizon-days and a few days without a price (SyntheticProject's default traits)."""
    end = START + dt.timedelta(days=days - 1)
    project = SyntheticProject(1860, horizons=horizons, models_per_horizon=models, seed=seed, start=START, end=end,
                               start_price=start_price)
    return slice_horizons(project.rows(START, end))


@pytest.mark.slow
def test_nexus_v2_reproduces_pandas_tie_order_on_tie_heavy_data():
    """pandas' default sort (numpy quicksort, not stable) decides between exactly tied models.

    On this fixture the order of exact ties changes the forecast on several dates: the fast path
    must equal the old script's order there, and a stable order (what earlier releases used)
    must not.
    """
    slices = qdt_like_slices()
    got = dynamic_quantile_ensemble(slices, mode="nexus_v2", lookback=30)
    want = reference.reference_ensemble(slices, mode="nexus_v2", lookback=30)
    assert_same(got, want)
    stable = reference.reference_ensemble(slices, mode="nexus_v2", lookback=30, nexus_v2_sort="stable")
    moved = ~np.isclose(stable["forecast"], want["forecast"], rtol=1e-9, atol=0)
    assert moved.sum() >= 3, "the fixture must have ties that decide forecasts"
    assert {"Profit_Heavy", "Risk_Heavy", "Balanced"} & set(want.loc[moved, "strategy"])


def test_fixture_has_the_tie_structure_of_real_tables():
    """Children with exactly the same direction sequence over a fit window, as real QDT tables
    have (14-36 % of the children), and exact ties at a top-n boundary of a strategy without
    the mse term in most windows."""
    frame = horizon_frames(qdt_like_slices())[1]
    X, y = frame.forecasts.to_numpy(), frame.actual.to_numpy()
    prev = np.r_[np.nan, y[:-1]]
    direction = np.sign(X - prev[:, None])
    shares, tied = [], []
    for i in range(30, len(X)):
        fit = direction[i - 30 + 1 : i - 30 + 21]  # the fit rows after the first (always a miss)
        columns = [fit[:, c].tobytes() for c in range(X.shape[1]) if not np.isnan(X[i - 30 : i - 10, c]).all()]
        counts = pd.Series(columns).value_counts()
        shares.append(counts[counts > 1].sum() / len(columns))
        pnl = np.sort(-np.nansum(direction[i - 30 : i - 10] * ((y - prev) / prev)[i - 30 : i - 10, None], axis=0))
        tied.append(any(pnl[max(1, int(X.shape[1] * q)) - 1] == pnl[max(1, int(X.shape[1] * q))] for q in ensembles.QUANTILES))
    assert 0.14 <= np.mean(shares) <= 0.6
    assert np.mean(tied) >= 0.5


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
def test_nexus_v2_counts_the_whole_roster():
    """Nexus v2's M is every column of the whole pivot, models that first publish later included."""
    slices = qdt_like_slices(seed=4, horizons=(3,), models=40, days=75)
    dates = sorted(slices["date"].unique())[-5:]
    early = slices[slices["date"] <= dates[-1]]
    newcomers = pd.DataFrame({"horizon": 3, "symbol": ["0001.0_1", "9999.0_7", "4382.0_100500"]})
    roster = pd.concat([slices[["horizon", "symbol"]].drop_duplicates(), newcomers], ignore_index=True)
    got = dynamic_quantile_ensemble(early, mode="nexus_v2", dates=dates, roster=roster)
    want = reference.reference_ensemble(early, mode="nexus_v2", dates=dates, roster=roster)
    assert_same(got, want)
    assert (got["n_models"] == roster["symbol"].nunique()).all()
    without = dynamic_quantile_ensemble(early, mode="nexus_v2", dates=dates)
    assert (without["n_models"] < got["n_models"]).all()
    with pytest.raises(ValueError, match="nexus_v2"):
        dynamic_quantile_ensemble(early, mode="point_in_time", roster=roster)


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_point_in_time_population_is_the_dates_window():
    """``n_models`` is the models with a forecast in the date's window, and a date's output is
    bit-identical whatever history is loaded before its window and whatever models appear after."""
    slices = qdt_like_slices(seed=5, horizons=(1, 4), models=60, days=200)
    L = 20
    dates = sorted(slices["date"].unique())[-6:]
    whole = dynamic_quantile_ensemble(slices, lookback=L, dates=dates)
    frames = horizon_frames(slices)
    for row in whole.itertuples(index=False):
        X = frames[row.horizon].forecasts
        i = X.index.get_loc(row.date)
        window = X.iloc[i - row.horizon - L + 1 : i - row.horizon + 1]
        assert row.n_models == int(window.notna().any().sum())
    counted = slices.groupby("horizon")["symbol"].nunique()
    assert (whole.groupby("horizon")["n_models"].max() < counted).all(), "the fixture must have retired models"
    # the same dates from just the rows they need (every model that retired earlier is gone)
    cut = []
    for h, group in slices.groupby("horizon"):
        days = np.sort(group["date"].unique())
        first = days[np.searchsorted(days, pd.Timestamp(dates[0]).to_datetime64()) - h - L + 1]
        cut.append(group[group["date"] >= first])
    short = pd.concat(cut, ignore_index=True)
    pd.testing.assert_frame_equal(dynamic_quantile_ensemble(short, lookback=L, dates=dates), whole, check_exact=True)
    # a model that first publishes on the last date changes nothing before it
    newcomer = slices[(slices["date"] == dates[-1]) & (slices["horizon"] == 1)].head(1).assign(symbol="0000.0_1")
    grown = pd.concat([slices, newcomer], ignore_index=True)
    pd.testing.assert_frame_equal(dynamic_quantile_ensemble(grown, lookback=L, dates=dates[:-1]),
                                  whole[whole["date"] < dates[-1]].reset_index(drop=True), check_exact=True)
    assert_same(whole, reference.reference_ensemble(slices, lookback=L, dates=dates))


@pytest.mark.slow
def test_point_in_time_single_model_waits_for_the_warm_up():
    """A horizon whose first model publishes weeks before the others emits nothing before its window
    is complete, and ensembles (not single_model) once the others are in the window."""
    slices = qdt_like_slices(seed=6, horizons=(2,), models=12, days=90)
    first = slices["symbol"].min()
    lonely = slices[(slices["symbol"] == first)]
    early = lonely.assign(date=lonely["date"] - pd.Timedelta(days=40))  # the same model, 40 days earlier
    early = early[early["date"] < slices["date"].min()]
    slices = pd.concat([early, slices], ignore_index=True)
    L = 20
    got = dynamic_quantile_ensemble(slices, lookback=L)
    days = np.sort(slices["date"].unique())
    assert got["date"].min() >= days[L + 2 - 1]  # no output before the first complete window
    single = got[got["strategy"] == "single_model"]
    assert len(single) > 0 and (single["n_models"] == 1).all()
    assert single["date"].max() < pd.Timestamp(days[40 + 2]), "single_model only while the window holds one model"
    assert_same(got, reference.reference_ensemble(slices, lookback=L))


@pytest.mark.parametrize("mode", ["nexus_v2", "point_in_time"])
def test_blocks_on_several_threads_give_the_single_thread_bits(monkeypatch, mode):
    slices = qdt_like_slices(seed=8, horizons=(1, 3), models=60, days=120)
    monkeypatch.setattr(ensembles, "_BLOCK_BYTES", 1)  # one block per _MIN_BLOCK_ROWS dates: many blocks
    monkeypatch.setenv("NEXUS_THREADS", "1")
    alone = dynamic_quantile_ensemble(slices, mode=mode)
    monkeypatch.setenv("NEXUS_THREADS", "3")
    threaded = dynamic_quantile_ensemble(slices, mode=mode)
    assert len(alone) > 3 * ensembles._MIN_BLOCK_ROWS
    pd.testing.assert_frame_equal(threaded, alone, check_exact=True)
