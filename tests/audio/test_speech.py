"""Real-speech features and voice activity: streaming == offline, the lookahead is exact (audio after a
chunk's end + L cannot change its frames, audio at it can), the voice-activity gate closes the mouth on
noise and silence and leaves it free on speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import motion as M
from engine.audio.io import load_audio
from engine.audio.speech import (
    SAMPLES_PER_FRAME,
    SpeechFeatureConfig,
    StreamingSpeechFeatures,
    speech_features,
    voice_activity,
)
from engine.models.student import MotionStudent
from engine.runtime.config import SessionConfig
from engine.runtime.stream import StudentStream

from ..lookahead import assert_lookahead_ends_at

SPEECH_AUDIO = {"features": "speech", "n_mels": 384, "mels_per_frame": 2, "lookahead": 0, "feature_lookahead": 2,
                "feature_window": 30, "feature_chunk": 3, "channels": 16}


@pytest.fixture(scope="module")
def speech(data_dir):
    return load_audio(data_dir / "real" / "eng.wav")[: 16000 * 6 + 333]


def _pieces(audio, rng):
    i = 0
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        yield audio[i:i + n]
        i += n


def test_streaming_features_equal_offline(speech):
    cfg = SpeechFeatureConfig()
    offline = speech_features(speech, config=cfg)
    front = StreamingSpeechFeatures(cfg)
    rows = [front.push(p) for p in _pieces(speech, np.random.default_rng(0))] + [front.finish()]
    stream = np.concatenate(rows)
    n = -(-len(speech) // SAMPLES_PER_FRAME)
    assert stream.shape == offline.shape == (2 * n, 384)
    np.testing.assert_array_equal(stream, offline)
    assert np.abs(np.diff(offline, axis=0)).mean() > 0.05  # real features, not a constant


def test_feature_lookahead_is_exact(speech):
    """Chunk c's rows depend on audio up to (c + 1) * k + L frames and not one sample later."""
    cfg = SpeechFeatureConfig(chunk=3, lookahead=2)
    base = speech_features(speech, config=cfg)
    c = 10  # frames 30..32; window ends at frame 35
    end = ((c + 1) * cfg.chunk + cfg.lookahead) * SAMPLES_PER_FRAME
    rows = slice(2 * c * cfg.chunk, 2 * (c + 1) * cfg.chunk)
    after = speech.copy()
    after[end:] = np.random.default_rng(1).standard_normal(len(after) - end).astype(np.float32) * 0.3
    np.testing.assert_array_equal(speech_features(after, config=cfg)[rows], base[rows])
    at = speech.copy()
    at[end - SAMPLES_PER_FRAME: end] = np.random.default_rng(2).standard_normal(SAMPLES_PER_FRAME).astype(np.float32) * 0.3
    assert np.abs(speech_features(at, config=cfg)[rows] - base[rows]).max() > 1e-3


@pytest.fixture(scope="module")
def speech_student():
    torch.manual_seed(0)
    st = MotionStudent(dim=32, depth=1, heads=2, chunk=3, window=6, audio=SPEECH_AUDIO)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in st.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return st.eval()


def _stream(student, audio, vad=False, piece=640):
    sess = StudentStream(student, SessionConfig(steps=1, voice_activity=vad))
    out = [sess.push_audio(audio[i:i + piece]) for i in range(0, len(audio), piece)] + [sess.finish()]
    return np.concatenate(out)


def test_session_lookahead_is_exact(speech_student, speech):
    """Through the whole student session: frame t (the last of its chunk) is fixed once the audio up to
    t + 1 + L frames is in; audio after that cannot change it, audio just before can."""
    k, la = 3, speech_student.audio_encoder.audio_lookahead
    assert la == 2
    t = 32  # last frame of chunk 10
    assert t % k == k - 1
    end = (t + 1 + la) * SAMPLES_PER_FRAME
    for vad in (False, True):  # the voice-activity gate reads no further ahead than the features
        assert_lookahead_ends_at(lambda a: _stream(speech_student, a, vad), speech, t, end)  # noqa: B023 (called here)


def test_gated_session_is_the_same_for_any_piece_size(speech_student, speech):
    """Live (320-sample pieces), render (640) and big pieces give the same gated motion."""
    ref = _stream(speech_student, speech, True, 640)
    for piece in (320, 777, 5000):
        np.testing.assert_allclose(_stream(speech_student, speech, True, piece), ref, atol=1e-6)
    free = _stream(speech_student, speech, False, 640)
    assert not np.allclose(ref[:, list(M.ARTICULATION)], free[:, list(M.ARTICULATION)])  # the gate did act


def test_session_streaming_equals_offline_rows(speech_student, speech):
    """Audio pushed in any pieces == the offline feature rows pushed at once (what render and eval use)."""
    from engine.runtime.stream import stream_motion

    n = -(-len(speech) // SAMPLES_PER_FRAME)
    live = _stream(speech_student, speech, piece=777)
    offline = stream_motion(speech_student, speech_features(speech, n), n, SessionConfig(steps=1, voice_activity=False))
    np.testing.assert_allclose(live, offline, atol=1e-5)


def test_voice_activity_flags(speech):
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(16000 * 4)).astype(np.float32)
    assert voice_activity(noise).mean() < 0.05
    assert voice_activity(np.zeros(16000 * 2, np.float32)).sum() == 0
    flags = voice_activity(speech)
    assert len(flags) == -(-len(speech) // SAMPLES_PER_FRAME)
    assert flags.mean() > 0.5


def test_voice_activity_closes_the_mouth_on_noise(speech_student, speech):
    """The gate zeroes the articulation on noise (the random student would move its mouth) and leaves
    speech alone."""
    rng = np.random.default_rng(5)
    noise = (0.05 * rng.standard_normal(16000 * 3)).astype(np.float32)
    art = list(M.ARTICULATION)
    free = _stream(speech_student, noise, vad=False)
    gated = _stream(speech_student, noise, vad=True)
    assert np.abs(free[:, art]).max() > 0.01
    assert np.abs(gated[10:, art]).max() == 0.0  # closed after the release
    np.testing.assert_allclose(gated[:, [i for i in range(M.DIM) if i not in art]],
                               free[:, [i for i in range(M.DIM) if i not in art]], atol=1e-6)
    talk_free = _stream(speech_student, speech, vad=False)
    talk = _stream(speech_student, speech, vad=True)
    same = np.isclose(talk[:, art], talk_free[:, art], atol=1e-6).all(1)
    assert same.mean() > 0.5  # most speech frames pass untouched
