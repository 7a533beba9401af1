"""The metric arithmetic on synthetic curves with known answers."""

from __future__ import annotations

import numpy as np

from engine.data.tts import Phoneme
from engine.eval import metrics as E


def _speechy(n=500, seed=0):
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(rng.random(n), 1.5)


def test_lag_corr_finds_the_shift_and_scores_alignment():
    ref = _speechy()
    late = np.concatenate([np.full(4, ref[0]), ref[:-4]])  # the measured mouth moves 4 frames late
    good, bad = E.lag_corr(ref, ref), E.lag_corr(late, ref)
    assert good.r0 > 0.99 and good.offset == 0
    assert bad.offset == 4 and bad.r > 0.95 and bad.r0 < 0.3
    assert E.lag_corr(np.full(500, 0.2), ref).r0 == 0.0  # a frozen mouth carries no sync


def test_detrending_ignores_slow_posture_changes():
    ref = _speechy()
    drift = np.linspace(0, 3, 500)  # slow drift much larger than the articulation
    assert E.lag_corr(ref + drift, ref).r0 > 0.9


def test_bilabial_closure_counts_closed_lips():
    fps = 25
    ph = [Phoneme("b", 0.40, 0.48), Phoneme("a", 0.48, 0.7), Phoneme("m", 1.0, 1.08), Phoneme("p", 1.6, 1.66)]
    mouth = np.full(50, 0.3)
    mouth[10:12] = 0.01  # b closes
    mouth[25:27] = 0.02  # m closes
    rate, n = E.bilabial_closure(mouth, ph, fps)
    assert n == 3 and abs(rate - 2 / 3) < 1e-9


def test_stuck_shares_and_drift():
    voiced = np.zeros(200, bool)
    voiced[50:150] = True
    mouth = np.full(200, 0.2)  # open even in the silences: stuck open
    so, sc = E.stuck_shares(mouth, voiced, 25)
    assert so == 1.0 and sc == 0.0
    mouth = np.where(voiced, 0.0, 0.0)
    so, sc = E.stuck_shares(mouth, voiced, 25)
    assert so == 0.0 and sc == 1.0
    assert abs(E.drift_slope(np.arange(1500) / 1500.0, 25) - 1.0) < 1e-6  # +1 over one minute


def test_jitter_and_head_track():
    lm = np.zeros((10, 478, 3))
    lm[:, 468, 0], lm[:, 473, 0] = -1, 1  # IOD = 2
    assert E.jitter(lm) == 0.0
    shaky = lm.copy()
    shaky[::2, :, 1] += 0.2
    assert E.jitter(shaky) > 0.1
    moved = lm.copy()
    moved[:, 168, 0] = np.arange(10) * 0.2
    assert abs(E.head_track(moved)[-1, 0] - 0.9) < 1e-6
