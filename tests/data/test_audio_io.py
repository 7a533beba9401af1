"""Audio loading (odd WAV formats, bad files) and the log-mel front end (streaming == offline)."""

from __future__ import annotations

import wave

import av
import numpy as np
import pytest
import torch

from engine.audio.features import LogMel, MelConfig, log_mel
from engine.audio.io import AudioError, load_audio


def _tone(sr, seconds=1.0, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return 0.5 * np.sin(2 * np.pi * f * t)


def _write(path, data, sr, width, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(data.tobytes())


def _peak_hz(x, sr=16000):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


@pytest.mark.parametrize("kind", ["u8", "s16", "s24", "s32-stereo-44k"])
def test_pcm_formats_decode_to_16k_mono(tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "u8":
        _write(p, np.round(_tone(8000) * 127 + 128).astype(np.uint8), 8000, 1)
    elif kind == "s16":
        _write(p, np.round(_tone(22050) * 32767).astype("<i2"), 22050, 2)
    elif kind == "s24":
        v = np.round(_tone(48000) * (2**23 - 1)).astype("<i4")
        b = v.view(np.uint8).reshape(-1, 4)[:, :3].copy()
        _write(p, b, 48000, 3)
    else:
        x = np.round(_tone(44100) * (2**31 - 1)).astype("<i4")
        _write(p, np.stack([x, x], 1), 44100, 4, channels=2)
    a = load_audio(p)
    assert a.dtype == np.float32 and abs(len(a) - 16000) < 200
    assert abs(_peak_hz(a[2000:14000]) - 440) < 5
    assert 0.3 < np.abs(a).max() <= 1.0


def test_real_extensible_and_stereo_files(data_dir):
    jp = load_audio(data_dir / "real" / "japanese.wav")  # WAVE_FORMAT_EXTENSIBLE, 48 kHz
    radio = load_audio(data_dir / "real" / "RD_Radio31_000.wav")  # stereo
    assert abs(len(radio) / 16000 - 8.0) < 0.1 and jp.std() > 0.01


def test_bad_audio_files_get_clear_errors(tmp_path, data_dir):
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "none.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 3)
    with pytest.raises(AudioError):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(data_dir / "real" / "sun_video.mp4")


def test_audio_track_of_a_video(tmp_path):
    p = tmp_path / "v.mp4"
    with av.open(str(p), "w") as c:
        vs = c.add_stream("libx264", rate=25)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for _ in range(25):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                c.mux(pkt)
        tone = _tone(16000).astype(np.float32)
        for i in range(0, 16000, 1024):
            fr = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="flt", layout="mono")
            fr.sample_rate = 16000
            for pkt in aus.encode(fr):
                c.mux(pkt)
        for s in (vs, aus):
            for pkt in s.encode(None):
                c.mux(pkt)
    a = load_audio(p)
    assert abs(_peak_hz(a[3000:12000]) - 440) < 5


def test_log_mel_streaming_equals_offline():
    cfg = MelConfig()
    audio = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    full = log_mel(audio, cfg)
    assert full.shape == (50 * cfg.mels_per_frame, cfg.n_mels)
    mod = LogMel(cfg)
    # streaming: each time 640 more samples arrive, compute the mel frames whose windows are complete
    got = []
    done = 0
    buf = np.concatenate([audio, np.zeros(2 * 640, np.float32)])
    for end in range(640, len(buf) + 1, 640):
        avail = (end - cfg.win_length) // cfg.hop_length + 1
        if avail > done:
            start = done * cfg.hop_length
            chunk = torch.from_numpy(buf[start:end])[None]
            got.append(mod(chunk)[0, : avail - done].numpy())
            done = avail
    stream = np.concatenate(got)[: len(full)]
    np.testing.assert_allclose(stream, full, atol=1e-4)
