import ast
import datetime as dt
import pathlib

import pytest

from nexus_assets.core import periods
from nexus_assets.core.periods import ANNUALIZATION, has_session, periods_per_year


def test_periods_per_year():
    assert dict(ANNUALIZATION) == {"exchange": 252, "crypto": 365}
    assert periods_per_year("exchange") == 252 and periods_per_year("crypto") == 365
    with pytest.raises(ValueError, match="'lunar'"):
        periods_per_year("lunar")


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
