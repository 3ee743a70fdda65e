"""What the dashboard stores next to a page and shows of a day's data (core/dashboard/inputs.py)."""

import datetime as dt
import json

from nexus_assets.catalog import CatalogAsset
from nexus_assets.core.dashboard import DataStatus, DaySummary, data_status, summary_json


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


def test_data_status_is_the_ingestion_record_judged_the_morning_after_the_day():
    entry = CatalogAsset(key="1_X", project_id=1, name="X", display_name="X", category="c", calendar="exchange",
                         start_date=dt.date(2025, 1, 1), source="api")
    friday = dt.date(2025, 1, 3)
    recorded = {"upstream_watermark": "2025-01-03", "source": "synthetic", "contract_version": "1", "rows": 10,
                "models": 5, "status": "published"}
    assert data_status(entry, friday, recorded, "1_X|2025-01-03") == DataStatus(
        partition_key="1_X|2025-01-03", source="synthetic", contract_version="1", upstream_watermark=friday,
        freshness="fresh", freshness_detail="1_X: fresh through 2025-01-03", rows=10, models=5, day_status="published")
    late = data_status(entry, friday, {"upstream_watermark": "2025-01-01"}, "1_X|2025-01-03")
    assert (late.freshness, late.source, late.upstream_watermark) == ("late", "api", dt.date(2025, 1, 1))
    assert "before the expected 2025-01-03" in late.freshness_detail
    nothing = data_status(entry, friday, {}, "1_X|2025-01-03")
    assert (nothing.freshness, nothing.freshness_detail, nothing.rows) == ("unknown", "no upstream watermark recorded", None)
