"""The audio encoder is causal with a fixed lookahead: streaming == offline, future audio beyond the
lookahead cannot change an embedding, and it round-trips through save_pretrained."""

from __future__ import annotations

import torch

from engine.models.audio_encoder import AudioEncoder


def _enc(**kw):
    torch.manual_seed(0)
    return AudioEncoder(channels=32, dim=16, dropout=0.0, **kw).eval()


def test_streaming_chunks_equal_offline():
    enc = _enc()
    past, la = enc.context()
    assert past == enc.receptive_frames - 1 - la == 14
    T, mpf = 60, 4
    mel = torch.randn(1, (past + T + la) * mpf, 80) * 3 - 6
    full = enc(mel)
    assert full.shape == (1, T, 16)
    pieces = []
    for s in range(0, T, 7):  # 7 frames at a time, each with exactly `past` frames of history
        e = min(s + 7, T)
        pieces.append(enc(mel[:, s * mpf:(past + e + la) * mpf]))
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_lookahead_is_exact():
    enc = _enc(lookahead=2)
    past, la = enc.context()
    T, mpf, t = 30, 4, 10
    mel = torch.randn(1, (past + T + la) * mpf, 80)
    base = enc(mel)[0, t]
    later = mel.clone()
    later[:, (past + t + la + 1) * mpf:] += 5.0  # audio after frame t + lookahead
    torch.testing.assert_close(enc(later)[0, t], base)
    inside = mel.clone()
    inside[:, (past + t + la) * mpf:(past + t + la + 1) * mpf] += 5.0  # the lookahead frame itself
    assert (enc(inside)[0, t] - base).abs().max() > 1e-3


def test_rejects_too_little_mel():
    enc = _enc()
    try:
        enc(torch.zeros(1, 4 * 10, 80))
    except ValueError as e:
        assert "past" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_save_and_load(tmp_path):
    enc = _enc()
    enc.mel_mean.fill_(-5.0)
    enc.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    again = AudioEncoder.from_pretrained(tmp_path).eval()
    mel = torch.randn(1, 4 * 40, 80)
    torch.testing.assert_close(again(mel), enc(mel))
    assert again.config.dilations == [1, 2, 4, 1] or tuple(again.config.dilations) == (1, 2, 4, 1)
