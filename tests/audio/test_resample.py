"""The streaming resampler (engine.audio.io.StreamResampler) the microphone and the synced microphone use."""

from __future__ import annotations

import numpy as np

from engine.audio.io import StreamResampler, resample


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_pieces_resample_without_seams():
    """Odd piece sizes in, one continuous signal out: equal to the whole signal resampled at once, except the
    filter's few-ms start."""
    x = _tone(44100, 2.0)
    r = StreamResampler(44100, 16000)
    sizes = np.random.default_rng(0).integers(37, 2000, 200)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = np.concatenate([r(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if a < len(x)])
    ref = resample(x, 44100, 16000)
    assert abs(len(out) - len(ref)) < 0.01 * 16000  # all of it, less the filter's delay
    # the tone comes through at its level, and no piece boundary leaves a click: the largest sample-to-sample
    # step is the tone's own (a seam would jump up to the tone's whole amplitude)
    body = out[800:]
    assert abs(np.sqrt(np.mean(body ** 2)) - 0.5 / np.sqrt(2)) < 0.01
    assert np.abs(np.diff(body)).max() < 1.2 * np.abs(np.diff(ref[800:])).max()


def test_equal_rates_pass_through():
    x = _tone(16000, 0.1)
    np.testing.assert_array_equal(StreamResampler(16000, 16000)(x), x)
