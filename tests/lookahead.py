"""A shared check for streaming models: what frame t depends on ends exactly where its lookahead ends."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.audio.speech import SAMPLES_PER_FRAME


def assert_lookahead_ends_at(stream: Callable[[np.ndarray], np.ndarray], audio: np.ndarray, t: int, end: int) -> None:
    """`stream(audio)` -> motion frames. Noise after sample `end` changes no frame up to t; noise in the video
    frame of audio just before `end` changes frame t."""
    base = stream(audio)
    after = audio.copy()
    after[end:] = 0.3 * np.random.default_rng(3).standard_normal(len(after) - end).astype(np.float32)
    np.testing.assert_allclose(stream(after)[: t + 1], base[: t + 1], atol=1e-6)
    at = audio.copy()
    at[end - SAMPLES_PER_FRAME: end] = 0.3 * np.random.default_rng(4).standard_normal(SAMPLES_PER_FRAME).astype(np.float32)
    assert np.abs(stream(at)[t] - base[t]).max() > 1e-4
