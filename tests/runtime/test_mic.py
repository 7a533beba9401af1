"""Microphone capture on virtual microphones: ALSA's file plugin (deterministic samples) and a PulseAudio
null sink + remap source (real-time pacing, device loss and recovery)."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from engine.audio.io import SAMPLE_RATE
from engine.audio.mic import MicError, MicSource, find_microphone, list_microphones

from .conftest import use_alsa_conf, write_asound_conf


def _signal(seconds: float = 3.0, rate: int = 48000) -> np.ndarray:
    """48 kHz stereo: a gliding tone with an envelope on the left, a different tone on the right."""
    t = np.arange(int(seconds * rate)) / rate
    left = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t))
    right = 0.2 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right], 1).astype(np.float32)


def _reference(stereo: np.ndarray, rate: int) -> np.ndarray:
    """What the source should deliver: the mono mix resampled by libswresample in one go."""
    mono = (stereo.astype(np.float32).mean(1)).astype(np.float32)
    res = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    f = av.AudioFrame.from_ndarray(mono[None], format="flt", layout="mono")
    f.sample_rate = rate
    f.pts = 0
    parts = [x.to_ndarray().reshape(-1) for x in res.resample(f)] + [x.to_ndarray().reshape(-1) for x in res.resample(None)]
    return np.concatenate(parts)


@pytest.fixture
def file_mic(tmp_path, monkeypatch):
    stereo = _signal()
    pcm = np.round(stereo * 32767).astype("<i2")
    raw = tmp_path / "in.raw"
    pcm.tofile(raw)
    use_alsa_conf(monkeypatch, write_asound_conf(tmp_path, raw=raw))
    return pcm.astype(np.float32) / 32768


def test_listing_and_selection_by_name(file_mic):
    names = [m.name for m in list_microphones()]
    assert "talkcam_file" in names
    assert find_microphone("talkcam_file").name == "talkcam_file"  # exact name wins over the longer match
    assert find_microphone("FILE_RAW").name == "talkcam_file_raw"  # a unique part, any case
    with pytest.raises(MicError, match="(?s)No microphone named 'no such mic'.*talkcam_file"):
        find_microphone("no such mic")


def test_capture_is_the_file_resampled_to_16k_mono(file_mic):
    """48 kHz stereo in, 16 kHz mono out, sample for sample what offline resampling gives."""
    src = MicSource("talkcam_file", piece=320)
    src.open()
    try:
        pieces = [src.read() for _ in range(150)]  # 3 s
    finally:
        src.close()
    got = np.concatenate([p.samples for p in pieces])
    assert [p.start for p in pieces] == list(range(0, 150 * 320, 320))
    assert all(len(p.samples) == 320 for p in pieces)
    ref = _reference(file_mic, 48000)
    n = min(len(ref), len(got)) - 200  # the file's end meets the null plugin's silence
    assert n > 2.9 * SAMPLE_RATE
    assert np.abs(got[:n] - ref[:n]).max() < 1e-4
    assert np.abs(got[:n]).max() > 0.25  # not silence
    caps = np.array([p.captured for p in pieces])
    assert (np.diff(caps) >= 0).all()
    # the device's own audio travels along for recordings: 48 kHz stereo, sample for sample, same stretch of time
    assert (src.record_format.sample_rate, src.record_format.channels) == (48000, 2)
    assert all(p.original.shape == (960, 2) for p in pieces)
    orig = np.concatenate([p.original for p in pieces])
    m = min(len(orig), len(file_mic)) - 600
    assert np.abs(orig[:m] - file_mic[:m]).max() < 1e-6


def test_capture_feeds_the_session_like_the_file(file_mic, engine, avatar):
    """Microphone -> session gives the motion that the same audio gives offline."""
    from engine.runtime.stream import StudentStream

    student, corrector, schedule = engine.models
    src = MicSource("talkcam_file", piece=320)
    src.open()
    try:
        live = StudentStream(student, engine.session_config, corrector, schedule, avatar.shape)
        mic_motion, audio = [], []
        for _ in range(100):
            p = src.read()
            audio.append(p.samples)
            mic_motion.append(live.push_audio(p.samples))
    finally:
        src.close()
    mic_motion = np.concatenate(mic_motion)
    offline = StudentStream(student, engine.session_config, corrector, schedule, avatar.shape)
    ref_audio = _reference(file_mic, 48000)[: 100 * 320]
    ref_motion = np.concatenate(list(offline.stream(ref_audio, 320)))[: len(mic_motion)]
    assert len(mic_motion) >= 40
    assert np.abs(mic_motion - ref_motion[: len(mic_motion)]).max() < 1e-3


def test_pulseaudio_mic_is_paced_in_real_time(pulse, tmp_path):
    from engine.sinks.wav import write_wav

    wav = tmp_path / "tone.wav"
    t = np.arange(4 * 44100) / 44100
    write_wav(wav, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100)
    player = pulse.play(wav)
    src = MicSource("talkcam_vmic", piece=320)
    src.open()
    try:
        src.read()  # started
        t0 = time.monotonic()
        pieces = [src.read() for _ in range(100)]  # 2 s of audio
        elapsed = time.monotonic() - t0
    finally:
        src.close()
        player.kill()
    assert 1.6 < elapsed < 2.6, elapsed  # delivered at the pace it is spoken, not faster
    audio = np.concatenate([p.samples for p in pieces])
    assert np.sqrt((audio[-SAMPLE_RATE:] ** 2).mean()) > 0.1  # the tone came through
    lag = time.monotonic() - pieces[-1].captured
    assert 0 <= lag < 0.5


def test_device_loss_keeps_running_on_silence_and_recovers(pulse, tmp_path):
    from engine.sinks.wav import write_wav

    wav = tmp_path / "tone.wav"
    t = np.arange(30 * 44100) / 44100
    write_wav(wav, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100)
    events = []
    src = MicSource("talkcam_vmic", piece=320, stall_s=0.5, retry_s=0.3, on_status=lambda s, m: events.append((s, m)))
    player = pulse.play(wav)
    src.open()
    try:
        for _ in range(40):
            src.read()
        pulse.kill()  # the device disappears mid-session
        t0 = time.monotonic()
        lost = []
        while time.monotonic() - t0 < 2.0:
            lost.append(src.read())
        assert src.state == "lost"
        assert events and events[0][0] == "lost" and "continues on silence" in events[0][1]
        delivered = sum(len(p.samples) for p in lost) / SAMPLE_RATE
        assert 1.5 < delivered < 2.6  # the stream kept going at real-time pace
        assert np.abs(np.concatenate([p.samples for p in lost[-25:]])).max() == 0.0
        pulse.start()  # ...and comes back
        player = pulse.play(wav)
        t0 = time.monotonic()
        while src.state != "ok" and time.monotonic() - t0 < 10:
            src.read()
        assert src.state == "ok" and src.reconnects >= 1 and src.losses == 1
        assert ("ok", "Microphone 'talkcam_vmic' is back.") in events
        back = np.concatenate([src.read().samples for _ in range(100)])
        assert np.sqrt((back[-SAMPLE_RATE // 2:] ** 2).mean()) > 0.1  # real audio again
    finally:
        src.close()
        player.kill()
