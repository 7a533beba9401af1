"""Style prompts and face-shape features."""

from __future__ import annotations

import numpy as np

from engine.data import styles
from engine.face.shape import SHAPE_DIM, shape_features, standardize


def test_tokenize_known_words_and_report_unknown():
    ids, unknown = styles.tokenize("Singing, quite FAST!")
    assert [styles.STYLE_WORDS[i] for i in ids] == ["singing", "fast"]
    assert unknown == ["quite"]
    assert styles.pad(ids).tolist() == ids + [0] * (styles.MAX_WORDS - len(ids))


def test_prompts_follow_the_clip():
    rng = np.random.default_rng(0)
    sing = {styles.prompt_for({"scenario": "singing"}, rng) for _ in range(40)}
    assert all(any(w in p for w in ("sing", "song")) for p in sing)
    whisper = styles.prompt_for({"scenario": "speech", "voice": "en+whisper"}, rng)
    assert any(w in whisper for w in ("whisper", "quietly", "softly"))
    fast = [styles.prompt_for({"scenario": "hard", "tts": {"rate": 300}}, rng) for _ in range(40)]
    assert sum(any(w in p for w in ("fast", "quick", "rapid")) for p in fast) > 20
    assert all(not styles.tokenize(p)[1] for p in sing | set(fast))  # every generated word is known


def test_shape_features_ignore_position_scale_and_rotation(framed):
    lm = framed.landmarks[:, :2].astype(np.float64)
    f = shape_features(lm)
    assert f.shape == (SHAPE_DIM,) and np.isfinite(f).all()
    a = np.deg2rad(20)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (lm - lm.mean(0)) @ R.T * 1.7 + [40, -25]
    np.testing.assert_allclose(shape_features(moved), f, atol=1e-4)
    z = standardize(f)
    assert np.abs(z).max() < 4  # a real face is within the typical range
    wide = lm.copy()  # widening the mouth raises mouth_width
    for i, sgn in ((61, -1), (291, 1)):
        wide[i, 0] += sgn * 8
    assert shape_features(wide)[0] > f[0] + 0.05
