"""The model roster as of each date, upstream's description, and the churn from day to day."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from nexus_assets.core.contract import MODEL_METADATA, table_problems
from nexus_assets.core.model_metadata import (
    _same_models_churn,
    churn,
    churn_alerts,
    churns,
    iter_rosters,
    metadata_table,
    metadata_tables,
    model_rosters,
    normalise_upstream,
)

START = dt.date(2025, 1, 1)


def day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


def churning_history(seed: int = 3, days: int = 40) -> pd.DataFrame:
    """Two horizons of seeded models that appear late, retire early, miss single days, and a day on
    which horizon 5 publishes nothing at all (a day may be missing for some horizons)."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in (1, 5):
        for m in range(12):
            symbol = f"{4382 + h}.0_{100000 + m}"
            born = int(rng.integers(0, 15)) if m % 3 == 0 else 0
            retired = int(rng.integers(20, days)) if m % 4 == 1 else days
            for d in range(born, retired):
                if rng.random() < 0.05 or (h == 5 and d == 25):
                    continue
                rows.append({"symbol": symbol, "time": pd.Timestamp(day(d)), "n_predict": h})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # any order


def reference_roster(rows: pd.DataFrame, on: dt.date) -> pd.DataFrame:
    """The obvious way: every row up to the date, grouped; live = seen on the horizon's last day."""
    seen = rows[rows["time"] <= pd.Timestamp(on)]
    grouped = seen.groupby(["n_predict", "symbol"])["time"].agg(["min", "max"]).reset_index()
    latest = seen.groupby("n_predict")["time"].max()
    return pd.DataFrame({
        "date": pd.Timestamp(on),
        "horizon": grouped["n_predict"].astype("int64"),
        "symbol": grouped["symbol"].astype(str),
        "first_seen": grouped["min"],
        "last_seen": grouped["max"],
        "live": grouped["max"].to_numpy() == latest.loc[grouped["n_predict"]].to_numpy(),
    }).sort_values(["horizon", "symbol"], ignore_index=True)


def test_rosters_equal_the_reference_on_every_date():
    rows = churning_history()
    dates = [day(n) for n in range(-1, 42)]
    fast = model_rosters(rows, dates)
    for on in dates:
        want = reference_roster(rows, on)
        got = fast[on]
        assert list(got.columns) == list(want.columns)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)


def by_day(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows as the step reads them: one frame per stored day, in date order."""
    return [frame.reset_index(drop=True) for _, frame in rows.groupby("time", sort=True)]


def test_streamed_rosters_from_one_frame_a_day_equal_the_reference():
    rows = churning_history(seed=11)
    dates = [day(n) for n in (-3, 0, 4, 5, 6, 25, 26, 39, 41)]  # before any row, gaps, after the last
    frames = by_day(rows)
    # an empty day, and a frame holding two days (rows shuffled), as partitions may be read
    frames = [frames[0].head(0), *frames[:10], pd.concat(frames[10:12]).sample(frac=1.0, random_state=1),
              *frames[12:]]
    got = list(iter_rosters(frames, dates))
    assert [on for on, _ in got] == dates
    for on, roster in got:
        pd.testing.assert_frame_equal(roster, reference_roster(rows, on), check_dtype=False)


def test_streamed_rosters_are_yielded_before_later_days_are_read():
    rows = churning_history()
    frames = by_day(rows)
    read = []

    def reading():
        for frame in frames:
            read.append(frame["time"].iloc[0].date())
            yield frame

    stream = iter_rosters(reading(), [day(3), day(30)], chunk_rows=1)
    on, roster = next(stream)
    assert on == day(3) and max(read) == day(4)  # the first day after it told that day 3 was complete
    pd.testing.assert_frame_equal(roster, reference_roster(rows, day(3)), check_dtype=False)
    assert next(stream)[0] == day(30) and max(read) == day(31)


def test_rows_without_a_time_never_count():
    rows = churning_history()
    frames = by_day(rows)
    timeless = frames[3].head(2).assign(time=pd.NaT, symbol="never")
    streamed = [frames[0], *frames[1:5], timeless, timeless.head(0), timeless, *frames[5:]]
    for on, roster in iter_rosters(streamed, [day(2), day(9)]):
        pd.testing.assert_frame_equal(roster, reference_roster(rows, on), check_dtype=False)


def test_streamed_rosters_refuse_days_out_of_order():
    frames = by_day(churning_history())
    with pytest.raises(ValueError, match="date order"):
        list(iter_rosters([frames[5], frames[2]], [day(10)]))


def test_rows_after_a_date_never_change_its_roster():
    rows = churning_history()
    on = day(20)
    later = rows[rows["time"] > pd.Timestamp(on)]
    changed = pd.concat([rows[rows["time"] <= pd.Timestamp(on)],
                         later.assign(symbol=later["symbol"] + "x"), later.head(0)], ignore_index=True)
    pd.testing.assert_frame_equal(model_rosters(rows, [on])[on], model_rosters(changed, [on])[on])
    # and a date asked alone equals the same date among many
    assert model_rosters(rows, [on])[on].equals(model_rosters(rows, [day(n) for n in range(30)])[on])


def test_a_day_a_horizon_misses_keeps_its_live_models():
    rows = churning_history()
    rosters = model_rosters(rows, [day(24), day(25)])
    h5 = {on: r[r["horizon"] == 5] for on, r in rosters.items()}
    assert h5[day(25)]["live"].tolist() == h5[day(24)]["live"].tolist()  # day 25 has no h5 row at all
    assert churn(metadata_table(rosters[day(24)], day(24), None),
                 metadata_table(rosters[day(25)], day(25), None)).per_horizon.set_index("horizon").at[5, "retired"] == 0


def frame(live: dict[tuple[int, str], bool], on: dt.date, versions: dict | None = None) -> pd.DataFrame:
    roster = pd.DataFrame({
        "date": pd.Timestamp(on), "horizon": [h for h, _ in live], "symbol": [s for _, s in live],
        "first_seen": pd.Timestamp(START), "last_seen": [pd.Timestamp(on if v else START) for v in live.values()],
        "live": list(live.values()),
    })
    described = None
    if versions is not None:
        described = normalise_upstream(pd.DataFrame([
            {"symbol": s, "horizon": h, "algorithm": "ridge", "training_window": 60, "code_version": v}
            for (h, s), v in versions.items()]))
    return metadata_table(roster, on, described)


def test_churn_counts_models_that_retire_appear_and_change():
    before = frame({(1, "a"): True, (1, "b"): True, (1, "c"): True, (1, "d"): True, (3, "x"): True, (3, "y"): False},
                   day(1), {(1, "a"): "v1", (1, "b"): "v1", (1, "c"): "v1", (1, "d"): "v1", (3, "x"): "v1"})
    after = frame({(1, "a"): True, (1, "b"): False, (1, "c"): False, (1, "d"): True, (1, "e"): True, (3, "x"): True,
                   (3, "y"): True},
                  day(2), {(1, "a"): "v2", (1, "b"): "v1", (1, "c"): "v1", (1, "d"): "v1", (1, "e"): "v1",
                           (3, "x"): "v1"})
    result = churn(before, after)
    assert result.count("added") == 2  # e appears, y comes back
    assert result.count("retired") == 2  # b and c
    assert result.count("changed") == 1  # a's code version
    per = result.per_horizon.set_index("horizon")
    assert per.loc[1, ["live_before", "live", "added", "retired"]].tolist() == [4, 3, 1, 2]
    assert per.at[1, "lost_share"] == 0.5 and per.at[3, "lost_share"] == 0.0
    [change] = result.code_version_changes.to_dict(orient="records")
    assert change["symbol"] == "a" and (change["code_version_before"], change["code_version"]) == ("v1", "v2")
    alerts = churn_alerts(result, 0.25)
    assert alerts == ["horizon 1 lost 2 of 4 live models (50% > 25%)", "a (h1): code_version v1 -> v2"]
    assert churn_alerts(result, 0.5) == ["a (h1): code_version v1 -> v2"]  # exactly the share: no warning


def test_no_change_is_claimed_where_a_day_was_not_described():
    before = frame({(1, "a"): True}, day(1))  # derived from qml_models alone
    after = frame({(1, "a"): True}, day(2), {(1, "a"): "v2"})
    result = churn(before, after)
    assert result.count("changed") == 0 and churn_alerts(result, 0.25) == []


def test_the_first_day_adds_everything_and_loses_nothing():
    result = churn(None, frame({(1, "a"): True, (2, "b"): True}, day(0)))
    assert result.count("added") == 2 and result.count("retired") == 0 and churn_alerts(result, 0.0) == []


def test_upstream_description_is_typed_and_keeps_every_other_field():
    raw = pd.DataFrame([
        {"symbol": "7000.0_100001", "horizon": 3.0, "algorithm": "ridge", "training_window": 120, "code_version": "s-1",
         "params": json.dumps({"alpha": 0.3}), "family": "ridge"},
        {"symbol": "7000.0_100002", "horizon": 3, "algorithm": "trend", "training_window": "expanding",
         "code_version": "s-1"},
    ])
    got = normalise_upstream(raw)
    assert got["horizon"].tolist() == [3, 3]
    assert got["training_window"].tolist()[0] == 120 and got["training_window"].isna().tolist() == [False, True]
    assert json.loads(got.at[0, "upstream_fields"]) == {"family": "ridge", "params": '{"alpha": 0.3}'}
    assert json.loads(got.at[1, "upstream_fields"]) == {}  # the padding NaN is no field
    with pytest.raises(ValueError, match="no 'symbol' field.*model_id"):
        normalise_upstream(pd.DataFrame([{"model_id": "a"}]))
    with pytest.raises(ValueError, match="twice"):
        normalise_upstream(pd.DataFrame([{"symbol": "a", "horizon": 1}, {"symbol": "a", "horizon": 1}]))
    with pytest.raises(ValueError, match="'n_predict' must be a whole number"):
        normalise_upstream(pd.DataFrame([{"symbol": "a", "n_predict": 1.5}]))


def test_the_table_says_where_its_fields_come_from_and_fits_its_schema():
    rows = churning_history()
    on = day(30)
    roster = model_rosters(rows, [on])[on]
    derived = metadata_table(roster, on, None)
    assert (derived["metadata_source"] == "qml_models").all() and derived["algorithm"].isna().all()
    assert table_problems(MODEL_METADATA, derived) == []
    first = roster.iloc[0]
    described = normalise_upstream(pd.DataFrame([
        {"symbol": first["symbol"], "horizon": int(first["horizon"]), "algorithm": "ridge", "code_version": "v9"},
        {"symbol": "never_published", "horizon": 1, "algorithm": "analog", "code_version": "v9"},
    ]))
    table = metadata_table(roster, on, described)
    assert table_problems(MODEL_METADATA, table) == []
    assert len(table) == len(roster) + 1
    by_symbol = table.set_index("symbol")
    assert by_symbol.at[first["symbol"], "metadata_source"] == "upstream"
    assert by_symbol.at[first["symbol"], "code_version"] == "v9"
    ghost = by_symbol.loc["never_published"]
    assert pd.isna(ghost["first_seen"]) and not ghost["live"] and ghost["metadata_source"] == "upstream"
    assert (table["metadata_source"] == "upstream").sum() == 2


def test_a_description_without_a_horizon_applies_on_every_horizon_of_the_symbol():
    on = day(1)
    roster = model_rosters(pd.DataFrame({"symbol": ["a", "a"], "time": pd.Timestamp(on), "n_predict": [1, 3]}), [on])[on]
    table = metadata_table(roster, on, normalise_upstream(pd.DataFrame([{"symbol": "a", "code_version": "v1"}])))
    assert table["code_version"].tolist() == ["v1", "v1"] and (table["metadata_source"] == "upstream").all()


def _described_days(roster_of: dict) -> dict:
    """Upstream descriptions on some days, with code versions that change from day to day, and
    none (derived from qml_models alone) on the others."""
    rng = np.random.default_rng(11)
    described = {}
    for on, roster in roster_of.items():
        if len(roster) and rng.random() < 0.4:
            picked = roster.sample(n=min(len(roster), 6), random_state=int(rng.integers(1000)))
            described[on] = normalise_upstream(pd.DataFrame([
                {"symbol": s, "horizon": int(h), "algorithm": "ridge", "code_version": f"v{int(rng.integers(2))}"}
                for h, s in zip(picked["horizon"], picked["symbol"])]))
        else:
            described[on] = None if rng.random() < 0.5 else normalise_upstream(pd.DataFrame(columns=["symbol"]))
    return described


@pytest.mark.slow  # over 2 s: the whole suite runs it, the fast subset does not
def test_tables_and_churns_of_many_dates_equal_the_date_by_date_functions():
    rows = churning_history()
    dates = [day(n) for n in range(-2, 42)]
    rosters = model_rosters(rows, dates)
    described = _described_days(rosters)
    assert any(d is not None and len(d) for d in described.values()) and any(d is None for d in described.values())
    tables = metadata_tables(rosters, described)
    assert list(tables) == dates
    for on in dates:  # the same frame, and the same Parquet bytes
        want = metadata_table(rosters[on], on, described[on])
        pd.testing.assert_frame_equal(tables[on], want)
        assert _parquet(tables[on]) == _parquet(want)
    sequence = [None, *(tables[on] for on in dates)]
    got = churns(sequence)
    assert len(got) == len(dates)
    for (old, new), fast in zip(zip(sequence, sequence[1:]), got):
        want = churn(old, new)
        pd.testing.assert_frame_equal(fast.per_horizon, want.per_horizon)
        pd.testing.assert_frame_equal(fast.changes, want.changes)
        assert churn_alerts(fast, 0.1) == churn_alerts(want, 0.1)
        # the records the partition metadata shows are the frames' rows
        assert fast.per_horizon_records() == want.per_horizon.to_dict(orient="records")
        assert fast.change_records(5) == [{k: None if pd.isna(v) else v for k, v in row.items()}
                                          for row in want.changes.head(5).to_dict(orient="records")]
        assert fast.code_version_change_count() == len(want.code_version_changes)
        assert [fast.count(c) for c in ("added", "retired", "changed")] == [
            int((want.changes["change"] == c).sum()) for c in ("added", "retired", "changed")]
    assert sum(c.count("changed") for c in got) > 0 and sum(c.count("retired") for c in got) > 0
    assert sum(c.code_version_change_count() for c in got) > 0


def _parquet(frame: pd.DataFrame) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    return sink.getvalue()


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_churns_of_days_with_the_same_models_equal_the_keyed_comparison(seed):
    """Most days keep the same models: those pairs are compared column against column. On a
    history whose models all publish on the first day, then miss days, retire, come back, and a
    horizon missing a day (the live flags change, the models listed do not), every pair takes that
    path and gives what the keyed comparison gives, to the type of each value in the records."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in (1, 3, 8):
        for m in range(15):
            symbol = f"{4382 + h}.0_{100000 + m}"
            for d in range(30):
                if d and (rng.random() < 0.15 or (h == 3 and d in (9, 10)) or (m % 5 == 2 and d > 20)):
                    continue
                rows.append({"symbol": symbol, "time": pd.Timestamp(day(d)), "n_predict": h})
    rows = pd.DataFrame(rows)
    dates = [day(n) for n in range(30)]
    tables = metadata_tables(model_rosters(rows, dates), {})
    sequence = [tables[on] for on in dates]
    got = churns(sequence)
    assert all(_same_models_churn(a, b) is not None for a, b in zip(sequence, sequence[1:]))
    for (old, new), fast in zip(zip(sequence, sequence[1:]), got):
        want = churn(old, new)
        assert repr(fast.per_horizon_rows) == repr(want.per_horizon_rows)
        assert repr(fast.change_rows) == repr(want.change_rows)
    assert sum(c.count("retired") for c in got) > 10 and sum(c.count("added") for c in got) > 10
    # a pair that lists other models, or an upstream description, is left to the keyed comparison
    assert _same_models_churn(sequence[0], sequence[1].iloc[1:]) is None
    assert _same_models_churn(sequence[0], sequence[1].iloc[::-1].reset_index(drop=True)) is None
    assert _same_models_churn(sequence[0], sequence[1].assign(metadata_source="upstream")) is None
