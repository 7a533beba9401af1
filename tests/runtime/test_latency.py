"""The low-latency mode: latency presets and explicit chunk / lookahead map to the session's geometry, a
low-latency session puts frame t out as soon as the audio up to t + 1 + lookahead frames is in (not later)
and nothing after that changes it, the standard preset is today's session, invalid values are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.audio.io import load_audio
from engine.audio.speech import SAMPLES_PER_FRAME, SpeechFeatureConfig, speech_features
from engine.models.student import MotionStudent
from engine.runtime.config import LATENCY_PRESETS, Latency, SessionConfig
from engine.runtime.stream import StudentStream, stream_motion

from ..lookahead import assert_lookahead_ends_at

SPEECH_AUDIO = {"features": "speech", "n_mels": 384, "mels_per_frame": 2, "lookahead": 0, "feature_lookahead": 2,
                "feature_window": 30, "feature_chunk": 3, "channels": 16}
"""The shipped student's audio geometry (assets/models/student/config.json): chunks of 3, lookahead 2."""


@pytest.fixture(scope="module")
def speech(data_dir):
    return load_audio(data_dir / "real" / "eng.wav")[: 16000 * 2 + 333]


@pytest.fixture(scope="module")
def student():
    st = MotionStudent(dim=32, depth=1, heads=2, chunk=3, window=6, audio=SPEECH_AUDIO)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in st.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    return st.eval()


def _stream(student, audio, cfg: SessionConfig, piece: int = 640) -> np.ndarray:
    sess = StudentStream(student, cfg)
    out = [sess.push_audio(audio[i:i + piece]) for i in range(0, len(audio), piece)] + [sess.finish()]
    return np.concatenate(out)


def test_presets_map_to_chunk_and_lookahead():
    assert [m.value for m in Latency] == ["standard", "low"]
    assert Latency("low") is Latency.LOW and Latency.LOW == "low"
    assert LATENCY_PRESETS[Latency.LOW] == (2, 1)
    assert SessionConfig().latency is Latency.STANDARD
    assert SessionConfig().geometry(3, 2) == (3, 2)  # standard: the model's own
    assert SessionConfig().geometry(4, 1) == (4, 1)
    assert SessionConfig(latency=Latency.LOW).geometry(3, 2) == (2, 1)
    assert SessionConfig(latency="low").latency is Latency.LOW  # settings stored as text
    assert SessionConfig(latency="low", chunk=1).geometry(3, 2) == (1, 1)  # explicit values win
    assert SessionConfig(latency="low", lookahead=0).geometry(3, 2) == (2, 0)
    assert SessionConfig(latency="low", chunk=3, lookahead=2).geometry(3, 2) == (3, 2)
    assert SessionConfig(chunk=2, lookahead=0).geometry(3, 2) == (2, 0)
    assert SessionConfig(lookahead=1).geometry(3, 2) == (3, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"chunk": 0}, "chunk must be .* from 1 to 3"), ({"chunk": 4}, "chunk must be"), ({"chunk": 1.5}, "chunk must be"),
    ({"chunk": True}, "chunk must be"), ({"lookahead": -1}, "lookahead must be .* from 0 to 2"),
    ({"lookahead": 3}, "lookahead must be"), ({"latency": "fast"}, "latency must be one of standard, low"),
])
def test_invalid_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SessionConfig(**kwargs)


def test_lookahead_of_a_logmel_model_cannot_change():
    """A log-mel model reads ahead in its convolutions (fixed by training); only its chunk may change."""
    st = MotionStudent(dim=32, depth=1, heads=2, chunk=3, window=6, audio={"channels": 16, "lookahead": 1}).eval()
    assert StudentStream(st, SessionConfig(chunk=1)).chunk == 1
    assert StudentStream(st, SessionConfig(chunk=2, lookahead=1)).audio_lookahead == 1  # its own: fine
    with pytest.raises(ValueError, match="no lookahead of its own"):
        StudentStream(st, SessionConfig(lookahead=2))
    with pytest.raises(ValueError, match="shorter than the audio encoder's own"):
        StudentStream(st, SessionConfig(latency="low", lookahead=0))


@pytest.mark.parametrize("chunk, lookahead", [(1, 0), (1, 1), (2, 1), (3, 2)])
def test_frame_is_out_once_its_lookahead_is_in(student, speech, chunk, lookahead):
    """Audio arriving one video frame at a time: after f frames of audio, exactly the whole chunks whose
    frames t have t + 1 + lookahead <= f are out (so frame t waits for lookahead frames after its chunk's
    end, and not one more)."""
    sess = StudentStream(student, SessionConfig(chunk=chunk, lookahead=lookahead))
    assert (sess.chunk, sess.audio_lookahead) == (chunk, lookahead)
    assert sess.gate.vad.config.lookahead == lookahead  # the voice gate waits no longer than the features
    got = 0
    for f in range(1, 31):
        got += len(sess.push_audio(speech[(f - 1) * SAMPLES_PER_FRAME: f * SAMPLES_PER_FRAME]))
        assert got == max(0, (f - lookahead) // chunk * chunk), f


@pytest.mark.parametrize("chunk, lookahead", [(1, 0), (1, 1), (2, 1)])
def test_no_audio_after_the_lookahead_changes_a_frame(student, speech, chunk, lookahead):
    """Frame t (the last of its chunk) is fixed by the audio up to t + 1 + lookahead frames: noise after it
    changes nothing up to t; noise in the frame just before it changes frame t."""
    t = 17  # the last frame of its chunk for k = 1, 2 (and 3)
    assert t % chunk == chunk - 1
    end = (t + 1 + lookahead) * SAMPLES_PER_FRAME
    speech = speech[: end + 3 * SAMPLES_PER_FRAME]
    for vad in (False, True):
        cfg = SessionConfig(chunk=chunk, lookahead=lookahead, voice_activity=vad)
        assert_lookahead_ends_at(lambda a: _stream(student, a, cfg), speech, t, end)  # noqa: B023 (called here)


def test_low_mode_streaming_equals_offline_rows(student, speech):
    """Audio in odd pieces == the session front end's offline rows pushed at once (render, eval)."""
    cfg = SessionConfig(latency=Latency.LOW, voice_activity=False)
    n = -(-len(speech) // SAMPLES_PER_FRAME)
    sess = StudentStream(student, cfg)
    assert sess.front.speech == SpeechFeatureConfig(chunk=2, lookahead=1, window=30)
    assert (sess.chunk, sess.audio_lookahead, sess.gate) == (2, 1, None)
    live = _stream(student, speech, cfg, piece=777)
    offline = stream_motion(student, sess.front.offline(speech, n), n, cfg)
    assert live.shape == (n, student.config.motion_dim)
    np.testing.assert_allclose(live, offline, atol=1e-5)
    standard = _stream(student, speech, SessionConfig(voice_activity=False))
    assert np.abs(live - standard).max() > 1e-3  # another geometry: other motion


def test_standard_preset_is_the_models_geometry(student, speech):
    """The standard preset runs the model's chunk, feature window and lookahead: the same motion as the
    model's own offline features (speech_features with the default SpeechFeatureConfig) pushed through the
    session, and bit for bit the same as the model's values given explicitly."""
    n = -(-len(speech) // SAMPLES_PER_FRAME)
    sess = StudentStream(student, SessionConfig())
    assert (sess.chunk, sess.audio_lookahead) == (3, 2)
    assert sess.front.speech == SpeechFeatureConfig(chunk=3, lookahead=2, window=30)
    assert sess.gate.vad.config.lookahead == 2
    ref = stream_motion(student, speech_features(speech, n, SpeechFeatureConfig()), n, SessionConfig(voice_activity=False))
    np.testing.assert_allclose(_stream(student, speech, SessionConfig(voice_activity=False), piece=777), ref, atol=1e-5)
    for vad in (False, True):
        default = _stream(student, speech, SessionConfig(voice_activity=vad), piece=320)
        explicit = _stream(student, speech, SessionConfig(latency="standard", chunk=3, lookahead=2, voice_activity=vad),
                           piece=320)
        np.testing.assert_array_equal(default, explicit)


def test_latency_report(tmp_path):
    from engine.eval.latency import SETTINGS, LatencyRow, algorithmic_ms, markdown, write_report

    assert len(SETTINGS) == 9 and set(SETTINGS) == {(k, la) for k in (1, 2, 3) for la in (0, 1, 2)}
    assert algorithmic_ms(3, 2) == (160.0, 80.0) and algorithmic_ms(1, 1) == (40.0, 40.0)
    assert algorithmic_ms(1, 0) == (0.0, 0.0)
    rows = [LatencyRow(1, 1, *algorithmic_ms(1, 1), r_median=0.4, r_mean=0.41, r_delta=-0.02, r_delta_se=0.01,
                       latency_ms_p50=90.0, latency_ms_p95=110.0, rounds=[{"student_ms_per_frame": 20.0}])]
    write_report(rows, tmp_path, {"seconds": 12})
    md = (tmp_path / "latency.md").read_text()
    assert "| 1 | 1 | 40 / 40 | 0.400 | 0.410 | -0.020 (± 0.010) | 90 | 110 | 0 | 20.0 |" in md
    data = json.loads((tmp_path / "latency.json").read_text())
    assert data["seconds"] == 12 and data["rows"][0]["latency_ms_p95"] == 110.0
    assert markdown(rows).count("\n") == 3


def _backend_motion(sess, speech) -> tuple[np.ndarray, int]:
    """Stream through a session whose step counts its calls (and checks it gets chunks of the session's size)."""
    calls = {"n": 0}
    real = sess.step.fn

    def counted(*args):
        calls["n"] += 1
        assert args[0].shape[1] == sess.chunk  # noise [B, chunk, M]
        return real(*args)

    sess.step.fn = counted
    got = np.concatenate([sess.push_audio(speech[i:i + 320]) for i in range(0, len(speech), 320)] + [sess.finish()])
    return got, calls["n"]


def test_backend_step_runs_the_session_chunk(student, speech):
    """A session given a backend step built for the model's chunk (as the live engine builds it) switches to
    the same backend built for its own chunk, and gives the torch session's motion."""
    from engine.backends.runners import StudentBackend

    backend = StudentBackend(student, "torch")
    assert backend.chunk == 3
    cfg = SessionConfig(latency=Latency.LOW)
    sess = StudentStream(student, cfg, step=backend)
    assert sess.step is backend.for_chunk(2) and sess.step is not backend
    assert sess.step.chunk == 2 and sess.step.name == "torch"
    assert StudentStream(student, SessionConfig(), step=backend).step is backend  # standard: the model's step
    got, calls = _backend_motion(sess, speech)
    ref = _stream(student, speech, cfg, piece=320)
    assert len(got) == len(ref) and calls == len(got) // 2  # every whole chunk (a short last one: torch)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.slow
def test_onnx_step_for_another_chunk(student, speech, tmp_path):
    """The ONNX export takes the session's chunk and matches torch (an export of ~15 s)."""
    from engine.backends.runners import StudentBackend

    backend = StudentBackend(student, "onnxruntime", cache_dir=tmp_path, chunk=1)
    assert backend.name == "onnxruntime" and [p.name[-8:] for p in tmp_path.glob("student-*.onnx")] == ["-c1.onnx"]
    cfg = SessionConfig(chunk=1, lookahead=1)
    got, calls = _backend_motion(StudentStream(student, cfg, step=backend), speech)
    ref = _stream(student, speech, cfg, piece=320)
    assert calls == len(got) == len(ref)
    assert np.abs(got - ref).max() < 2e-3
