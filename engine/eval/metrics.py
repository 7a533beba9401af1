"""Metrics on measured curves (pure numpy): lip sync, bilabial closure, stability, jitter, sharpness.

Conventions: curves are per video frame; mouth opening is the inner-lip gap over the interocular
distance (IOD) as re-detected on rendered frames (engine.face.tracking.mouth_opening).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from engine import motion as M
from engine.curves import detrend, lagged_pearson, pearson  # noqa: F401 (part of the metrics API)
from engine.data.tts import Phoneme
from engine.data.visemes import target_vector, viseme_of
from engine.face import topology as T

CLOSED_GAP = 0.05
"""Inner-lip gap (IOD units) at or below which lips count as closed."""


@dataclass
class LagCorr:
    r: float
    """Pearson correlation at the best offset (the sync quality if timing were fixed)."""
    offset: int
    """Frames by which the measured curve lags the reference (+) or leads it (-)."""
    r0: float
    """Correlation at offset 0 (the sync score as delivered)."""


def lag_corr(measured: np.ndarray, reference: np.ndarray, max_offset: int = 10,
             detrend_frames: float = 12.0) -> LagCorr:
    """Correlation of `measured` against `reference` over offsets -max..max frames. Both curves are
    detrended first (components slower than ~0.5 s removed): sync lives in articulation, and slow
    posture changes would otherwise make a shifted curve look nearly as good as an aligned one."""
    n = min(len(measured), len(reference))
    x = detrend(measured[:n].astype(np.float64), detrend_frames)
    y = detrend(reference[:n].astype(np.float64), detrend_frames)
    best_r, best_k = -2.0, 0
    for k in range(-max_offset, max_offset + 1):
        r = lagged_pearson(x, y, k)
        if r > best_r:
            best_r, best_k = r, k
    return LagCorr(r=best_r, offset=best_k, r0=pearson(x, y))


def phoneme_openness(phonemes: list[Phoneme], n_frames: int, fps: float) -> np.ndarray:
    """Ground-truth mouth opening per frame from phoneme timings: each phoneme's viseme opening
    (jawOpen - mouthClose of its target), held over the phoneme, lightly smoothed."""
    t = (np.arange(n_frames) + 0.5) / fps
    out = np.zeros(n_frames)
    jaw, close = M.index("jawOpen"), M.index("mouthClose")
    for ph in phonemes:
        v = target_vector(viseme_of(ph.ipa))
        sel = (t >= ph.start) & (t < ph.end)
        out[sel] = v[jaw] - v[close]
    return gaussian_filter1d(out, 0.7)


def bilabial_closure(mouth: np.ndarray, phonemes: list[Phoneme], fps: float,
                     threshold: float = CLOSED_GAP) -> tuple[float, int]:
    """Share of p/b/m phonemes during which the lips actually close (gap <= threshold within the
    phoneme, one frame of tolerance either side), and how many there were."""
    hits, n = 0, 0
    for ph in phonemes:
        if viseme_of(ph.ipa) != "PP":
            continue
        a = max(int(np.floor(ph.start * fps)) - 1, 0)
        b = min(int(np.ceil(ph.end * fps)) + 1, len(mouth))
        seg = mouth[a:b]
        seg = seg[np.isfinite(seg)]
        if not len(seg):
            continue
        n += 1
        hits += bool(seg.min() <= threshold)
    return (hits / n if n else float("nan")), n


def voiced_frames(audio: np.ndarray, sr: int, n_frames: int, fps: float) -> np.ndarray:
    """Frames with speech energy: RMS above 10% of the clip's 95th percentile and above -50 dBFS."""
    per = sr / fps
    rms = np.array([np.sqrt(np.mean(audio[int(i * per): int((i + 1) * per)] ** 2))
                    if int(i * per) < len(audio) else 0.0 for i in range(n_frames)])
    ref = np.percentile(rms, 95) if len(rms) else 0.0
    return (rms > 0.1 * ref) & (rms > 10 ** (-50 / 20))


def long_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    """Frames that belong to runs of True of at least `min_len` frames."""
    out = np.zeros_like(mask)
    i = 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            if j - i >= min_len:
                out[i:j] = True
            i = j
        else:
            i += 1
    return out


def stuck_shares(mouth: np.ndarray, voiced: np.ndarray, fps: float, closed: float = CLOSED_GAP,
                 open_: float = 0.15, min_seconds: float = 1.0) -> tuple[float, float]:
    """(stuck open, stuck closed): share of silent frames spent in >= 1 s runs with the mouth open, and
    of voiced frames spent in >= 1 s runs with the mouth closed."""
    n = min(len(mouth), len(voiced))
    m, v = mouth[:n], voiced[:n]
    k = max(1, int(round(min_seconds * fps)))
    stuck_open = long_runs((m > open_) & ~v, k)
    stuck_closed = long_runs((m <= closed) & v, k)
    so = stuck_open.sum() / max((~v).sum(), 1)
    sc = stuck_closed.sum() / max(v.sum(), 1)
    return float(so), float(sc)


def drift_slope(y: np.ndarray, fps: float) -> float:
    """Least-squares slope of `y` per minute (NaNs ignored)."""
    t = np.arange(len(y)) / fps / 60.0
    ok = np.isfinite(y)
    if ok.sum() < 3 or np.ptp(t[ok]) == 0:
        return 0.0
    return float(np.polyfit(t[ok], y[ok], 1)[0])


def iod(lm: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lm[..., 468, :2] - lm[..., 473, :2], axis=-1)


def jitter(landmarks: np.ndarray) -> float:
    """Temporal jitter: mean |second difference| of landmark positions per frame, in IOD units
    (a smooth motion has ~0; flicker and tracking noise raise it)."""
    if len(landmarks) < 3:
        return 0.0
    acc = np.linalg.norm(landmarks[2:, :, :2] - 2 * landmarks[1:-1, :, :2] + landmarks[:-2, :, :2], axis=-1)
    acc = acc.mean(-1) / iod(landmarks[1:-1])
    return float(np.nanmean(acc))


def head_track(landmarks: np.ndarray) -> np.ndarray:
    """Head position (nose bridge, landmark 168) per frame relative to the first frame, in IOD units [T, 2]."""
    p = landmarks[:, 168, :2]
    first = np.flatnonzero(np.isfinite(p[:, 0]))
    if not len(first):
        return np.full((len(p), 2), np.nan)
    return (p - p[first[0]]) / np.nanmedian(iod(landmarks))


def mouth_box(lm: np.ndarray, pad: float = 0.35) -> tuple[int, int, int, int]:
    pts = lm[list(T.LIPS_OUTER_UPPER + T.LIPS_OUTER_LOWER), :2]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    w, h = x1 - x0, y1 - y0
    return int(x0 - pad * w), int(y0 - pad * h), int(x1 + pad * w), int(y1 + pad * h)


def sharpness(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian of the grey image inside `box` (higher = sharper)."""
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    crop = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if crop.size == 0:
        return float("nan")
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
