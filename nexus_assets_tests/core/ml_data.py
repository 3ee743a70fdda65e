"""Seeded ``ml_predictions`` frames with real-data traits for the ML signal, record and accuracy tests:
exchange-calendar gaps (weekends, a holiday week), days without a model (before the first one),
NaN probabilities (warming up), model versions that change on a retraining cadence (one of them
serving again later), probabilities exactly at 0.5 and at the threshold's edge, and ties in
price (zero moves)."""

import hashlib

import numpy as np
import pandas as pd

START = "2025-01-01"


def ml_predictions(days: int = 90, *, seed: int = 0, horizons=(1, 5), freq: str = "B") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=days + 5, freq=freq)
    dates = dates[(dates < "2025-02-10") | (dates > "2025-02-14")][:days]  # a week without trading
    price = 60 * np.exp(np.cumsum(rng.normal(0, 0.02, len(dates))))
    price = np.round(price, 1)  # rounding makes some days' moves exactly zero
    price[10:13] = price[9] if len(price) > 13 else price[10:13]  # ... and a flat stretch
    frames = []
    for h in horizons:
        p = np.clip(rng.normal(0.5, 0.2, len(dates)), 0, 1)
        p[rng.random(len(dates)) < 0.05] = 0.5
        p[rng.random(len(dates)) < 0.05] = 0.8  # confidence at a 0.6 threshold's edge
        version = np.array([f"v{1 + i // 15}-h{h}" for i in range(len(dates))], dtype=object)
        version[60:70] = f"v1-h{h}"  # an old version serves again (a rollback)
        version[:8] = ""  # no model yet
        p[:8] = np.nan
        p[20:23] = np.nan  # warming up after a gap
        frames.append(pd.DataFrame({
            "date": dates,
            "horizon": np.int64(h),
            "model_version": version.astype(str),
            "model_sha256": np.where(version == "", "", [hashlib.sha256(v.encode()).hexdigest() for v in version]),
            "probability_up": p,
            "confidence": np.abs(p - 0.5) * 2.0,
            "price": price,
        }))
    return pd.concat(frames, ignore_index=True).sort_values(["date", "horizon"], kind="stable").reset_index(drop=True)
