"""What the dashboard stores next to a page and shows of a day's data (core/dashboard/inputs.py)."""

import datetime as dt
import json

from nexus_assets.core.dashboard import DaySummary, summary_json


def test_summary_json_is_the_days_summary_and_the_watermark_as_plain_json():
    summary = DaySummary(dt.date(2025, 3, 4), "BULLISH", 0.25, "moderate", "NEUTRAL", 0.0, "published")
    assert summary_json(summary, dt.date(2025, 3, 5)) == {
        "upstream_watermark": "2025-03-05", "date": "2025-03-04", "signal": "BULLISH", "net_prob": 0.25,
        "tier": "moderate", "optimised_signal": "NEUTRAL", "optimised_net_prob": 0.0, "day_status": "published",
    }
    empty = DaySummary(dt.date(2025, 3, 8), None, None, None, None, None)
    stored = json.dumps(summary_json(empty, None), sort_keys=True)
    assert stored == ('{"date": "2025-03-08", "day_status": null, "net_prob": null, "optimised_net_prob": null, '
                      '"optimised_signal": null, "signal": null, "tier": null, "upstream_watermark": null}')
