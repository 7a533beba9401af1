"""The streaming session: audio in pieces of any size gives the same motion as the whole clip at once,
the right number of frames, tail forcing touches only the tail frame of each chunk, identity and
controls switch mid-stream, reset starts afresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.features import log_mel
from engine.models.student import MotionStudent
from engine.models.teacher import MotionTeacher
from engine.runtime.config import SessionConfig
from engine.runtime.stream import StudentStream, stream_motion


def _random(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    student = _random(MotionStudent(dim=32, depth=1, heads=2, chunk=3, window=6, audio={"channels": 16}), 0)
    teacher = _random(MotionTeacher(dim=32, depth=1, heads=2, window=20, audio={"channels": 16}), 1)
    return student, teacher


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2 + 333) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_pieces_of_any_size_give_the_same_motion(models, audio):
    student, _ = models
    n = int(np.ceil(len(audio) / 640))
    outs = []
    for vad in (False, True):
        outs = []
        for piece in (640, 97, 5000):
            sess = StudentStream(student, SessionConfig(steps=2, tail_forcing=False, voice_activity=vad))
            mo = [sess.push_audio(audio[i:i + piece]) for i in range(0, len(audio), piece)]
            mo.append(sess.finish())
            outs.append(np.concatenate(mo))
        assert all(len(o) == n for o in outs)
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
        np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
        if not vad:  # precomputed rows carry no audio for the voice-activity gate
            offline = stream_motion(student, log_mel(audio), n, SessionConfig(steps=2, tail_forcing=False))
            np.testing.assert_allclose(outs[0], offline, atol=1e-5)
    assert np.abs(np.diff(outs[0], axis=0)).max() > 0  # it moves


def test_latency_is_chunk_plus_lookahead(models, audio):
    """A chunk comes out as soon as its audio and the encoder's lookahead are in (and no sooner)."""
    student, _ = models
    k, la = student.config.chunk, student.audio_encoder.config.lookahead
    sess = StudentStream(student, SessionConfig(steps=1, tail_forcing=False))
    got = 0
    for f in range(1, 31):  # audio arrives one video frame (40 ms) at a time
        got += len(sess.push_audio(audio[(f - 1) * 640: f * 640]))
        whole = f - 1  # frames whose 4 mel windows are complete (the last window reaches into the next frame)
        assert got == max(0, (whole - la) // k * k), f


def test_tail_forcing_changes_only_tail_frames(models, audio):
    student, teacher = models
    mel = log_mel(audio)
    n = 12
    plain = stream_motion(student, mel, n, SessionConfig(steps=2, tail_forcing=False))
    forced = stream_motion(student, mel, n, SessionConfig(steps=2, tail_forcing=True), corrector=teacher)
    k = student.config.chunk
    np.testing.assert_allclose(forced[:k], plain[:k], atol=1e-6)  # chunk 0: nothing to anchor to yet
    np.testing.assert_allclose(forced[k:2 * k - 1], plain[k:2 * k - 1], atol=1e-6)  # chunk 1 before its tail
    assert np.abs(forced[2 * k - 1] - plain[2 * k - 1]).max() > 1e-4  # its tail frame is corrected
    with pytest.raises(ValueError, match="corrector"):
        StudentStream(student, SessionConfig(tail_forcing=True))


def test_identity_switch_controls_and_reset(models, audio):
    student, _ = models
    cfg = SessionConfig(steps=1, tail_forcing=False)
    sess = StudentStream(student, cfg)
    first = sess.push_audio(audio[:640 * 12])
    ref = StudentStream(student, cfg)
    ref.push_audio(audio[:640 * 12])
    sess.set_identity(np.ones(12, np.float32), "singing")
    sess.set_control("smile", 0.8)
    a = sess.push_audio(audio[640 * 12:640 * 24])
    b = ref.push_audio(audio[640 * 12:640 * 24])
    assert len(a) == len(b) > 0 and np.abs(a - b).max() > 1e-4  # switched without a restart
    with pytest.raises(ValueError, match="unknown control"):
        sess.set_control("frown", 1.0)
    sess.reset()
    again = sess.push_audio(audio[:640 * 12])
    assert sess.frames_done == len(again)
    fresh = StudentStream(student, cfg, shape=np.ones(12, np.float32), style="singing")
    fresh.set_control("smile", 0.8)
    np.testing.assert_allclose(again, fresh.push_audio(audio[:640 * 12]), atol=1e-5)
    assert len(first) == len(again)
