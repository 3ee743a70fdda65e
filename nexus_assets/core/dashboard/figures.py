"""The page's charts as plain plotly figure dicts (``{"data": [...], "layout": {...}}``).

Built directly as dicts and lists rather than through ``plotly.graph_objects``: the objects
validate every property on construction, which costs more than the whole page otherwise does, and
the JSON is the same. Colours read on light and dark backgrounds alike; the page's bootstrap
script sets the theme's text, grid and background colours at draw time. Strings that came from
upstream (model symbols, strategy names) are HTML-escaped before they enter a figure.

The price chart's line (the "snake") is coloured by the signal in force over each segment: the
segment from observation ``t_{i-1}`` to ``t_i`` has the colour of the position decided at
``t_{i-1}`` (from ``daily.position``), graded by the strength tier of ``|net_prob|`` at
``t_{i-1}`` (weak below 0.4, moderate below 0.7, strong from 0.7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from nexus_assets.core.dashboard.markup import plotly_text

# A table: a pandas DataFrame or any mapping of column name to a 1-d array.
Table = Mapping[str, object]

__all__ = [
    "Table",
    "SNAKE_CLASSES",
    "floats",
    "day_strings",
    "snake_classes",
    "price_figure",
    "fan_figure",
    "slope_heatmap",
    "equity_figure",
    "percent_ticks",
]

BULL, BEAR, FLAT = "#13804a", "#c2362b", "#8b93a1"
OPTIMISED = "#7b4fd0"
ACCENT = "#2f6fd6"
# The fan's bands: a lighter blue than ACCENT, opaque enough to stand out from the dark theme's
# panel as well as the light one's (p05-p95 at 0.16 of ACCENT all but vanished on dark); the
# edges of the wide band are drawn thinly so it reads even where it is narrow.
BAND = "84,140,230"
BANDS = {"p05–p95": f"rgba({BAND},0.30)", "p25–p75": f"rgba({BAND},0.55)"}
BAND_EDGE = f"rgba({BAND},0.75)"

# (name, colour) per snake class, from strongly bearish (0) to strongly bullish (6).
SNAKE_CLASSES: tuple[tuple[str, str], ...] = (
    ("short, strong", "#c62828"),
    ("short, moderate", "#e4574a"),
    ("short, weak", "#f19a8e"),
    ("flat", "#8b93a1"),
    ("long, weak", "#86d19f"),
    ("long, moderate", "#2fb36a"),
    ("long, strong", "#138a48"),
)

BASE_LAYOUT = {
    "autosize": True,
    "margin": {"l": 56, "r": 14, "t": 28, "b": 40},
    "font": {"size": 12, "family": "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif"},
    "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
    "hovermode": "closest",
}


def floats(values: object) -> list[float | None]:
    """A JSON-ready list of floats; NaN and infinities become None (a gap)."""
    array = np.asarray(values, dtype=float)
    out = array.tolist()
    if not np.isfinite(array).all():
        out = [x if math.isfinite(x) else None for x in out]
    return out


def day_strings(values: object) -> list[str | None]:
    """``YYYY-MM-DD`` strings of a datetime column; NaT becomes None."""
    days = np.asarray(values, dtype="datetime64[ns]").astype("datetime64[D]")
    out = np.datetime_as_string(days).tolist()
    if np.isnat(days).any():
        out = [None if x == "NaT" else x for x in out]
    return out


def _strings(values: object) -> list[str]:
    """Labels as strings; a missing label (None, NaN) becomes ""."""
    return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in np.asarray(values).tolist()]


def _ints(values: object) -> list[int]:
    return np.asarray(values).astype(int).tolist()


def _layout(**overrides: object) -> dict:
    layout = {key: (dict(value) if isinstance(value, dict) else value) for key, value in BASE_LAYOUT.items()}
    layout.update(overrides)
    return layout


def snake_classes(position: np.ndarray, net_prob: np.ndarray) -> np.ndarray:
    """Index into :data:`SNAKE_CLASSES` of each observation (see the module docstring)."""
    strength = np.abs(np.nan_to_num(np.asarray(net_prob, dtype=float)))
    grade = np.where(strength >= 0.7, 3, np.where(strength >= 0.4, 2, 1))
    side = np.sign(np.nan_to_num(np.asarray(position, dtype=float))).astype(int)
    return 3 + side * grade


def price_figure(daily: Table, trades: Sequence[tuple[str, str, Table]]) -> dict:
    """The snake over ``daily`` (one signal's rows, by date) with ``trades`` marked.

    ``trades`` holds ``(label, colour, frame)`` per set of trades to mark; sets after the first
    start hidden (click the legend to show them). The snake's colour key is not a plotly legend
    (seven entries crowd a phone-width chart); the page shows it as HTML (:data:`SNAKE_CLASSES`).
    """
    x = day_strings(daily["date"])
    y = floats(daily["price"])
    net = floats(daily["net_prob"])
    classes = snake_classes(np.asarray(daily["position"]), np.asarray(daily["net_prob"]))
    traces: list[dict] = []
    runs: dict[int, tuple[list, list]] = {}
    if len(x) > 1:
        segment = classes[:-1]
        starts = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
        ends = np.r_[starts[1:], len(segment)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            xs, ys = runs.setdefault(int(segment[start]), ([], []))
            xs.extend(x[start:end + 1] + [None])
            ys.extend(y[start:end + 1] + [None])
    for index, (name, colour) in enumerate(SNAKE_CLASSES):
        if index in runs:
            xs, ys = runs[index]
            traces.append({"type": "scatter", "mode": "lines", "name": name, "x": xs, "y": ys,
                           "line": {"color": colour, "width": 2.6}, "hoverinfo": "skip", "showlegend": False})
    traces.append({
        "type": "scatter", "mode": "markers", "name": "price", "x": x, "y": y, "customdata": net,
        "marker": {"size": 7, "opacity": 0, "color": ACCENT}, "showlegend": False,
        "hovertemplate": "%{x}<br>price %{y:,.2f}<br>net_prob %{customdata:+.3f}<extra></extra>",
    })
    for number, (label, colour, frame) in enumerate(trades):
        hidden = "legendonly" if number else True
        longs = np.asarray(frame["direction"]) == "long"
        symbols = np.where(longs, "triangle-up", "triangle-down").tolist()
        entry_colours = np.where(longs, BULL, BEAR).tolist() if number == 0 else colour
        custom = [[plotly_text(d), r] for d, r in zip(np.asarray(frame["direction"]).tolist(), floats(frame["net_return"]))]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{plotly_text(label)} entries",
            "x": day_strings(frame["entry_date"]), "y": floats(frame["entry_price"]), "customdata": custom,
            "marker": {"symbol": symbols, "size": 11, "color": entry_colours, "line": {"width": 1, "color": "#ffffff"}},
            "visible": hidden, "legendgroup": f"trades{number}",
            "hovertemplate": "%{customdata[0]} entry %{x}<br>at %{y:,.2f}<br>net %{customdata[1]:+.2%}<extra></extra>",
        })
        closed = np.asarray(frame["status"]) == "closed"
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{plotly_text(label)} exits",
            "x": day_strings(np.asarray(frame["exit_date"])[closed]),
            "y": floats(np.asarray(frame["exit_price"])[closed]),
            "marker": {"symbol": "x-thin-open", "size": 10, "color": FLAT if number == 0 else colour,
                       "line": {"width": 2, "color": FLAT if number == 0 else colour}},
            "visible": hidden, "legendgroup": f"trades{number}",
            "hovertemplate": "exit %{x}<br>at %{y:,.2f}<extra></extra>",
        })
    layout = _layout(
        xaxis={"type": "date", "showgrid": True},
        yaxis={"title": {"text": "price"}, "tickformat": ",.2f", "automargin": True},
        hovermode="closest",
    )
    return {"data": traces, "layout": layout}


def fan_figure(rows: Table, price: float | None) -> dict:
    """The ensemble forecast per horizon of the day with its p05-p95 and p25-p75 bands.

    ``rows``: ``horizon_ensembles`` rows of the day, sorted by horizon. The fan starts at the
    day's price at horizon 0.
    """
    horizons = np.asarray(rows["horizon"]).astype(int).tolist()
    anchor = [] if price is None else [0]
    start = [] if price is None else [price]
    x = anchor + horizons

    def band(column: str) -> list:
        return start + floats(rows[column])

    custom = [
        [plotly_text(s), plotly_text(a), q, k, m, plotly_text(b)]
        for s, a, q, k, m, b in zip(
            _strings(rows["strategy"]), _strings(rows["aggregator"]), floats(rows["quantile"]),
            _ints(rows["n_selected"]), _ints(rows["n_models"]), _strings(rows["best_child"]),
        )
    ]
    custom = ([["price today", "", None, None, None, ""]] if price is not None else []) + custom
    quiet = {"width": 0, "color": ACCENT}
    edge = {"width": 1, "color": BAND_EDGE}
    traces = [
        {"type": "scatter", "mode": "lines", "x": x, "y": band("p05"), "line": edge, "hoverinfo": "skip",
         "showlegend": False, "name": "p05"},
        {"type": "scatter", "mode": "lines", "x": x, "y": band("p95"), "line": edge, "fill": "tonexty",
         "fillcolor": BANDS["p05\u2013p95"], "name": "p05\u2013p95", "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines", "x": x, "y": band("p25"), "line": quiet, "hoverinfo": "skip",
         "showlegend": False, "name": "p25"},
        {"type": "scatter", "mode": "lines", "x": x, "y": band("p75"), "line": quiet, "fill": "tonexty",
         "fillcolor": BANDS["p25\u2013p75"], "name": "p25\u2013p75", "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines+markers", "x": x, "y": band("forecast"), "name": "ensemble forecast",
         "line": {"color": ACCENT, "width": 2.4}, "marker": {"size": 7}, "customdata": custom,
         "hovertemplate": "horizon %{x}<br>forecast %{y:,.2f}<br>%{customdata[0]} / %{customdata[1]}"
                          " q=%{customdata[2]}<br>%{customdata[3]} of %{customdata[4]} models<extra></extra>"},
    ]
    if "best_child_forecast" in rows:
        traces.append({
            "type": "scatter", "mode": "markers", "x": horizons, "y": floats(rows["best_child_forecast"]),
            "name": "best child", "marker": {"symbol": "diamond-open", "size": 9, "color": OPTIMISED},
            "customdata": [c[5] for c in custom[len(anchor):]],
            "hovertemplate": "horizon %{x}<br>best child %{customdata}<br>forecast %{y:,.2f}<extra></extra>",
        })
    shapes = []
    if price is not None:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": price, "y1": price,
                       "line": {"color": FLAT, "width": 1, "dash": "dot"}})
    layout = _layout(
        xaxis={"title": {"text": "horizon (observations ahead)"}, "tickmode": "array", "tickvals": x,
               "zeroline": False},
        yaxis={"title": {"text": "price"}, "tickformat": ",.2f", "automargin": True},
        shapes=shapes,
    )
    return {"data": traces, "layout": layout}


def slope_heatmap(slopes: Table) -> dict:
    """The day's horizon-pair slopes ``F(long) - F(short)``: rows short horizons, columns long."""
    short_of, long_of = _ints(slopes["horizon_short"]), _ints(slopes["horizon_long"])
    shorts, longs = sorted(set(short_of)), sorted(set(long_of))
    row = {h: i for i, h in enumerate(shorts)}
    col = {h: j for j, h in enumerate(longs)}
    z: list[list[float | None]] = [[None] * len(longs) for _ in shorts]
    custom: list[list[list[float | None]]] = [[[None, None] for _ in longs] for _ in shorts]
    for short, long_, slope, f_short, f_long in zip(
        short_of, long_of, floats(slopes["slope"]), floats(slopes["forecast_short"]), floats(slopes["forecast_long"]),
    ):
        z[row[short]][col[long_]] = slope
        custom[row[short]][col[long_]] = [f_short, f_long]
    finite = [abs(v) for line in z for v in line if v is not None]
    bound = max(finite) if finite and max(finite) > 0 else 1.0
    trace = {
        "type": "heatmap", "x": [str(h) for h in longs], "y": [str(h) for h in shorts], "z": z,
        "customdata": custom, "zmin": -bound, "zmax": bound, "zmid": 0,
        "colorscale": [[0.0, BEAR], [0.5, "#a7adb8"], [1.0, BULL]],
        "texttemplate": "%{z:.3g}", "hoverongaps": False, "xgap": 2, "ygap": 2,
        "colorbar": {"title": {"text": "slope"}, "thickness": 12, "outlinewidth": 0},
        "hovertemplate": "short %{y}, long %{x}<br>slope %{z:.4g}<br>forecasts %{customdata[0]:,.2f}"
                         " \u2192 %{customdata[1]:,.2f}<extra></extra>",
    }
    layout = _layout(
        xaxis={"title": {"text": "long horizon"}, "type": "category", "showgrid": False},
        yaxis={"title": {"text": "short horizon"}, "type": "category", "autorange": "reversed", "showgrid": False},
        margin={"l": 60, "r": 10, "t": 10, "b": 44},
    )
    return {"data": [trace], "layout": layout}


def equity_figure(series: Sequence[tuple[str, str, Table]]) -> dict:
    """Equity of each signal against buy-and-hold (top) and each signal's drawdown (bottom).

    ``series`` holds ``(label, colour, daily rows of that signal by date)``; buy-and-hold is taken
    from the first.
    """
    traces: list[dict] = []
    for label, colour, frame in series:
        x = day_strings(frame["date"])
        traces.append({"type": "scatter", "mode": "lines", "x": x, "y": floats(frame["equity"]),
                       "name": f"{plotly_text(label)} equity", "line": {"color": colour, "width": 2},
                       "hovertemplate": "%{x}<br>equity %{y:.4f}<extra>" + plotly_text(label) + "</extra>"})
        traces.append({"type": "scatter", "mode": "lines", "x": x, "y": floats(frame["drawdown"]),
                       "name": f"{plotly_text(label)} drawdown", "yaxis": "y2", "fill": "tozeroy",
                       "line": {"color": colour, "width": 1}, "showlegend": False,
                       "hovertemplate": "%{x}<br>drawdown %{y:.2%}<extra>" + plotly_text(label) + "</extra>"})
    if series:
        frame = series[0][2]
        traces.insert(0, {"type": "scatter", "mode": "lines", "x": day_strings(frame["date"]),
                          "y": floats(frame["buy_and_hold"]), "name": "buy and hold",
                          "line": {"color": FLAT, "width": 1.6, "dash": "dash"},
                          "hovertemplate": "%{x}<br>buy and hold %{y:.4f}<extra></extra>"})
    # Drawdowns are <= 0; a fixed range keeps a flat (all-zero) history from spanning 0..100%.
    deepest = min((v for _, _, frame in series for v in floats(frame["drawdown"]) if v is not None), default=0.0)
    low = min(-0.01, 1.08 * deepest)
    layout = _layout(
        xaxis={"type": "date", "anchor": "y2"},
        yaxis={"domain": [0.36, 1.0], "title": {"text": "growth of 1"}, "automargin": True},
        yaxis2={"domain": [0.0, 0.27], "title": {"text": "drawdown"}, "automargin": True, "range": [low, 0.0],
                **percent_ticks(-low)},
        hovermode="x unified",
    )
    return {"data": traces, "layout": layout}


def percent_ticks(span: float, most: int = 4) -> dict:
    """Axis settings for fractions shown as percent over a range ``span`` wide: ticks every
    1, 2 or 5 x 10^k (the smallest step giving at most ``most`` intervals) from 0, with just the
    decimals that step needs, so no two tick labels read the same (plotly's own choice of step
    under a fixed ``.0%`` format printed ``0%, -1%, -1%, -2%, -2%``)."""
    if not span > 0 or not math.isfinite(span):
        span = 0.01
    exponent = math.floor(math.log10(span / most))
    step = next(m * 10.0 ** e for e in (exponent, exponent + 1) for m in (1, 2, 5) if span / (m * 10.0 ** e) <= most)
    decimals = max(0, -math.floor(math.log10(100 * step) + 1e-9))
    return {"tickmode": "linear", "tick0": 0, "dtick": step, "tickformat": f".{decimals}%"}
