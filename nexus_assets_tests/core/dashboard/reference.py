"""What a page must show, computed the slow, obvious way from the stored tables; and how to read it back.

:func:`expected_values` lists every value-carrying element of a page (``data-value``): its panel,
its row keys, its field, the exact value (``formatting.exact``) and the text the display rule gives.
:func:`html_values` reads the same list out of a page's HTML (stdlib parser) and
:data:`COLLECT_JS` out of a live DOM in a browser; :func:`assert_page_shows` compares both ways
(every expected value is on the page exactly once, and the page shows no value that is not
expected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

import pandas as pd

from nexus_assets.core.dashboard import PageInputs
from nexus_assets.core.dashboard import formatting as fmt
from nexus_assets.core.dashboard.ml import REASON_TEXT as ML_REASONS
from nexus_assets.core.dashboard.ml import RECORD_SHOWN as ML_RECORD_SHOWN
from nexus_assets.core.dashboard.ml import VERSIONS_SHOWN as ML_VERSIONS

MARKS = {"BULLISH": "\u25b2", "BEARISH": "\u25bc", "NEUTRAL": "\u25cf"}


@dataclass(frozen=True)
class Shown:
    panel: str
    keys: tuple[tuple[str, str], ...]
    field: str
    value: str
    text: str

    @property
    def where(self) -> tuple:
        return self.panel, self.keys, self.field


def _keys(keys: dict) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in keys.items()))


def _shown(panel: str, field: str, value: object, rule, **keys: object) -> Shown:
    return Shown(panel, _keys(keys), field, fmt.exact(value), rule(value))


def _day(value: object) -> str:
    return "" if pd.isna(value) else pd.Timestamp(value).date().isoformat()


def expected_values(inputs: PageInputs) -> list[Shown]:
    day = pd.Timestamp(inputs.date)
    out: list[Shown] = []

    signals = inputs.signals[inputs.signals["date"] == day]
    slopes_of_day = inputs.slopes[inputs.slopes["date"] == day]
    for _, row in signals.iterrows():
        v = row["variant"]
        out.append(Shown("signal", (("variant", v),), "signal", row["signal"], f"{MARKS[row['signal']]} {row['signal']}"))
        for field, rule in (("net_prob", fmt.signed_prob), ("strength", fmt.prob), ("bullish", fmt.integer),
                            ("bearish", fmt.integer), ("pairs", fmt.integer), ("agreement_ratio", fmt.prob),
                            ("threshold", fmt.prob), ("weighted_net_prob", fmt.signed_prob), ("mean_drift", fmt.stat),
                            ("price", fmt.price)):
            out.append(_shown("signal", field, row[field], rule, variant=v))
        if not pd.isna(row["deflated_sharpe"]):
            out.append(_shown("signal", "deflated_sharpe", row["deflated_sharpe"], fmt.prob, variant=v))
        mine = slopes_of_day[slopes_of_day["variant"] == v]
        forecasts = pd.concat([
            mine[["horizon_short", "forecast_short"]].set_axis(["h", "f"], axis=1),
            mine[["horizon_long", "forecast_long"]].set_axis(["h", "f"], axis=1),
        ]).drop_duplicates("h")
        out.append(_shown("signal", "horizons_up", int((forecasts["f"] > row["price"]).sum()), fmt.integer, variant=v))
        out.append(_shown("signal", "horizons_down", int((forecasts["f"] < row["price"]).sum()), fmt.integer, variant=v))
        out.append(_shown("signal", "horizons_total", len(forecasts), fmt.integer, variant=v))

    ensembles = inputs.ensembles[inputs.ensembles["date"] == day]
    for _, row in ensembles.iterrows():
        h = int(row["horizon"])
        out.append(_shown("forecast", "horizon", h, fmt.integer, horizon=h))
        for field in ("forecast", "p05", "p25", "p75", "p95"):
            out.append(_shown("forecast", field, row[field], fmt.price, horizon=h))
        for field in ("n_selected", "n_models"):
            out.append(_shown("forecast", field, int(row[field]), fmt.integer, horizon=h))

    raw_slopes = slopes_of_day[slopes_of_day["variant"] == "raw"]
    for _, row in raw_slopes.iterrows():
        pair = f"{int(row['horizon_short'])}-{int(row['horizon_long'])}"
        out.append(_shown("slopes", "forecast_short", row["forecast_short"], fmt.price, pair=pair))
        out.append(_shown("slopes", "forecast_long", row["forecast_long"], fmt.price, pair=pair))
        out.append(_shown("slopes", "slope", row["slope"], fmt.stat, pair=pair))

    window = inputs.ensemble_window[inputs.ensemble_window["date"] <= day]
    last_dates = sorted(window["date"].unique())[-30:]
    window = window[window["date"].isin(last_dates)]
    for h, rows in window.groupby("horizon"):
        counts = rows["best_child"].dropna().astype(str).value_counts()
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:3]
        for place, (symbol, count) in enumerate(ranked, start=1):
            keys = {"horizon": int(h), "place": place}
            out.append(_shown("models", "horizon", int(h), fmt.integer, **keys))
            out.append(Shown("models", _keys(keys), "best_child", symbol, symbol))
            out.append(_shown("models", "count", int(count), fmt.integer, **keys))
            out.append(_shown("models", "share", count / len(rows), fmt.share, **keys))

    stats = inputs.statistics[(inputs.statistics["date"] == day)
                              & inputs.statistics["signal"].isin(["raw", "optimised"])]  # ML rows: the ML panel
    for _, row in stats.iterrows():
        keys = {"signal": row["signal"], "basis": row["basis"], "statistic": row["statistic"]}
        out.append(_shown("metrics", "value", float(row["value"]), fmt.stat, **keys))
        out.append(_shown("metrics", "n", int(row["n"]), fmt.integer, **keys))

    trades = inputs.trades[(inputs.trades["entry_date"] <= day) & inputs.trades["signal"].isin(["raw", "optimised"])]
    for (signal, basis), rows in trades.groupby(["signal", "basis"]):
        rows = rows.sort_values(["entry_date", "trade"]).iloc[::-1].head(30)
        for _, row in rows.iterrows():
            keys = {"signal": signal, "basis": basis, "trade": int(row["trade"])}
            out.append(_shown("trades", "trade", int(row["trade"]), fmt.integer, **keys))
            for field in ("entry_price", "exit_price"):
                out.append(_shown("trades", field, float(row[field]), fmt.price, **keys))
            for field in ("holding_observations", "holding_days"):
                out.append(_shown("trades", field, int(row[field]), fmt.integer, **keys))
            for field in ("gross_return", "cost", "net_return"):
                out.append(_shown("trades", field, float(row[field]), fmt.percent, **keys))
            for field in ("entry_date", "exit_date"):
                shown = _day(row[field])
                out.append(Shown("trades", _keys(keys), field, shown, shown or fmt.MISSING))

    daily = inputs.daily[inputs.daily["date"] <= day].sort_values("date")
    first = None
    for signal in ("raw", "optimised"):
        rows = daily[daily["signal"] == signal]
        if rows.empty:
            continue
        last = rows.iloc[-1]
        first = last if first is None else first
        out.append(_shown("equity", "equity", float(last["equity"]), fmt.stat, signal=signal))
        out.append(_shown("equity", "drawdown", float(last["drawdown"]), fmt.percent, signal=signal))
    if first is not None:
        out.append(_shown("equity", "buy_and_hold", float(first["buy_and_hold"]), fmt.stat))

    # one row per configuration (horizons, combination): its best rank, the first ten configurations
    board = (inputs.leaderboard[inputs.leaderboard["date"] == day].sort_values("rank")
             .drop_duplicates(["horizons", "combination"]).head(10))
    for _, row in board.iterrows():
        rank = int(row["rank"])
        out.append(_shown("search", "rank", rank, fmt.integer, rank=rank))
        out.append(_shown("search", "threshold", float(row["threshold"]), fmt.prob, rank=rank))
        out.append(_shown("search", "objective", float(row["objective"]), fmt.stat, rank=rank))
        out.append(_shown("search", "deflated_sharpe", float(row["deflated_sharpe"]), fmt.prob, rank=rank))
        out.append(_shown("search", "trades", int(row["trades"]), fmt.integer, rank=rank))

    out += _ml_expected(inputs, day)

    status = inputs.status
    out.append(Shown("status", (), "freshness", status.freshness, status.freshness))
    out.append(_shown("status", "rows", status.rows, fmt.integer))
    out.append(_shown("status", "models", status.models, fmt.integer))
    recorded = status.day_status or ""
    weekend = inputs.calendar == "exchange" and inputs.date.weekday() >= 5  # the calendar, without a record
    shown = "no trading session" if not recorded and weekend else {"published": "trading session", "no_session": "no trading session",
             "holiday": "holiday: upstream published no rows", "unpublished": "not yet published",
             "outside_history": "outside the asset's history"}.get(recorded, recorded or fmt.MISSING)
    out.append(Shown("status", (), "day_status", recorded, shown))
    return out


def _ml_expected(inputs: PageInputs, day: pd.Timestamp) -> list[Shown]:
    """The ML panel: each horizon's card of the day's ml_signals rows; for the horizons of those rows
    (without any: a weekend, a holiday, a session without a price, the ML horizons of the day's
    statistics and accuracy rows) the record rows it shows, the accuracy of the pooled and the most
    recent versions and the pooled calibration; nothing without ml_signals at all."""
    if inputs.ml_signals is None:
        return []
    out = []
    rows = inputs.ml_signals[inputs.ml_signals["date"] == day].sort_values("horizon")
    accuracy = inputs.ml_accuracy if inputs.ml_accuracy is not None else pd.DataFrame(columns=["date", "horizon", "scope"])
    accuracy = accuracy[accuracy["date"] == day]
    if len(rows):
        horizons = [int(h) for h in rows["horizon"]]
    else:
        of_day = inputs.statistics[inputs.statistics["date"] == day]["signal"].astype(str)
        ml = {int(signal[len("ml_h"):]) for signal in of_day if re.fullmatch(r"ml_h[0-9]+", signal)}
        horizons = sorted(ml | {int(h) for h in accuracy["horizon"]})
    marks = {"BUY": "\u25b2", "SELL": "\u25bc", "HOLD": "\u25cf"}
    for _, row in rows.iterrows():
        keys = {"horizon": int(row["horizon"]), "variant": f"ml_h{int(row['horizon'])}"}
        out.append(Shown("ml", _keys(keys), "signal", row["signal"], f"{marks[row['signal']]} {row['signal']}"))
        for field in ("probability_up", "confidence", "threshold"):
            out.append(_shown("ml", field, row[field], fmt.prob, **keys))
        out.append(Shown("ml", _keys(keys), "reason", row["reason"], ML_REASONS[row["reason"]]))
    stats = inputs.statistics[(inputs.statistics["date"] == day) & (inputs.statistics["basis"] == "point_in_time")]
    for h in horizons:
        signal = f"ml_h{h}"
        for name in ML_RECORD_SHOWN:
            row = stats[(stats["signal"] == signal) & (stats["statistic"] == name)]
            if len(row):
                out.append(_shown("ml", "value", float(row["value"].iloc[0]), fmt.stat, signal=signal, statistic=name))
    for h in horizons:
        of_h = accuracy[accuracy["horizon"] == h]
        shown = pd.concat([of_h[of_h["scope"] == "all"], of_h[of_h["scope"] == "version"].iloc[::-1].head(ML_VERSIONS)])
        for _, row in shown.iterrows():
            keys = {"horizon": h, "scope": row["scope"], "version": row["model_version"]}
            out.append(_shown("ml", "predictions", int(row["predictions"]), fmt.integer, **keys))
            out.append(_shown("ml", "scored", int(row["scored"]), fmt.integer, **keys))
            out.append(_shown("ml", "hit_rate", float(row["hit_rate"]), fmt.share, **keys))
            out.append(_shown("ml", "brier", float(row["brier"]), fmt.prob, **keys))
            out.append(_shown("ml", "observed_frequency", float(row["observed_frequency"]), fmt.share, **keys))
    calibration = inputs.ml_calibration
    if calibration is not None:
        pooled = calibration[(calibration["scope"] == "all") & (calibration["date"] == day)]
        for h in horizons:
            for _, row in pooled[pooled["horizon"] == h].iterrows():
                keys = {"horizon": h, "bin": int(row["bin"])}
                out.append(_shown("ml", "count", int(row["count"]), fmt.integer, **keys))
                out.append(_shown("ml", "mean_predicted", float(row["mean_predicted"]), fmt.prob, **keys))
                out.append(_shown("ml", "observed_frequency", float(row["observed_frequency"]), fmt.prob, **keys))
    return out


# Row keys an element inherits from itself and its ancestors (the nearest wins).
KEYS = ("variant", "signal", "basis", "statistic", "trade", "horizon", "place", "pair", "rank", "scope", "version", "bin")


class _Collector(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[dict] = []
        self.found: list[dict] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        self.stack.append({"tag": tag, "attrs": dict(attrs), "text": []})

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        element = self.stack.pop()
        assert element["tag"] == tag, f"unbalanced </{tag}> closes <{element['tag']}>"
        text = "".join(element["text"])
        if self.stack:
            self.stack[-1]["text"].append(text)
        attributes = element["attrs"]
        if "data-value" in attributes:
            keys, panel = {}, None
            for holder in [element, *reversed(self.stack)]:
                for key in KEYS:
                    name = f"data-{key}"
                    if name in holder["attrs"] and key not in keys:
                        keys[key] = holder["attrs"][name]
                panel = panel or holder["attrs"].get("data-panel")
            self.found.append({"panel": panel, "keys": tuple(sorted(keys.items())), "field": attributes.get("data-field"),
                               "value": attributes["data-value"], "text": " ".join(text.split())})

    def handle_data(self, data):
        if self.stack:
            self.stack[-1]["text"].append(data)


def html_values(html: str) -> list[dict]:
    """Every element with ``data-value`` in ``html``: panel, inherited row keys, field, value, text."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.found


COLLECT_JS = """() => {
  const KEYS = KEYS_LIST;
  return Array.from(document.querySelectorAll('[data-value]')).map(el => {
    const keys = {};
    let panel = null;
    for (let node = el; node && node.getAttribute; node = node.parentElement) {
      for (const key of KEYS) {
        const name = 'data-' + key;
        if (node.hasAttribute(name) && !(key in keys)) keys[key] = node.getAttribute(name);
      }
      panel = panel || node.getAttribute('data-panel');
    }
    return {panel, keys: Object.entries(keys).sort(), field: el.getAttribute('data-field'),
            value: el.getAttribute('data-value'), text: el.textContent.split(/\\s+/).filter(Boolean).join(' ')};
  });
}""".replace("KEYS_LIST", str(list(KEYS)))


def assert_page_shows(found: list[dict], expected: list[Shown]) -> None:
    """Every expected value is on the page once, with its exact value and display text; nothing else is."""
    found = [f for f in found if f["panel"] is not None]
    by_where: dict[tuple, list[dict]] = {}
    for item in found:
        where = (item["panel"], tuple(tuple(pair) for pair in item["keys"]), item["field"])
        by_where.setdefault(where, []).append(item)
    problems = []
    for shown in expected:
        items = by_where.pop(shown.where, [])
        if len(items) != 1:
            problems.append(f"{shown.where}: on the page {len(items)} times")
            continue
        if items[0]["value"] != shown.value or items[0]["text"] != shown.text:
            problems.append(f"{shown.where}: page {items[0]['value']!r}/{items[0]['text']!r}, "
                            f"tables {shown.value!r}/{shown.text!r}")
    problems += [f"{where}: on the page but not expected" for where in by_where]
    assert not problems, "\n".join(problems[:20]) + (f"\n... {len(problems)} in all" if len(problems) > 20 else "")
