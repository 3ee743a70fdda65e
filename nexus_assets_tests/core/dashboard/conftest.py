import dataclasses

import pytest

from nexus_assets.core.dashboard import DataStatus, PageInputs
from nexus_assets_tests.core.dashboard.tables import HOSTILE, HOSTILE_NAME, page_inputs, synthetic_history


@pytest.fixture(scope="session")
def history():
    """200 exchange days: warm-up (no forecasts) until ~day 60, the search from day 120."""
    return synthetic_history(days=200, seed=11)


@pytest.fixture(scope="session")
def inputs(history):
    """A late page: every panel has data."""
    return page_inputs(history, history.dates[-1].date())


@pytest.fixture(scope="session")
def warmup_inputs(history):
    """An early page: prices only, no forecast, signal, trade or search yet."""
    return page_inputs(history, history.dates[2].date())


def make_hostile(inputs: PageInputs) -> PageInputs:
    """Every upstream string replaced by markup that would run if it were not escaped."""
    ensembles = inputs.ensembles.assign(strategy=HOSTILE, best_child=HOSTILE)
    window = inputs.ensemble_window.assign(best_child=HOSTILE)
    signals = inputs.signals.assign(combination=HOSTILE, horizons=HOSTILE, config_source=HOSTILE, tier=HOSTILE,
                                    weighted_signal=HOSTILE)
    statistics = inputs.statistics.assign(definition=HOSTILE)
    statistics.loc[0, "statistic"] = "<script>alert(3)</script>"
    board = inputs.leaderboard.assign(combination=HOSTILE, method=HOSTILE, horizons=HOSTILE)
    trades = inputs.trades.assign(status=HOSTILE)
    status = DataStatus(partition_key=HOSTILE, source=HOSTILE, contract_version=HOSTILE, upstream_watermark=None,
                        freshness=HOSTILE, freshness_detail=HOSTILE, rows=1, models=2, day_status=HOSTILE)
    return dataclasses.replace(inputs, display_name=HOSTILE_NAME, category=HOSTILE, calendar=HOSTILE,
                               ensembles=ensembles, ensemble_window=window, signals=signals, statistics=statistics,
                               leaderboard=board, trades=trades, status=status)


@pytest.fixture(scope="session")
def hostile_inputs(inputs):
    return make_hostile(inputs)
