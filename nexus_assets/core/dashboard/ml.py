"""The dashboard's ML panel: the day's ML signal per horizon beside the slope signals, its track
record and the probabilities' accuracy and calibration (``docs/ml-signals.md``).

Reads the page's ``ml_signals`` rows of D, the ``statistics`` rows of the ML signals (``ml_h<h>``,
point in time: the same simulation and statistics as the slope signals) and the ``ml_accuracy`` /
``ml_calibration`` rows of D. A day without a model, or without ML inputs at all, says so in words.
A day without a prediction (no session, a holiday, a session whose price is not yet known: the ML
steps predict from a day's close) still has a record as of D: the panel shows it for the ML
horizons of D's statistics and accuracy rows, after a line that says why there is no prediction.
Every text goes through :func:`~nexus_assets.core.dashboard.markup.text` or
:func:`~nexus_assets.core.dashboard.markup.attrs`; numbers carry their exact value in
``data-value`` and their column in ``data-field``, as on the rest of the page.
"""

from __future__ import annotations

import numpy as np

from nexus_assets.core.dashboard import formatting as fmt
from nexus_assets.core.dashboard.days import DAY_REASON, has_data
from nexus_assets.core.dashboard.inputs import Table, column
from nexus_assets.core.dashboard.markup import attrs, text
from nexus_assets.core.freshness import DayStatus
from nexus_assets.core.ml_signals import ml_variant, variant_horizon

__all__ = ["ML_SIGNAL_COLUMNS", "ML_ACCURACY_COLUMNS", "ML_CALIBRATION_COLUMNS", "RECORD_SHOWN", "VERSIONS_SHOWN",
           "REASON_TEXT", "ml_panel"]

ML_SIGNAL_COLUMNS = ("date", "horizon", "model_version", "model_sha256", "probability_up", "confidence", "threshold",
                     "signal", "position", "reason")
ML_ACCURACY_COLUMNS = ("date", "horizon", "scope", "model_version", "predictions", "scored", "hits", "hit_rate",
                       "brier", "observed_frequency", "min_n", "sufficient")
ML_CALIBRATION_COLUMNS = ("date", "horizon", "scope", "bin", "bin_low", "bin_high", "count", "mean_predicted",
                          "observed_frequency")
RECORD_SHOWN = ("total_return", "buy_and_hold_return", "sharpe_ratio", "max_drawdown", "exposure", "trades",
                "win_rate", "profit_factor", "directional_accuracy_1")
"""The track-record rows shown per ML horizon (all of them are in the API's ``metrics``)."""
VERSIONS_SHOWN = 5
"""Model versions in the accuracy table per horizon: the most recent by first prediction."""
REASON_TEXT = {
    "confident_up": "p > 0.5 at the threshold's confidence",
    "confident_down": "p < 0.5 at the threshold's confidence",
    "below_threshold": "confidence below the threshold",
    "no_direction": "p is exactly 0.5",
    "no_model": "no model serves on this date",
    "no_probability": "the model gave no probability: a feature it reads is not defined on this date (warming up)",
}
_MARK = {"BUY": "\u25b2", "SELL": "\u25bc", "HOLD": "\u25cf"}
_CLASS = {"BUY": "BULLISH", "SELL": "BEARISH", "HOLD": "NEUTRAL"}  # the slope signals' colours


def ml_panel(day: np.datetime64, ml_signals: Table | None, statistics: Table,
             ml_accuracy: Table | None, ml_calibration: Table | None, *,
             status: DayStatus | None = None, price_known: bool | None = None) -> str:
    """The ``ml`` section of the page of ``day``.

    ``status``: what the day is (:func:`~nexus_assets.core.dashboard.days.day_status`); ``price_known``:
    whether the page's rows of the day carry its price (None: the page has no row of the day that
    would). Both only word why a day without ``ml_signals`` rows has no prediction.
    """
    rows = _of_day(ml_signals, day, ML_SIGNAL_COLUMNS)
    if rows is None:
        return _section(_empty("No ML inputs for this page: the ml_signals step has not run for this date."))
    accuracy = _of_day(ml_accuracy, day, ML_ACCURACY_COLUMNS)
    if rows:
        rows = sorted(rows, key=lambda row: row["horizon"])  # stable
        cards = "".join(_card(row) for row in rows)
        if all(row["reason"] == "no_model" for row in rows):
            lead = _empty("No model serves on this date yet: the ML signal holds (position 0) until the first model "
                          "is trained on enough history.")
        else:
            lead = ""
        horizons = [int(row["horizon"]) for row in rows]
        top = lead + f'<div class="cards">{cards}</div>'
    else:  # no prediction today, but the record and the accuracy as of today are stored
        horizons = _stored_horizons(statistics, day, accuracy)
        top = _empty(_no_prediction(status, price_known))
    body = (top + _record(statistics, day, horizons) + _accuracy(accuracy, horizons)
            + _calibration(_of_day(ml_calibration, day, ML_CALIBRATION_COLUMNS), horizons))
    return _section(body, note=(
        "The ML direction classifier's probability p of an up move h observations ahead; confidence = |p \u2212 0.5| "
        "\u00d7 2; BUY or SELL only at or above the threshold, else HOLD. Its record is simulated exactly like the "
        "slope signals' (point in time, same costs). Hit rate, Brier score and calibration count only predictions "
        "whose outcome is known by this date; Brier 0.25 is what always saying 0.5 scores."))


_RECORD_AS_OF = " The ML record and accuracy below are as of this date."


def _no_prediction(status: DayStatus | None, price_known: bool | None) -> str:
    """Why a day has no ``ml_signals`` rows, as far as the page's inputs tell: the ML steps make a
    prediction on a day with a price, so a day without data has none, and a session whose price
    is not yet known has none."""
    if not has_data(status):
        return f"No ML prediction on this date: {DAY_REASON[status]}.{_RECORD_AS_OF}"
    if price_known is False:
        return ("No ML prediction on this date: its price is not yet known (upstream's rows for it carry no "
                f"target_var_price), and the ML steps predict only from a known close.{_RECORD_AS_OF}")
    if price_known:
        return ("No ML prediction on this date, though its price is known: its ml_signals partition holds no rows "
                f"(materialise ml_predictions, then ml_signals, for it).{_RECORD_AS_OF}")
    return ("No ML prediction on this date: its ml_signals partition holds no rows (no price was known for it, or "
            f"ml_predictions was not materialised for it).{_RECORD_AS_OF}")


def _stored_horizons(statistics: Table, day: np.datetime64, accuracy: list[dict] | None) -> list[int]:
    """The ML horizons of ``day``'s statistics (variants ``ml_h<h>``) and accuracy rows, ascending."""
    signals = column(statistics, "signal")[_dates(statistics) == day]
    found = {variant_horizon(name) for name in np.unique(signals.astype(str))} - {None}
    found |= {int(row["horizon"]) for row in accuracy or ()}
    return sorted(found)


def _of_day(frame: Table | None, day: np.datetime64, columns: tuple[str, ...]) -> list[dict] | None:
    """The rows of ``day`` (``columns`` only, in stored order), as :func:`_records`."""
    if frame is None:
        return None
    present = [c for c in columns if c in frame]
    if len(present) < len(columns):
        return None  # a table stored before the ML layer: shown as absent, not as an error
    return _records(frame, columns, _dates(frame) == day)


def _dates(frame: Table) -> np.ndarray:
    return column(frame, "date").astype("datetime64[ns]", copy=False)


def _records(frame: Table, columns: tuple[str, ...], keep: np.ndarray) -> list[dict]:
    """The rows of ``frame`` where ``keep``, as ``to_dict("records")`` gives them (Python scalars;
    dates as datetimes), built from one array per column: pandas' per-row boxing and filtering cost
    more than the panel's markup."""
    rows = np.flatnonzero(keep)
    lists = {}
    for name in columns:
        values = column(frame, name)[rows]
        lists[name] = (values.astype("datetime64[us]") if values.dtype.kind == "M" else values).tolist()
    return [{name: values[i] for name, values in lists.items()} for i in range(len(rows))]


def _section(body: str, note: str = "") -> str:
    note_html = f'<p class="note">{text(note)}</p>' if note else ""
    return f'<section{attrs(id="panel-ml", class_="panel wide", data_panel="ml")}><h2>ML signal</h2>{body}{note_html}</section>'


def _empty(message: str) -> str:
    return f'<p class="empty">{text(message)}</p>'


def _value(value: object, rule, field: str, *, tag: str = "span", **keys: object) -> str:
    return f"<{tag}{attrs(data_field=field, data_value=fmt.exact(value), **keys)}>{text(rule(value))}</{tag}>"


def _card(row: dict) -> str:
    signal, h = str(row["signal"]), int(row["horizon"])
    keys = {"data_horizon": h}
    version = row["model_version"] or "none"
    facts = [
        ("probability up", _value(row["probability_up"], fmt.prob, "probability_up", **keys)),
        ("confidence", _value(row["confidence"], fmt.prob, "confidence", **keys)),
        ("threshold", _value(row["threshold"], fmt.prob, "threshold", **keys)),
        ("why", f'<span{attrs(data_field="reason", data_value=row["reason"], **keys)}>'
                f'{text(REASON_TEXT.get(row["reason"], row["reason"]))}</span>'),
        ("model version", f'<span{attrs(data_field="model_version", title=row["model_sha256"] or None)}>'
                          f"{text(version)}</span>"),
    ]
    if row["model_sha256"]:
        facts.append(("model SHA-256", f'<code{attrs(data_field="model_sha256")}>{text(row["model_sha256"][:12])}'
                                       "\u2026</code>"))
    big = attrs(class_="big " + _CLASS.get(signal, "NEUTRAL"), data_field="signal", data_value=signal, **keys)
    direction = f'<div class="direction"><span{big}>{_MARK.get(signal, "")} {text(signal)}</span></div>'
    facts_html = "".join(f"<dt>{text(name)}</dt><dd>{value}</dd>" for name, value in facts)
    title = f"ML \u00b7 h{h}"
    return (f'<div{attrs(class_="card", data_variant=ml_variant(h))}><h3>{text(title)}</h3>'
            f'{direction}<dl class="facts">{facts_html}</dl></div>')


def _table(head: list[str], rows: list[str], **keys: object) -> str:
    header = "".join(f"<th>{text(name)}</th>" for name in head)
    return (f'<div class="table-wrap"><table{attrs(**keys)}><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _flagged(value: object, rule, field: str, n: int, min_n: int, sufficient: bool, **keys: object) -> str:
    flag = "" if sufficient else f' <span class="flag" title="n {n} &lt; min {min_n}">n&lt;min</span>'
    cls = "num" if sufficient else "num insufficient"
    return (f"<td{attrs(class_=cls, data_sufficient=str(bool(sufficient)).lower(), **keys)}>"
            f"{_value(value, rule, field)}{flag}</td>")


def _record(statistics: Table, day: np.datetime64, horizons: list[int]) -> str:
    keep = ((_dates(statistics) == day)
            & (column(statistics, "basis") == "point_in_time")
            & np.char.startswith(column(statistics, "signal").astype(str), "ml_h"))
    by = {(r["signal"], r["statistic"]): r
          for r in _records(statistics, ("signal", "statistic", "value", "n", "min_n", "sufficient", "definition"), keep)}
    if not by:
        return "<h3>Track record</h3>" + _empty(
            "No ML track record yet: it starts with a model's first prediction, and none was made by this date.")
    lines = []
    for name in RECORD_SHOWN:
        cells = [f'<td{attrs(data_field="statistic")}>{text(name)}</td>']
        for h in horizons:
            record = by.get((ml_variant(h), name))
            if record is None:
                cells.append('<td class="num"></td>')
                continue
            cells.append(_flagged(record["value"], fmt.stat, "value", int(record["n"]), int(record["min_n"]),
                                  bool(record["sufficient"]), data_signal=ml_variant(h), title=record["definition"]))
        lines.append(f"<tr{attrs(data_statistic=name)}>{''.join(cells)}</tr>")
    head = ["statistic", *(f"ML h{h}" for h in horizons)]
    return "<h3>Track record (point in time)</h3>" + _table(head, lines, class_="stats", data_table="ml_record")


def _accuracy(accuracy: list[dict] | None, horizons: list[int]) -> str:
    if not accuracy:
        return "<h3>Accuracy by model version</h3>" + _empty("No prediction with a probability by this date.")
    lines = []
    for h in horizons:
        rows = [r for r in accuracy if r["horizon"] == h]
        shown = ([r for r in rows if r["scope"] == "all"]
                 + [r for r in rows if r["scope"] == "version"][::-1][:VERSIONS_SHOWN])
        for r in shown:
            keys = {"data_horizon": h, "data_scope": r["scope"], "data_version": r["model_version"]}
            label = "all versions" if r["scope"] == "all" else r["model_version"]
            n, min_n, ok = int(r["scored"]), int(r["min_n"]), bool(r["sufficient"])
            lines.append(
                f"<tr{attrs(**keys)}><td>{text(f'h{h}')}</td><td>{text(label)}</td>"
                f'<td class="num">{_value(r["predictions"], fmt.integer, "predictions")}</td>'
                f'<td class="num">{_value(r["scored"], fmt.integer, "scored")}</td>'
                + _flagged(r["hit_rate"], fmt.share, "hit_rate", n, min_n, ok)
                + _flagged(r["brier"], fmt.prob, "brier", n, min_n, ok)
                + f'<td class="num">{_value(r["observed_frequency"], fmt.share, "observed_frequency")}</td></tr>')
    head = ["horizon", "model version", "predictions", "scored", "hit rate", "Brier", "up moves"]
    return ("<h3>Accuracy by model version</h3>"
            + _table(head, lines, class_="stats", data_table="ml_accuracy")
            + f'<p class="note">{text(f"The {VERSIONS_SHOWN} most recent versions per horizon; all in the API.")}</p>')


def _calibration(calibration: list[dict] | None, horizons: list[int]) -> str:
    if not calibration:
        return ""
    lines = []
    pooled = [r for r in calibration if r["scope"] == "all"]
    for h in horizons:
        for r in sorted((r for r in pooled if r["horizon"] == h), key=lambda r: r["bin"]):  # a bin once per horizon
            bins = f"{r['bin_low']:.1f}\u2013{r['bin_high']:.1f}"
            lines.append(
                f"<tr{attrs(data_horizon=h, data_bin=int(r['bin']))}><td>{text(f'h{h}')}</td><td>{text(bins)}</td>"
                f'<td class="num">{_value(r["count"], fmt.integer, "count")}</td>'
                f'<td class="num">{_value(r["mean_predicted"], fmt.prob, "mean_predicted")}</td>'
                f'<td class="num">{_value(r["observed_frequency"], fmt.prob, "observed_frequency")}</td></tr>')
    head = ["horizon", "p bin", "scored", "mean p", "observed up"]
    return ("<details><summary>Calibration (all versions): a calibrated model's observed frequency matches its mean p"
            "</summary>" + _table(head, lines, class_="stats", data_table="ml_calibration") + "</details>")
