"""The chart figures against the tables they draw, point by point."""

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_assets.core.dashboard import figures
from nexus_assets.core.dashboard.markup import STYLESHEET
from nexus_assets_tests.core.dashboard.tables import HOSTILE


def snake_class_reference(position, net_prob):
    """One observation at a time, as the page's note says it."""
    side = "flat" if position == 0 else ("long" if position > 0 else "short")
    if side == "flat":
        return "flat"
    strength = abs(net_prob)
    return f"{side}, {'strong' if strength >= 0.7 else 'moderate' if strength >= 0.4 else 'weak'}"


def test_snake_classes_follow_position_and_strength():
    position = np.array([0, 1, 1, 1, -1, -1, -1, 0, 1])
    net = np.array([0.05, 0.2, 0.4, 0.7, -0.39, -0.4, -1.0, 0.9, np.nan])
    got = [figures.SNAKE_CLASSES[k][0] for k in figures.snake_classes(position, net)]
    assert got == [snake_class_reference(p, n if n == n else 0.0) for p, n in zip(position, net)]


def test_each_snake_segment_has_the_colour_of_the_signal_at_its_start(inputs):
    daily = inputs.daily[inputs.daily["signal"] == "raw"].sort_values("date")
    figure = figures.price_figure(daily, [])
    days = figures.day_strings(daily["date"])
    prices = daily["price"].tolist()
    want = {}
    for i in range(1, len(daily)):
        name = snake_class_reference(daily["position"].iloc[i - 1], daily["net_prob"].iloc[i - 1])
        want[(days[i - 1], days[i])] = name
    got = {}
    for trace in figure["data"]:
        if trace["mode"] != "lines":
            continue
        xs, ys = trace["x"], trace["y"]
        for a in range(len(xs) - 1):
            if xs[a] is not None and xs[a + 1] is not None:
                assert (xs[a], xs[a + 1]) not in got
                got[(xs[a], xs[a + 1])] = trace["name"]
                assert ys[a] == prices[days.index(xs[a])]
    assert got == want


def test_price_figure_marks_every_trade(inputs):
    trades = inputs.trades[(inputs.trades["signal"] == "raw") & (inputs.trades["basis"] == "point_in_time")]
    figure = figures.price_figure(inputs.daily[inputs.daily["signal"] == "raw"], [("raw", "#000", trades)])
    entries = next(t for t in figure["data"] if t["name"] == "raw entries")
    exits = next(t for t in figure["data"] if t["name"] == "raw exits")
    assert entries["x"] == figures.day_strings(trades["entry_date"]) and entries["y"] == trades["entry_price"].tolist()
    closed = trades[trades["status"] == "closed"]
    assert exits["y"] == closed["exit_price"].tolist()
    assert entries["marker"]["symbol"] == ["triangle-up" if d == "long" else "triangle-down" for d in trades["direction"]]


def test_fan_starts_at_the_price_and_holds_each_band(inputs):
    rows = inputs.ensembles.sort_values("horizon")
    figure = figures.fan_figure(rows, 100.0)
    by_name = {t["name"]: t for t in figure["data"]}
    assert by_name["p05"]["x"] == [0, *rows["horizon"].tolist()]
    for column in ("p05", "p25"):
        assert by_name[column]["y"] == [100.0, *rows[column].tolist()]
    assert by_name["p05\u2013p95"]["y"] == [100.0, *rows["p95"].tolist()]
    assert by_name["p25\u2013p75"]["y"] == [100.0, *rows["p75"].tolist()]
    assert by_name["ensemble forecast"]["y"] == [100.0, *rows["forecast"].tolist()]
    hostile = figures.fan_figure(rows.assign(best_child=HOSTILE, strategy=HOSTILE), None)
    assert HOSTILE not in str(hostile) and "&lt;img" in str(hostile)


def _luminance(rgb):
    """WCAG relative luminance of an sRGB colour (0-255 channels)."""
    def channel(v):
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a, b):
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _over(rgba, background):
    *rgb, alpha = (float(v) for v in rgba.removeprefix("rgba(").removesuffix(")").split(","))
    return tuple(alpha * f + (1 - alpha) * b for f, b in zip(rgb, background))


@pytest.mark.parametrize("theme", [0, 1], ids=["light", "dark"])
def test_the_fan_bands_stand_out_in_both_themes(inputs, theme):
    """Each band is told apart from the panel behind it and from the other band (contrast ratio of
    the composited colours), on the panel colour of each theme of the page's stylesheet."""
    panels = re.findall(r"--panel: #([0-9a-f]{6})", STYLESHEET)
    background = tuple(int(panels[theme][i:i + 2], 16) for i in (0, 2, 4))
    fills = {t["name"]: t["fillcolor"] for t in figures.fan_figure(inputs.ensembles, 100.0)["data"] if "fillcolor" in t}
    outer = _over(fills["p05\u2013p95"], background)
    inner = _over(fills["p25\u2013p75"], outer)
    assert _contrast(outer, background) >= 1.3
    assert _contrast(inner, outer) >= 1.3


def test_heatmap_places_each_pair_and_leaves_the_rest_empty(inputs):
    slopes = inputs.slopes[inputs.slopes["variant"] == "raw"]
    figure = figures.slope_heatmap(slopes)
    trace = figure["data"][0]
    for _, row in slopes.iterrows():
        i, j = trace["y"].index(str(row["horizon_short"])), trace["x"].index(str(row["horizon_long"]))
        assert trace["z"][i][j] == row["slope"]
    assert sum(v is not None for line in trace["z"] for v in line) == len(slopes)
    assert trace["zmin"] == -trace["zmax"] and trace["zmax"] == slopes["slope"].abs().max()


def test_equity_figure_draws_each_signal_and_buy_and_hold(inputs):
    series = [(s, "#000", inputs.daily[inputs.daily["signal"] == s]) for s in ("raw", "optimised")]
    figure = figures.equity_figure(series)
    by_name = {t["name"]: t for t in figure["data"]}
    for signal, _, frame in series:
        assert by_name[f"{signal} equity"]["y"] == frame["equity"].tolist()
        assert by_name[f"{signal} drawdown"]["y"] == frame["drawdown"].tolist()
        assert by_name[f"{signal} drawdown"]["yaxis"] == "y2"
    assert by_name["buy and hold"]["y"] == series[0][2]["buy_and_hold"].tolist()


def drawdown_tick_labels(axis):
    """The labels plotly draws on a linear axis: every multiple of dtick from tick0 in the range,
    through the axis's d3 format (``.Nf%``: 100 x, N decimals)."""
    low, high = axis["range"]
    step, decimals = axis["dtick"], int(axis["tickformat"].strip(".%"))
    count = int(np.floor((high - low) / step + 1e-9))
    return [f"{100 * (axis['tick0'] - k * step):.{decimals}f}%" for k in range(count + 1)]


@pytest.mark.parametrize("deepest, labels", [
    (-0.005, ["0.0%", "-0.5%", "-1.0%"]),  # the 1% floor of the range
    (-0.0185, ["0.0%", "-0.5%", "-1.0%", "-1.5%"]),  # plotly printed 0%, -1%, -1%, -2%, -2%
    (-0.12, ["0%", "-5%", "-10%"]),
    (-0.45, ["0%", "-20%", "-40%"]),
])
def test_the_drawdown_axis_labels_each_tick_once(inputs, deepest, labels):
    frame = inputs.daily[inputs.daily["signal"] == "raw"].copy()
    frame["drawdown"] = np.linspace(0.0, deepest, len(frame))
    axis = figures.equity_figure([("raw", "#000", frame)])["layout"]["yaxis2"]
    assert axis["range"] == [min(-0.01, 1.08 * deepest), 0.0]
    assert drawdown_tick_labels(axis) == labels


@given(st.floats(min_value=1e-6, max_value=1.0))
def test_percent_ticks_never_repeat_a_label(span):
    axis = {"range": [-span, 0.0], **figures.percent_ticks(span)}
    labels = drawdown_tick_labels(axis)
    assert 2 <= len(labels) <= 5 and len(set(labels)) == len(labels)


@pytest.mark.parametrize("values, want", [([1.0, np.nan, np.inf, -2.5], [1.0, None, None, -2.5]), ([], [])])
def test_floats_turn_non_finite_values_into_gaps(values, want):
    assert figures.floats(values) == want


def test_day_strings():
    days = pd.Series(pd.to_datetime(["2018-01-02", None, "2018-12-31"]))
    assert figures.day_strings(days) == ["2018-01-02", None, "2018-12-31"]
