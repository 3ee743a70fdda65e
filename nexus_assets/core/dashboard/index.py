"""The site index (every asset's latest day with data at a glance) and each asset's history calendar.

Neither page runs a script (their policy is ``script-src 'none'``). Assets are listed by key and
days by date, whatever order they are given in, so equal summaries give byte-identical pages.
A day without data (no session, a holiday, not yet published: :mod:`.days`) is never presented
as an asset's latest state, and the calendar tells it apart from a NEUTRAL signal.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable

import numpy as np

from nexus_assets.core.dashboard import formatting as fmt
from nexus_assets.core.dashboard.days import day_status, describe_day, has_data
from nexus_assets.core.dashboard.inputs import AssetSummary, DaySummary, PageInputs, column
from nexus_assets.core.dashboard.markup import attrs, document, text
from nexus_assets.core.dashboard.page import SIGNAL_MARK
from nexus_assets.core.dashboard.site import INDEX, history_path, page_path, url
from nexus_assets.core.freshness import DayStatus

__all__ = ["summarise", "render_index", "render_history"]


def summarise(inputs: PageInputs) -> DaySummary:
    """The page of ``inputs`` at a glance (its raw and optimised signal)."""
    signals = inputs.signals
    day = np.datetime64(inputs.date, "ns")
    of_day = column(signals, "date") == day
    variants = column(signals, "variant")
    labels, nets, tiers = (column(signals, c) for c in ("signal", "net_prob", "tier"))

    def of(variant: str) -> tuple[str | None, float | None, str | None]:
        rows = np.flatnonzero(of_day & (variants == variant))
        if not len(rows):
            return None, None, None
        i = rows[0]
        net = None if fmt.is_missing(nets[i]) else float(nets[i])
        return str(labels[i]), net, str(tiers[i])

    signal, net, tier = of("raw")
    optimised, optimised_net, _ = of("optimised")
    status = day_status(inputs.status.day_status, inputs.calendar, inputs.date)
    return DaySummary(inputs.date, signal, net, tier, optimised, optimised_net,
                      None if status is None else status.value)


def _status(day: DaySummary, asset: AssetSummary) -> DayStatus | None:
    return day_status(day.day_status, asset.calendar, day.date)


def _with_data(asset: AssetSummary) -> list[DaySummary]:
    """The asset's days that have data (see :func:`.days.has_data`), by date."""
    return [d for d in sorted(asset.days, key=lambda d: d.date) if has_data(_status(d, asset))]


def _badge(signal: str | None, net: float | None, field: str) -> str:
    if signal is None:
        return f'<span{attrs(class_="badge NEUTRAL", data_field=field, data_value="")}>no signal</span>'
    cls = signal if signal in SIGNAL_MARK else "NEUTRAL"
    shown = f"{SIGNAL_MARK.get(cls, '')} {signal} {fmt.signed_prob(net)}"
    return (f'<span{attrs(class_=f"badge {cls}", data_field=field, data_value=signal, data_net_prob=fmt.exact(net))}>'
            f"{text(shown)}</span>")


def _freshness(asset: AssetSummary) -> str:
    cls = asset.freshness if asset.freshness in ("fresh", "late") else "unknown"
    detail = f'<div class="note">{text(asset.freshness_detail)}</div>' if asset.freshness_detail else ""
    return (f'<span{attrs(class_=f"badge {cls}", data_field="freshness", data_value=asset.freshness)}>'
            f"{text(asset.freshness)}</span>{detail}")


def render_index(assets: Iterable[AssetSummary]) -> str:
    """``<site>/index.html``: per asset its latest page, signal and freshness, and its history link."""
    ordered = sorted(assets, key=lambda a: a.asset)
    cards = []
    for asset in ordered:
        days = sorted(asset.days, key=lambda d: d.date)
        with_data = _with_data(asset)
        history = url(history_path(asset.asset))
        if with_data:
            latest = with_data[-1]
            title = f'<a{attrs(href=url(page_path(asset.asset, latest.date)), data_nav="latest")}>{text(asset.display_name)}</a>'
            facts = (
                f'<dt>latest day with data</dt><dd data-field="latest_date">{latest.date.isoformat()}</dd>'
                f"<dt>raw</dt><dd>{_badge(latest.signal, latest.net_prob, 'signal')} "
                f'<span class="tier">{text(latest.tier or "")}</span></dd>'
                f"<dt>optimised</dt><dd>{_badge(latest.optimised_signal, latest.optimised_net_prob, 'optimised_signal')}</dd>"
            )
        else:
            title = text(asset.display_name)
            facts = "<dt>latest day with data</dt><dd>none yet</dd>"
        if days and (not with_data or days[-1].date > with_data[-1].date):
            last = days[-1]
            facts += (f'<dt>last page</dt><dd><a{attrs(href=url(page_path(asset.asset, last.date)), data_nav="last_page")}>'
                      f"{text(describe_day(_status(last, asset), last.date))}</a></dd>")
        facts += f"<dt>freshness</dt><dd>{_freshness(asset)}</dd>"
        facts += (f'<dt>history</dt><dd><a{attrs(href=history, data_nav="history")}>'
                  f"{fmt.count(len(days), 'page')}</a></dd>")
        cards.append(
            f'<section{attrs(class_="panel", data_asset=asset.asset)}><h2>{title}</h2>'
            f'<div class="subtitle">{text(asset.asset)} \u00b7 {text(asset.category)} \u00b7 {text(asset.calendar)}</div>'
            f'<dl class="facts">{facts}</dl></section>'
        )
    latest_dates = [days[-1].date for days in map(_with_data, ordered) if days]
    through = f" \u00b7 data through {max(latest_dates).isoformat()}" if latest_dates else ""
    header = (f"<div><h1>Nexus dashboard</h1><div class=\"subtitle\">{fmt.count(len(ordered), 'asset')}"
              f"{text(through)}</div></div>")
    body = f'<div class="asset-grid">{"".join(cards)}</div>' if cards else '<p class="empty">No pages yet.</p>'
    return document(title="Nexus dashboard", header=header, body=body, main_class="index")


def render_history(asset: AssetSummary) -> str:
    """``<site>/asset=<asset>/index.html``: a calendar of the asset's pages, coloured by raw signal."""
    days = {d.date: d for d in asset.days}
    here = history_path(asset.asset)
    months = []
    if days:
        first, last = min(days), max(days)
        year, month = first.year, first.month
        while (year, month) <= (last.year, last.month):
            months.append(_month(year, month, days, asset))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    with_data = _with_data(asset)
    nav = [f'<a{attrs(href="../" + INDEX, data_nav="index")}>all assets</a>']
    if with_data:
        latest = with_data[-1].date
        nav.append(f'<a{attrs(href=_from(here, page_path(asset.asset, latest)), data_nav="latest")}>latest: '
                   f"{latest.isoformat()}</a>")
    header = (f"<div><h1>{text(asset.display_name)}</h1><div class=\"subtitle\">{text(asset.asset)} \u00b7 "
              f"{text(asset.category)} \u00b7 history of {fmt.count(len(days), 'page')} "
              f"({fmt.count(len(with_data), 'day')} with data)</div></div>"
              f'<nav class="pager" aria-label="pages">{"".join(nav)}</nav>')
    legend = ('<div class="legend"><span class="badge BULLISH">\u25b2 BULLISH</span>'
              '<span class="badge BEARISH">\u25bc BEARISH</span><span class="badge NEUTRAL">\u25cf NEUTRAL</span>'
              + "".join(f'<span class="badge {cls}">{text(label)}</span>' for cls, label in _KEY) + "</div>")
    body = (f'<section class="panel" data-panel="history"><h2>Pages by day (raw signal)</h2>{legend}'
            f'<div class="months">{"".join(months)}</div></section>') if months else '<p class="empty">No pages yet.</p>'
    return document(title=f"{asset.display_name} \u00b7 history", header=header, body=body, main_class="history")


def _from(here: str, target: str) -> str:
    return url("../" * here.count("/") + target)


# Calendar cells of days without a signal: (class, legend label) and the class of each status.
_KEY = (("no-signal", "no signal"), ("no-session", "no session"), ("holiday", "holiday"),
        ("unpublished", "not yet published"))
_CELL = {DayStatus.NO_SESSION: "no-session", DayStatus.OUTSIDE_HISTORY: "no-session", DayStatus.HOLIDAY: "holiday",
         DayStatus.UNPUBLISHED: "unpublished"}


def _cell(summary: DaySummary, status: DayStatus | None) -> tuple[str, str]:
    """The calendar class of a day and its tooltip."""
    if not has_data(status):
        return _CELL[status], describe_day(status, summary.date)
    if summary.signal is None:
        reason = "no signal (fewer than two horizons have a forecast)" if status is DayStatus.PUBLISHED else "no signal"
        return "no-signal", f"{summary.date.isoformat()}: {reason}"
    cls = summary.signal if summary.signal in SIGNAL_MARK else "NEUTRAL"
    return cls, f"{summary.date.isoformat()}: {summary.signal} {fmt.signed_prob(summary.net_prob)}"


def _month(year: int, month: int, days: dict[dt.date, DaySummary], asset_summary: AssetSummary) -> str:
    asset = asset_summary.asset
    here = history_path(asset)
    weeks = []
    for week in calendar.Calendar(firstweekday=0).monthdatescalendar(year, month):
        cells = []
        for day in week:
            if day.month != month:
                cells.append("<td></td>")
                continue
            summary = days.get(day)
            if summary is None:
                cells.append(f"<td><span>{day.day}</span></td>")
                continue
            cls, tip = _cell(summary, _status(summary, asset_summary))
            cells.append(f'<td><a{attrs(href=_from(here, page_path(asset, day)), class_=cls, title=tip, data_date=day.isoformat())}>'
                         f"{day.day}</a></td>")
        weeks.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{name}</th>" for name in ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"))
    return (f'<div class="month"><h3>{calendar.month_name[month]} {year}</h3>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(weeks)}</tbody></table></div>")
