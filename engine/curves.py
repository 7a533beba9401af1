"""Pure numpy helpers on per-frame curves, shared by data ingestion and evaluation (no project imports)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return 0.0
    a, b = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else 0.0  # a frozen curve carries no sync: 0


def detrend(x: np.ndarray, sigma: float) -> np.ndarray:
    """Remove slow components (posture, drift) slower than ~`sigma` frames; NaNs stay NaN."""
    ok = np.isfinite(x)
    if sigma <= 0 or ok.sum() < 2:
        return x
    filled = np.interp(np.arange(len(x)), np.flatnonzero(ok), x[ok])
    out = filled - gaussian_filter1d(filled, sigma)
    out[~ok] = np.nan
    return out


def lagged_pearson(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Correlation of x at t + k with y at t (x lags y by k frames when k > 0); equal-length curves."""
    n = min(len(x), len(y))
    return pearson(x[k:n], y[: n - k]) if k >= 0 else pearson(x[: n + k], y[-k:n])
