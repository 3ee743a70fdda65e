import ast
import datetime as dt
import math
import pathlib

import pytest

from nexus_assets.core import periods
from nexus_assets.core.periods import ANNUALIZATION, calendar_days, has_session, periods_per_year


def test_periods_per_year():
    assert dict(ANNUALIZATION) == {"exchange": 252, "crypto": 365}
    assert periods_per_year("exchange") == 252 and periods_per_year("crypto") == 365
    with pytest.raises(ValueError, match="'lunar'"):
        periods_per_year("lunar")


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
def test_the_annualisation_factors_are_defined_once():
    """No module but core/periods.py has 252 or 365 as a number in its code (texts may say them)."""
    package = pathlib.Path(periods.__file__).parents[1]
    offenders = [
        f"{path.relative_to(package)}:{node.lineno}"
        for path in package.rglob("*.py") if path.name != "periods.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value in (252, 365)
    ]
    assert not offenders, offenders


def test_sessions_by_calendar():
    """An exchange trades Monday to Friday (holidays are learned from upstream), crypto every day."""
    week = [dt.date(2018, 11, 12) + dt.timedelta(days=i) for i in range(7)]  # Monday to Sunday
    assert [has_session("exchange", d) for d in week] == [True] * 5 + [False] * 2
    assert all(has_session("crypto", d) for d in week)
    with pytest.raises(ValueError, match="'lunar'"):
        has_session("lunar", week[0])


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
def test_calendar_days_hold_the_sessions_with_room_for_holidays():
    """Every window of ``calendar_days(n)`` days, whatever weekday it ends on, holds ``n`` weekdays
    and a spare one for every 50 sessions (exchange holidays); crypto trades every day."""
    assert [calendar_days(n, "crypto") for n in (0, 1, 63, 365)] == [0, 1, 63, 365]
    assert [calendar_days(n, "exchange") for n in (1, 5, 50, 252)] == [8, 13, 76, 369]
    for n in range(1, 400):
        for end in (dt.date(2025, 1, 6) + dt.timedelta(days=k) for k in range(7)):
            window = (end - dt.timedelta(days=i) for i in range(calendar_days(n, "exchange")))
            assert sum(has_session("exchange", day) for day in window) >= n + math.ceil(n / 50), (n, end)
