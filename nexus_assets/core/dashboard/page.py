"""One dashboard page: one asset as of one date D, rendered from the stored tables of D.

Panels (each a ``<section data-panel="...">``, in page order): ``signal`` (raw and optimised
cards), ``ml`` (the ML signal, its record and accuracy: :mod:`.ml`), ``forecast`` (the fan),
``price`` (the snake with trades), ``equity`` (against buy and hold, with drawdown), ``slopes``
(horizon-pair heatmap, raw variant), ``models`` (the child models selected most often),
``metrics`` (point in time and legacy side by side), ``trades`` (the last 30), ``search`` (the
horizon-search leaderboard) and ``status`` (where the data came from). A day without
data (no session, a holiday, not yet published: :mod:`.days`) opens with a note that says what the
day is and links the last day with data up to D; its empty panels give the same reason.

Every number is shown as text and carried in ``data-value`` (see :mod:`.formatting`); the element
also names its column in ``data-field`` and its row in ``data-*`` keys (``data-variant``,
``data-signal``, ``data-basis``, ``data-statistic``, ``data-trade``, ``data-horizon``), so a test
can find any stored value on the page.

Definitions the panels add:
- *horizons agreeing* (signal card): among the horizons of the variant's slope pairs, how many
  forecasts lie above and below the day's price (each horizon's forecast is read from the
  ``slopes`` rows of the variant).
- *child models selected most often*: over the last :data:`MODEL_WINDOW` observations up to D
  (dates of ``ensemble_window``), per horizon, the :data:`TOP_MODELS` ``best_child`` symbols
  selected most often (ties by symbol), with their share of that horizon's rows in the window.
- *last trades*: the last :data:`LAST_TRADES` trades by entry date (then trade number) of each
  signal and basis, newest first.
- *leaderboard rows*: one per configuration (horizons, combination) in the order of its best rank,
  the first :data:`LEADERBOARD_SHOWN`, with the other thresholds at which it was ranked (the search
  ranks each threshold apart; thresholds below every ``|net_prob|`` tie).
- *last day with data*: the latest date up to D of the ``daily`` rows or the trailing ensembles.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

import numpy as np

from nexus_assets.core.dashboard import figures
from nexus_assets.core.dashboard import formatting as fmt
from nexus_assets.core.dashboard.days import DAY_REASON, DAY_TEXT, day_status, describe_day, has_data
from nexus_assets.core.dashboard.inputs import REQUIRED_COLUMNS, PageInputs, Table, column
from nexus_assets.core.dashboard.markup import BOOTSTRAP_JS, attrs, document, json_script, text
from nexus_assets.core.dashboard.ml import ml_panel
from nexus_assets.core.dashboard.site import INDEX, page_path, plotly_js_path, url
from nexus_assets.core.freshness import DayStatus

__all__ = ["render_page", "PANELS", "MODEL_WINDOW", "TOP_MODELS", "LAST_TRADES", "VARIANTS", "BASES"]

PANELS: tuple[str, ...] = (
    "signal", "ml", "forecast", "price", "equity", "slopes", "models", "metrics", "trades", "search", "status",
)
MODEL_WINDOW = 30
TOP_MODELS = 3
LAST_TRADES = 30
LEADERBOARD_SHOWN = 10
VARIANTS: tuple[tuple[str, str], ...] = (("raw", "raw \u00b7 all horizons"), ("optimised", "optimised \u00b7 horizon search"))
BASES: tuple[tuple[str, str], ...] = (("point_in_time", "point in time"), ("legacy", "legacy (Nexus v2)"))
SIGNAL_MARK = {"BULLISH": "\u25b2", "BEARISH": "\u25bc", "NEUTRAL": "\u25cf"}
VARIANT_COLOUR = {"raw": figures.ACCENT, "optimised": figures.OPTIMISED}

Rule = Callable[[object], str]


def render_page(inputs: PageInputs) -> str:
    """The page of ``inputs.asset`` as of ``inputs.date``: one self-contained HTML document.

    Deterministic: equal inputs give byte-identical output (no clock, fixed element ids, sorted
    JSON keys). Raises :class:`~nexus_assets.core.dashboard.inputs.InputError` when a table lacks a
    required column.
    """
    inputs.check()
    tables = _Tables(inputs, np.datetime64(inputs.date, "ns"))
    figures_json: list[str] = []
    sections = [
        _signal_panel(inputs, tables),
        ml_panel(tables.day, inputs.ml_signals, inputs.statistics, inputs.ml_accuracy, inputs.ml_calibration,
                 status=tables.status, price_known=tables.price_known()),
        _forecast_panel(tables, figures_json),
        _price_panel(tables, figures_json),
        _equity_panel(tables, figures_json),
        _slopes_panel(tables, figures_json),
        _models_panel(tables, inputs.child_models),
        _metrics_panel(tables),
        _trades_panel(tables),
        _search_panel(tables),
        _status_panel(inputs, tables),
    ]
    plotly_src = url("../" + plotly_js_path())
    title = f"{inputs.display_name} \u00b7 {inputs.date.isoformat()}"
    return document(
        title=title,
        header=_header(inputs, tables),
        body=_day_note(inputs, tables) + "\n".join(sections) + "\n" + "\n".join(figures_json),
        script_sources=(plotly_src,),
        inline_scripts=(BOOTSTRAP_JS,),
        main_class="page",
    )


class _Columns:
    """A table as one numpy array per column: selecting a few rows of small tables with pandas
    costs more than rendering them, so the page converts each table once and works on arrays."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        self.data = data
        self.size = len(next(iter(data.values()))) if data else 0

    @classmethod
    def of(cls, frame: Table, names: tuple[str, ...]) -> _Columns:
        return cls({name: column(frame, name) for name in names if name in frame})

    def __getitem__(self, key: str) -> np.ndarray:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return self.size

    @property
    def empty(self) -> bool:
        return self.size == 0

    def take(self, rows: np.ndarray) -> _Columns:
        """The rows at ``rows`` (positions, or a boolean mask), in that order."""
        return _Columns({name: values[rows] for name, values in self.data.items()})

    def where(self, **equal: object) -> _Columns:
        mask = np.ones(self.size, dtype=bool)
        for name, value in equal.items():
            mask &= self.data[name] == value
        return self.take(mask)

    def sorted_by(self, *names: str) -> _Columns:
        """Stable sort by ``names`` (the first name is the primary key)."""
        if self.size < 2:
            return self
        return self.take(np.lexsort([self.data[name] for name in reversed(names)]))

    def records(self) -> list[dict]:
        # datetime64[ns] would list as integers: microseconds list as datetimes
        columns = {name: (values.astype("datetime64[us]") if values.dtype.kind == "M" else values).tolist()
                   for name, values in self.data.items()}
        return [{name: values[i] for name, values in columns.items()} for i in range(self.size)]


_READ = {**REQUIRED_COLUMNS, "ensembles": (*REQUIRED_COLUMNS["ensembles"], "best_child_forecast")}


class _Tables:
    """The rows of each table that belong on the page, selected once."""

    def __init__(self, inputs: PageInputs, day: np.datetime64) -> None:
        self.day = day
        self.status = day_status(inputs.status.day_status, inputs.calendar, inputs.date)
        self.signals = _Columns.of(inputs.signals, _READ["signals"])
        self.signals = self.signals.take(self.signals["date"] == day)
        slopes = _Columns.of(inputs.slopes, _READ["slopes"])
        self.slopes = slopes.take(slopes["date"] == day).sorted_by("horizon_short", "horizon_long")
        statistics = _Columns.of(inputs.statistics, _READ["statistics"])
        self.statistics = statistics.take(statistics["date"] == day)
        trades = _Columns.of(inputs.trades, _READ["trades"])
        self.trades = trades.take(trades["entry_date"] <= day).sorted_by("entry_date", "trade")
        daily = _Columns.of(inputs.daily, _READ["daily"])
        self.daily = daily.take(daily["date"] <= day).sorted_by("date")
        board = _Columns.of(inputs.leaderboard, _READ["leaderboard"])
        self.leaderboard = board.take(board["date"] == day).sorted_by("rank")
        ensembles = _Columns.of(inputs.ensembles, _READ["ensembles"])
        self.ensembles = ensembles.take(ensembles["date"] == day).sorted_by("horizon")
        window = _Columns.of(inputs.ensemble_window, _READ["ensemble_window"])
        window = window.take(window["date"] <= day)
        self.window_dates = np.unique(window["date"])[-MODEL_WINDOW:]
        self.window = window.take(np.isin(window["date"], self.window_dates))

    def absent(self, what: str, otherwise: str) -> str:
        """Why a panel of the day is empty: ``otherwise`` on a day with data, else what the day is."""
        return otherwise if has_data(self.status) else f"{what}: {DAY_REASON[self.status]}."

    def last_day_with_data(self) -> np.datetime64 | None:
        """The latest observation up to D (a day with a simulated return or ensemble forecasts)."""
        days = [dates.max() for dates in (self.daily["date"], self.window_dates) if len(dates)]
        return max(days) if days else None

    def signal_row(self, variant: str) -> dict | None:
        rows = self.signals.where(variant=variant)
        return None if rows.empty else rows.records()[0]

    def daily_of(self, signal: str) -> _Columns:
        return self.daily.where(signal=signal)

    def trades_of(self, signal: str, basis: str) -> _Columns:
        return self.trades.where(signal=signal, basis=basis)

    def price_known(self) -> bool | None:
        """Whether the day's rows (signals, ensemble forecasts) carry its price; None without such rows."""
        if self.signals.empty and self.ensembles.empty:
            return None
        return self.price() is not None

    def price(self) -> float | None:
        for variant, _ in VARIANTS:
            row = self.signal_row(variant)
            if row is not None and not fmt.is_missing(row["price"]):
                return float(row["price"])
        prices = [p for p in self.ensembles["price"].tolist() if not fmt.is_missing(p)]
        return float(prices[0]) if prices else None


# -- small markup helpers -------------------------------------------------------------------------


def _value(value: object, rule: Rule, field: str, *, tag: str = "span", cls: str | None = None, **keys: object) -> str:
    """A number with its exact value (``field`` is one of this module's constants; :func:`fmt.exact`
    and the display rules emit only digits, signs, ``.``, ``,``, ``%``, ``e`` and the en dash, so
    neither needs escaping; ``cls`` and row ``keys`` are escaped)."""
    extra = attrs(class_=cls, **keys) if cls or keys else ""
    return f'<{tag}{extra} data-field="{field}" data-value="{fmt.exact(value)}">{rule(value)}</{tag}>'


def _cell(value: object, rule: Rule, field: str, **keys: object) -> str:
    return _value(value, rule, field, tag="td", cls="num", **keys)


def _num(value: object, rule: Rule, field: str, cls: str = "num") -> str:
    """A table cell with a number, keyed by its row (``<tr data-...>``), built without escaping:
    ``field`` and ``cls`` are this module's constants, and :func:`fmt.exact` and the display rules
    only ever emit digits, signs, ``.``, ``,``, ``%``, ``e`` and the en dash."""
    return f'<td class="{cls}" data-field="{field}" data-value="{fmt.exact(value)}">{rule(value)}</td>'


def _label(value: object, field: str, *, tag: str = "td", cls: str | None = None) -> str:
    shown = fmt.MISSING if value is None or (isinstance(value, float) and value != value) else value
    return f"<{tag}{attrs(class_=cls, data_field=field)}>{text(shown)}</{tag}>"


def _section(name: str, title: str, body: str, *, wide: bool = False, note: str = "") -> str:
    cls = "panel wide" if wide else "panel"
    note_html = f'<p class="note">{text(note)}</p>' if note else ""
    return (f'<section{attrs(id=f"panel-{name}", class_=cls, data_panel=name)}>'
            f"<h2>{text(title)}</h2>{body}{note_html}</section>")


def _empty(message: str) -> str:
    return f'<p class="empty">{text(message)}</p>'


def _chart(name: str, payload: dict, figures_json: list[str], *, tall: bool = False) -> str:
    figure_id = f"figure-{name}"
    figures_json.append(json_script(figure_id, payload))
    cls = "chart tall" if tall else "chart"
    needs = "../" + plotly_js_path()
    return f'<div{attrs(id=f"chart-{name}", class_=cls, data_figure=figure_id, data_needs=needs)}></div>'


def _table(head: list[tuple[str, bool]], rows: list[str], **keys: object) -> str:
    header = "".join(f'<th{attrs(class_="num" if numeric else None)}>{text(name)}</th>' for name, numeric in head)
    return (f'<div class="table-wrap"><table{attrs(**keys)}><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _signal_class(signal: object) -> str:
    return str(signal) if signal in SIGNAL_MARK else "NEUTRAL"


# -- header ---------------------------------------------------------------------------------------


def _header(inputs: PageInputs, tables: _Tables) -> str:
    previous = inputs.previous_date
    if previous is None:
        earlier = tables.daily["date"][tables.daily["date"] < tables.day]
        previous = dt.date.fromisoformat(fmt.iso_date(earlier[-1])) if len(earlier) else None
    here = page_path(inputs.asset, inputs.date)

    def link(relative: str | None, label: str, rel: str) -> str:
        if relative is None:
            return f"<span>{text(label)}</span>"
        kind = rel if rel in ("prev", "next") else None
        return f'<a{attrs(href=_relative(here, relative), rel=kind, data_nav=rel)}>{text(label)}</a>'

    prev_link = link(page_path(inputs.asset, previous) if previous else None,
                     f"\u2190 {previous.isoformat()}" if previous else "\u2190 no earlier page", "prev")
    next_link = link(page_path(inputs.asset, inputs.next_date) if inputs.next_date else None,
                     f"{inputs.next_date.isoformat()} \u2192" if inputs.next_date else "no later page \u2192", "next")
    history = link(f"asset={inputs.asset}/{INDEX}", "history", "history")
    index = link(INDEX, "all assets", "index")
    raw = tables.signal_row("raw")
    badge = ""
    if raw is not None:
        cls = _signal_class(raw["signal"])
        badge = f' <span class="badge {cls}">{SIGNAL_MARK.get(cls, "")} {text(raw["signal"])}</span>'
    return (
        f'<div><h1 data-field="display_name">{text(inputs.display_name)}{badge}</h1>'
        f'<div class="subtitle"><span data-field="asset">{text(inputs.asset)}</span> \u00b7 '
        f'<span data-field="category">{text(inputs.category)}</span> \u00b7 '
        f'<span data-field="calendar">{text(inputs.calendar)}</span> \u00b7 as of '
        f'<strong data-field="date">{inputs.date.isoformat()}</strong></div></div>'
        f'<nav class="pager" aria-label="pages">{prev_link}{history}{index}{next_link}</nav>'
    )


_DAY_NOTES = {
    DayStatus.NO_SESSION: "The exchange does not trade on this day, so nothing was forecast; the history below runs "
                          "through the last session.",
    DayStatus.HOLIDAY: "Upstream moved past this weekday without publishing rows (an exchange holiday), so nothing was "
                       "forecast; the history below runs through the last session.",
    DayStatus.UNPUBLISHED: "Upstream had not published this day when it was ingested; materialise the day again once "
                           "it has.",
    DayStatus.OUTSIDE_HISTORY: "The catalog's history of this asset does not include this day.",
}


def _day_note(inputs: PageInputs, tables: _Tables) -> str:
    """On a day without data: what the day is, and a link to the last day with data (up to D)."""
    if has_data(tables.status):
        return ""
    last = tables.last_day_with_data()
    if last is None:
        link = "No earlier day has data yet."
    else:
        day = dt.date.fromisoformat(fmt.iso_date(last))
        href = _relative(page_path(inputs.asset, inputs.date), page_path(inputs.asset, day))
        link = f'Last day with data: <a{attrs(href=href, data_nav="last_data")}>{day.isoformat()}</a>.'
    status = tables.status
    return (f'<div{attrs(class_="day-note", role="note", data_day_status=status.value)}>'
            f"<strong>{text(describe_day(status, inputs.date))}.</strong> {text(_DAY_NOTES[status])} {link}</div>\n")


def _relative(here: str, target: str) -> str:
    """``target`` (relative to the site root) as a URL relative to the page ``here``."""
    depth = here.count("/")
    return url("../" * depth + target)


# -- panels ---------------------------------------------------------------------------------------


def _signal_panel(inputs: PageInputs, tables: _Tables) -> str:
    cards = []
    for variant, title in VARIANTS:
        row = tables.signal_row(variant)
        if row is None:
            body = _empty(tables.absent("No signal on this date",
                                        "No signal on this date (fewer than two horizons have a forecast yet)."))
        else:
            body = _signal_card(variant, row, tables)
        cards.append(f'<div{attrs(class_="card", data_variant=variant)}><h3>{text(title)}</h3>{body}</div>')
    return _section(
        "signal", "Signal", f'<div class="cards">{"".join(cards)}</div>',
        note="net_prob = (bullish \u2212 bearish pairs) / pairs of the horizon forecasts; the signal is "
             "BULLISH above the threshold, BEARISH below its negative. Horizons agreeing: forecasts above and "
             "below the day's price.",
    )


def _signal_card(variant: str, row: dict, tables: _Tables) -> str:
    signal = row["signal"]
    cls = _signal_class(signal)
    up, down, total = _horizons_vs_price(tables.slopes.where(variant=variant), row["price"])
    keys = {"data_variant": variant}
    facts = [
        ("net_prob", _value(row["net_prob"], fmt.signed_prob, "net_prob", tag="strong", **keys)),
        ("strength", f'{_value(row["strength"], fmt.prob, "strength", **keys)} \u00b7 '
                     f'{_label(row["tier"], "tier", tag="span")}'),
        ("pairs", f'{_value(row["bullish"], fmt.integer, "bullish", **keys)} \u25b2 '
                  f'{_value(row["bearish"], fmt.integer, "bearish", **keys)} \u25bc of '
                  f'{_value(row["pairs"], fmt.integer, "pairs", **keys)}'),
        ("agreement", _value(row["agreement_ratio"], fmt.prob, "agreement_ratio", **keys)),
        ("horizons agreeing", f'{_value(up, fmt.integer, "horizons_up", **keys)} up, '
                              f'{_value(down, fmt.integer, "horizons_down", **keys)} down of '
                              f'{_value(total, fmt.integer, "horizons_total", **keys)}'),
        ("horizons", _label(row["horizons"], "horizons", tag="span")),
        ("threshold", _value(row["threshold"], fmt.prob, "threshold", **keys)),
        ("combination", _label(row["combination"], "combination", tag="span")),
        ("weighted", f'{_value(row["weighted_net_prob"], fmt.signed_prob, "weighted_net_prob", **keys)} '
                     f'{_label(row["weighted_signal"], "weighted_signal", tag="span")}'),
        ("mean drift", _value(row["mean_drift"], fmt.stat, "mean_drift", **keys)),
        ("price", _value(row["price"], fmt.price, "price", **keys)),
        ("configuration", _label(row["config_source"], "config_source", tag="span")),
    ]
    if not fmt.is_missing(row["deflated_sharpe"]):  # the search winner's evidence, followed or not
        facts.append(("deflated Sharpe", _value(row["deflated_sharpe"], fmt.prob, "deflated_sharpe", **keys)))
    direction = (f'<div class="direction"><span{attrs(class_=f"big {cls}", data_field="signal", data_value=signal, **keys)}>'
                 f'{SIGNAL_MARK.get(cls, "")} {text(signal)}</span></div>')
    facts_html = "".join(f"<dt>{text(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return f'{direction}<dl class="facts">{facts_html}</dl>'


def _horizons_vs_price(slopes: _Columns, price: object) -> tuple[int, int, int]:
    forecasts: dict[int, float] = {}
    for h, f in zip(slopes["horizon_short"].tolist(), slopes["forecast_short"].tolist()):
        forecasts[int(h)] = f
    for h, f in zip(slopes["horizon_long"].tolist(), slopes["forecast_long"].tolist()):
        forecasts[int(h)] = f
    if fmt.is_missing(price):
        return 0, 0, len(forecasts)
    p = float(price)
    up = sum(1 for f in forecasts.values() if not fmt.is_missing(f) and f > p)
    down = sum(1 for f in forecasts.values() if not fmt.is_missing(f) and f < p)
    return up, down, len(forecasts)


def _forecast_panel(tables: _Tables, figures_json: list[str]) -> str:
    rows = tables.ensembles
    if rows.empty:
        warmup = "No ensemble forecast on this date" + (" (warm-up)." if tables.status is DayStatus.PUBLISHED else ".")
        return _section("forecast", "Forecast fan", _empty(tables.absent("No ensemble forecast on this date", warmup)))
    price = tables.price()
    chart = _chart("forecast", figures.fan_figure(rows, price), figures_json)
    lines = []
    for record in rows.records():
        h = int(record["horizon"])
        keys = {"data_horizon": h}
        lines.append(
            f'<tr{attrs(data_horizon=h)}>' + _cell(h, fmt.integer, "horizon", **keys)
            + "".join(_cell(record[c], fmt.price, c, **keys) for c in ("forecast", "p05", "p25", "p75", "p95"))
            + _label(f'{record["strategy"]} / {_text_or_missing(record["aggregator"])} / q={fmt.stat(record["quantile"])}',
                     "selection")
            + _cell(record["n_selected"], fmt.integer, "n_selected", **keys)
            + _cell(record["n_models"], fmt.integer, "n_models", **keys) + "</tr>"
        )
    table = _table([("h", True), ("forecast", True), ("p05", True), ("p25", True), ("p75", True), ("p95", True),
                    ("strategy / aggregator / quantile", False), ("selected", True), ("models", True)], lines,
                   class_="fan")
    if set(rows["strategy"]) == {"upstream"}:  # ensemble_source = "upstream": no child models were selected here
        note = ("Upstream's own forecast per horizon (ensemble_source = \"upstream\"); upstream publishes no spread "
                "of child models, so there are no bands; the dotted line is the day's price.")
    else:
        note = ("The dynamic quantile ensemble's forecast per horizon, with the spread (p05\u2013p95, p25\u2013p75) "
                "of the selected child models' forecasts; the dotted line is the day's price.")
    return _section(
        "forecast", "Forecast fan", chart + f"<details><summary>forecasts as a table</summary>{table}</details>",
        note=note,
    )


def _price_panel(tables: _Tables, figures_json: list[str]) -> str:
    daily = tables.daily_of("raw")
    if daily.empty:
        return _section("price", "Price and signal", _empty("No price history yet."), wide=True)
    marks = [("raw", figures.ACCENT, tables.trades_of("raw", "point_in_time")),
             ("optimised", figures.OPTIMISED, tables.trades_of("optimised", "point_in_time"))]
    chart = _chart("price", figures.price_figure(daily, marks), figures_json, tall=True)
    key = "".join(f'<span class="swatch"><i style="background:{colour}"></i>{text(name)}</span>'
                  for name, colour in figures.SNAKE_CLASSES)
    return _section(
        "price", "Price and signal", f'{chart}<div class="legend" aria-label="line colours">{key}</div>', wide=True,
        note="The line is coloured by the raw signal in force over each day: green long, red short, grey flat, "
             "darker for stronger |net_prob| (weak < 0.4 \u2264 moderate < 0.7 \u2264 strong). Triangles mark "
             "point-in-time trade entries, crosses their exits; the optimised signal's trades are in the legend.",
    )


def _equity_panel(tables: _Tables, figures_json: list[str]) -> str:
    series = [(variant, VARIANT_COLOUR[variant], tables.daily_of(variant)) for variant, _ in VARIANTS]
    series = [entry for entry in series if not entry[2].empty]
    if not series:
        return _section("equity", "Equity and drawdown", _empty("No simulated returns yet."), wide=True)
    chart = _chart("equity", figures.equity_figure(series), figures_json, tall=True)
    facts = []
    for variant, _, frame in series:
        last = frame.take(np.array([-1])).records()[0]
        keys = {"data_signal": variant}
        facts.append(f"<dt>{text(variant)}</dt><dd>equity {_value(last['equity'], fmt.stat, 'equity', **keys)}, "
                     f"drawdown {_value(last['drawdown'], fmt.percent, 'drawdown', **keys)}</dd>")
    first = series[0][2].take(np.array([-1])).records()[0]
    facts.append(f"<dt>buy and hold</dt><dd>{_value(first['buy_and_hold'], fmt.stat, 'buy_and_hold')}</dd>")
    return _section(
        "equity", "Equity and drawdown", chart + f'<dl class="facts">{"".join(facts)}</dl>', wide=True,
        note="Point-in-time simulation: the position decided at a day's close is held to the next observation, "
             "per-side costs included; equity and buy and hold start at 1.",
    )


def _slopes_panel(tables: _Tables, figures_json: list[str]) -> str:
    slopes = tables.slopes.where(variant="raw")
    if slopes.empty:
        return _section("slopes", "Horizon-pair slopes", _empty(tables.absent("No horizon pairs on this date",
                                                                              "No horizon pairs on this date.")))
    chart = _chart("slopes", figures.slope_heatmap(slopes), figures_json)
    lines = []
    for short, long_, f_short, f_long, slope in zip(
        slopes["horizon_short"].tolist(), slopes["horizon_long"].tolist(), slopes["forecast_short"].tolist(),
        slopes["forecast_long"].tolist(), slopes["slope"].tolist(),
    ):
        keys = {"data_pair": f"{int(short)}-{int(long_)}"}
        lines.append(f'<tr{attrs(**keys)}><td>{int(short)} \u2192 {int(long_)}</td>'
                     + _cell(f_short, fmt.price, "forecast_short", **keys)
                     + _cell(f_long, fmt.price, "forecast_long", **keys)
                     + _cell(slope, fmt.stat, "slope", **keys) + "</tr>")
    table = _table([("pair", False), ("short forecast", True), ("long forecast", True), ("slope", True)], lines)
    return _section(
        "slopes", "Horizon-pair slopes", chart + f"<details><summary>pairs as a table</summary>{table}</details>",
        note="Raw variant: slope = forecast(long) \u2212 forecast(short) for every pair of horizons with both "
             "forecasts; green pairs count as bullish, red as bearish.",
    )


def _text_or_missing(value: object) -> str:
    return fmt.MISSING if fmt.is_missing(value) else str(value)


def _described(child_models: Table | None) -> dict[tuple[int, str], tuple[object, object]]:
    """(horizon, symbol) -> (algorithm, code_version), from the date's ``qml_model_metadata``."""
    if child_models is None:
        return {}
    h, s, a, v = (column(child_models, name).tolist() for name in ("horizon", "symbol", "algorithm", "code_version"))
    return {(int(horizon), str(symbol)): (algorithm, version) for horizon, symbol, algorithm, version in zip(h, s, a, v)}


def _models_panel(tables: _Tables, child_models: Table | None = None) -> str:
    window = tables.window
    if window.empty:
        return _section("models", "Child models selected most often", _empty("No ensemble rows in the window yet."))
    described = _described(child_models)
    lines = []
    horizon_of = window["horizon"].astype(int)
    for horizon in sorted(set(horizon_of.tolist())):
        chosen = window["best_child"][horizon_of == horizon].tolist()
        symbols = [str(symbol) for symbol in chosen if not (symbol is None or symbol != symbol)]
        rows_of_horizon = len(chosen)
        ranked = sorted(Counter(symbols).items(), key=lambda item: (-item[1], item[0]))[:TOP_MODELS]
        for place, (symbol, count) in enumerate(ranked, start=1):
            keys = {"data_horizon": horizon, "data_place": place}
            algorithm, version = described.get((horizon, symbol), (None, None))
            lines.append(
                f"<tr{attrs(**keys)}>" + _cell(horizon, fmt.integer, "horizon", **keys)
                + f'<td{attrs(class_="symbol", data_field="best_child", data_value=symbol)}>{text(symbol)}</td>'
                + _label(_text_or_missing(algorithm), "algorithm")
                + _label(_text_or_missing(version), "code_version")
                + _cell(count, fmt.integer, "count", **keys)
                + _cell(count / rows_of_horizon, fmt.share, "share", **keys) + "</tr>"
            )
    first, last = fmt.iso_date(tables.window_dates[0]), fmt.iso_date(tables.window_dates[-1])
    table = _table([("h", True), ("child model", False), ("algorithm", False), ("version", False),
                    ("times best", True), ("share", True)], lines)
    return _section(
        "models", "Child models selected most often", table,
        note=f"The ensemble's best child per horizon over the last {fmt.count(len(tables.window_dates), 'observation')} "
             f"({first} to {last}); top {TOP_MODELS} per horizon. Algorithm and version as upstream described "
             "the model for this date (qml_model_metadata); \u2013 where it did not.",
    )


def _metrics_panel(tables: _Tables) -> str:
    stats = tables.statistics
    if stats.empty:
        return _section("metrics", "Track record", _empty("No statistics yet."), wide=True)
    blocks = []
    for signal, title in VARIANTS:
        of_signal = stats.where(signal=signal)
        if of_signal.empty:
            continue
        by_basis = {basis: {r["statistic"]: r for r in of_signal.where(basis=basis).records()}
                    for basis, _ in BASES}
        names = list(dict.fromkeys(of_signal["statistic"].tolist()))
        lines = []
        for name in names:
            cells = [f'<td{attrs(data_field="statistic")}>{text(name)}</td>']
            for basis, _ in BASES:
                record = by_basis[basis].get(name)
                cells.append(_stat_cells(basis, record))
            lines.append(f"<tr{attrs(data_signal=signal, data_statistic=name)}>{''.join(cells)}</tr>")
        head = [("statistic", False), ("point in time", True), ("n", True), ("legacy", True), ("n", True)]
        blocks.append(f'<div{attrs(data_signal=signal)}><h3>{text(title)}</h3>{_table(head, lines, class_="stats")}</div>')
    return _section(
        "metrics", "Track record", f'<div class="cards">{"".join(blocks)}</div>', wide=True,
        note="Only outcomes realised by this date. Point in time: the daily simulation, annualised by the "
             "calendar; legacy: the Nexus v2 formulas, for comparison with the old dashboard. A flag marks a "
             "figure computed on fewer observations than its minimum sample (n < min); hover a value for its "
             "definition.",
    )


def _stat_cells(basis: str, record: dict | None) -> str:
    """The value and n cells of one statistic on one basis (the row carries signal and statistic)."""
    if record is None:
        return '<td class="num"></td><td class="num"></td>'
    sufficient = bool(record["sufficient"])
    n, min_n = int(record["n"]), int(record["min_n"])
    flag = "" if sufficient else f' <span class="flag" title="n {n} &lt; min {min_n}">n&lt;min</span>'
    cell = attrs(class_="num" if sufficient else "num insufficient", data_basis=basis,
                 data_sufficient=str(sufficient).lower(), data_min_n=min_n, title=record["definition"])
    return (f"<td{cell}>{_value(record['value'], fmt.stat, 'value')}{flag}</td>"
            + _cell(n, fmt.integer, "n", data_basis=basis))


def _trades_panel(tables: _Tables) -> str:
    trades = tables.trades
    signal_of, basis_of = trades["signal"], trades["basis"]
    parts = []
    for basis, basis_title in BASES:
        for signal, title in VARIANTS:
            positions = np.flatnonzero((signal_of == signal) & (basis_of == basis))
            if not len(positions):
                continue
            last = trades.take(positions[::-1][:LAST_TRADES])
            head = [("#", True), ("side", False), ("entry", False), ("entry price", True), ("exit", False),
                    ("exit price", True), ("status", False), ("obs", True), ("days", True), ("gross", True),
                    ("cost", True), ("net", True)]
            caption = f"{title} \u00b7 {basis_title}: last {len(last)} of {len(positions)}"
            table = _table(head, _trade_rows(last), class_="trades", data_signal=signal, data_basis=basis)
            if basis == "point_in_time" and signal == "raw":
                parts.append(f"<h3>{text(caption)}</h3>{table}")
            else:
                parts.append(f"<details><summary>{text(caption)}</summary>{table}</details>")
    if not parts:
        return _section("trades", "Last trades", _empty("No trades yet."), wide=True)
    return _section(
        "trades", "Last trades", "".join(parts), wide=True,
        note="Returns as percent of the entry price; an open trade is marked at the day's price. Legacy trades "
             "use Nexus v2's prices (the ensemble's future actual), for comparison only.",
    )


def _trade_rows(trades: _Columns) -> list[str]:
    """Rows of one trades table (the ``<table>`` carries ``data-signal`` and ``data-basis``)."""
    entry_days, exit_days = figures.day_strings(trades["entry_date"]), figures.day_strings(trades["exit_date"])
    numbers = {name: trades[name].tolist() for name in (
        "trade", "entry_price", "exit_price", "holding_observations", "holding_days", "gross_return", "cost",
        "net_return")}
    directions, statuses = trades["direction"].tolist(), trades["status"].tolist()
    rows = []
    for i in range(len(trades)):
        net = numbers["net_return"][i]
        net_cls = "num pos" if not fmt.is_missing(net) and net > 0 else ("num neg" if not fmt.is_missing(net) and net < 0 else "num")
        side = "BULLISH" if directions[i] == "long" else "BEARISH"
        rows.append(
            f'<tr data-trade="{fmt.exact(numbers["trade"][i])}">'
            + _num(numbers["trade"][i], fmt.integer, "trade")
            + f'<td class="{side}" data-field="direction">{text(directions[i])}</td>'
            + _day_cell(entry_days[i], "entry_date") + _num(numbers["entry_price"][i], fmt.price, "entry_price")
            + _day_cell(exit_days[i], "exit_date") + _num(numbers["exit_price"][i], fmt.price, "exit_price")
            + f'<td data-field="status">{text(statuses[i])}</td>'
            + _num(numbers["holding_observations"][i], fmt.integer, "holding_observations")
            + _num(numbers["holding_days"][i], fmt.integer, "holding_days")
            + _num(numbers["gross_return"][i], fmt.percent, "gross_return")
            + _num(numbers["cost"][i], fmt.percent, "cost")
            + _num(net, fmt.percent, "net_return", cls=net_cls) + "</tr>"
        )
    return rows


def _day_cell(day: str | None, field: str) -> str:
    return f'<td data-field="{field}" data-value="{day or ""}">{day or fmt.MISSING}</td>'


def _search_panel(tables: _Tables) -> str:
    board = tables.leaderboard
    if board.empty:
        return _section("search", "Horizon search", _empty(tables.absent(
            "No horizon search on this date",
            "No eligible configuration on this date: the optimised signal falls back to the raw configuration.")))
    records = board.records()
    lines = []
    for group in _configurations(records)[:LEADERBOARD_SHOWN]:
        record, others = group[0], group[1:]
        keys = {"data_rank": int(record["rank"])}
        also = ", ".join(fmt.prob(other["threshold"]) for other in sorted(others, key=lambda r: r["threshold"]))
        lines.append(
            f"<tr{attrs(**keys, data_ranks=','.join(str(int(r['rank'])) for r in group))}>"
            + _cell(record["rank"], fmt.integer, "rank", **keys)
            + _label(record["horizons"], "horizons") + _label(record["combination"], "combination")
            + _cell(record["threshold"], fmt.prob, "threshold", **keys)
            + f'<td{attrs(data_field="other_thresholds")}>{text(also)}</td>'
            + _cell(record["objective"], fmt.stat, "objective", **keys)
            + _cell(record["deflated_sharpe"], fmt.prob, "deflated_sharpe", **keys)
            + _cell(record["trades"], fmt.integer, "trades", **keys) + "</tr>"
        )
    top = records[0]
    table = _table([("rank", True), ("horizons", False), ("combination", False), ("threshold", True),
                    ("also ranked at", False), ("objective", True), ("deflated Sharpe", True), ("trades", True)], lines)
    note = (f"{fmt.count(int(top['candidates']), 'candidate')} ({top['method']} search, {fmt.integer(top['eligible'])} "
            f"eligible), {fmt.count(int(top['n_folds']), 'walk-forward fold')} from {fmt.iso_date(top['fold_start'])} to "
            f"{fmt.iso_date(top['fold_end'])}, all before this date. One row per configuration (horizons and "
            f"combination) at its best-ranked threshold, the first {LEADERBOARD_SHOWN}; the other thresholds at "
            "which it made the leaderboard are listed beside it (often with the same figures: a threshold below "
            "every |net_prob| changes no position). Objective: mean fold Sharpe, in sample for the "
            "selection: the best of many candidates looks good by luck alone (expected best among these: "
            f"{fmt.stat(top['expected_max_sharpe'])}). Deflated Sharpe: the probability that a configuration's true "
            "Sharpe beats that luck. Rank 1 configures the optimised signal when its deflated Sharpe reaches the "
            "catalog's bar; only the optimised track in the metrics is evidence.")
    return _section("search", "Horizon search", table, note=note)


def _configurations(records: list[dict]) -> list[list[dict]]:
    """Leaderboard rows (by rank) grouped by configuration (horizons, combination), groups in the
    order of their best rank, each group's rows by rank."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["horizons"], record["combination"]), []).append(record)
    return list(groups.values())


def _status_panel(inputs: PageInputs, tables: _Tables) -> str:
    status = inputs.status
    freshness = status.freshness if status.freshness in ("fresh", "late") else "unknown"
    horizons = ", ".join(str(int(h)) for h in tables.ensembles["horizon"].tolist()) or fmt.MISSING
    facts = [
        ("freshness", f'<span{attrs(class_=f"badge {freshness}", data_field="freshness", data_value=status.freshness)}>'
                      f"{text(status.freshness)}</span> {text(status.freshness_detail)}"),
        ("upstream watermark", _label(fmt.iso_date(status.upstream_watermark), "upstream_watermark", tag="span")),
        ("contract version", _label(status.contract_version, "contract_version", tag="span")),
        ("rows", _value(status.rows, fmt.integer, "rows")),
        ("child models", _value(status.models, fmt.integer, "models")),
        ("day", f'<span{attrs(data_field="day_status", data_value=status.day_status or "")}>'
                f'{text(DAY_TEXT.get(tables.status, status.day_status or fmt.MISSING))}</span>'),
        ("horizons", _label(horizons, "horizons", tag="span")),
        ("source", _label(status.source, "source", tag="span")),
        ("partition", _label(status.partition_key, "partition_key", tag="span")),
    ]
    body = "".join(f"<dt>{text(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return _section("status", "Data status", f'<dl class="facts">{body}</dl>',
                    note="From the qml_models materialisation of this date. Pages never receive credentials.")
