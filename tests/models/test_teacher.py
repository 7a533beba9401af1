"""Teacher network, conditions and the sampler: bidirectional attention, condition dropping, guidance
arithmetic, windowed generation with known context, save/load."""

from __future__ import annotations

import numpy as np
import torch

from engine.data import styles
from engine.models.conditions import CONTROL_NAMES, N_CONTROLS, Conditions
from engine.models.sampling import Guidance, SampleConfig, generate, guided_velocity, passes_per_step, sample
from engine.models.teacher import MotionTeacher

M = 33


def tiny(window: int = 20) -> MotionTeacher:
    torch.manual_seed(0)
    m = MotionTeacher(dim=32, depth=2, heads=2, mlp_ratio=2.0, window=window, audio={"channels": 32})
    for p in m.parameters():  # adaLN-zero starts as identity: give every weight a value for these tests
        with torch.no_grad():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def conds(m: MotionTeacher, B: int = 2, T: int = 12, seed: int = 0) -> Conditions:
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(B, 4 * (m.audio_encoder.past_frames + T + 2), 80, generator=g)
    return Conditions(
        audio=m.audio_encoder(mel), shape=torch.randn(B, 12, generator=g),
        style=torch.from_numpy(np.stack([styles.pad(styles.tokenize("singing fast")[0])] * B)),
        controls=torch.zeros(B, T, N_CONTROLS), control_mask=torch.zeros(B, T, N_CONTROLS),
        context=torch.zeros(B, T, M), context_mask=torch.zeros(B, T),
        drop_audio=torch.zeros(B, dtype=torch.bool), drop_style=torch.zeros(B, dtype=torch.bool),
        drop_identity=torch.zeros(B, dtype=torch.bool))


def test_bidirectional_and_shapes():
    m = tiny()
    c = conds(m)
    x = torch.randn(2, 12, M)
    s = torch.full((2,), 0.5)
    v = m(x, s, c)
    assert v.shape == (2, 12, M)
    a2 = c.audio.clone()
    a2[:, -1] += 3.0 * torch.randn_like(a2[:, -1])  # audio of the LAST frame changes the FIRST frame's
    assert (m(x, s, c.replace(audio=a2))[:, 0] - v[:, 0]).abs().max() > 1e-4  # prediction: bidirectional


def test_dropped_conditions_are_ignored():
    m = tiny()
    c = conds(m)
    x, s = torch.randn(2, 12, M), torch.full((2,), 0.3)
    drop = torch.ones(2, dtype=torch.bool)
    v1 = m(x, s, c.replace(drop_audio=drop))
    v2 = m(x, s, c.replace(drop_audio=drop, audio=torch.randn_like(c.audio)))
    torch.testing.assert_close(v1, v2)
    w1 = m(x, s, c.replace(drop_style=drop))
    w2 = m(x, s, c.replace(drop_style=drop, style=torch.zeros_like(c.style)))
    torch.testing.assert_close(w1, w2)
    assert (m(x, s, c) - w1).abs().max() > 1e-4


def test_controls_and_context_enter_at_their_frame():
    m = tiny()
    c = conds(m, B=1)
    x, s = torch.randn(1, 12, M), torch.full((1,), 0.5)
    v = m(x, s, c)
    ctrl, mask = c.controls.clone(), c.control_mask.clone()
    ctrl[0, 5, CONTROL_NAMES.index("smile")] = 1.0
    mask[0, 5, CONTROL_NAMES.index("smile")] = 1.0
    assert (m(x, s, c.replace(controls=ctrl, control_mask=mask)) - v).abs().max() > 1e-4
    ctrl2 = c.controls.clone()
    ctrl2[0, 5, 0] = 1.0  # a value without its "given" flag is ignored
    torch.testing.assert_close(m(x, s, c.replace(controls=ctrl2)), v)


def test_guidance_arithmetic_and_passes():
    calls = []

    class Lin(torch.nn.Module):
        config = type("C", (), {"motion_dim": M})

        def forward(self, x, s, c):
            calls.append(x.shape[0])
            keep_a = (~c.drop_audio).float()[:, None, None]
            keep_s = (~c.drop_style).float()[:, None, None]
            return x + 2.0 * keep_a + 10.0 * keep_s

    m = Lin()
    c = conds(tiny(), B=1)
    x, s = torch.zeros(1, 12, M), torch.full((1,), 0.5)
    v = guided_velocity(m, x, s, c, Guidance(audio=3.0, style=2.0))
    # v(a,s) = 12; v(-,s) = 10; v(a,-) = 2 -> 12 + 2*(12-10) + 1*(12-2) = 26
    torch.testing.assert_close(v, torch.full_like(v, 26.0))
    assert calls == [3]  # one batched call with three variants
    assert passes_per_step(Guidance(1.0, 1.0)) == 1
    assert passes_per_step(Guidance(2.0, 1.0)) == 2
    calls.clear()
    torch.testing.assert_close(guided_velocity(m, x, s, c, Guidance(1.0, 1.0)), torch.full_like(v, 12.0))
    assert calls == [1]


def test_sampler_is_deterministic_and_follows_the_flow():
    m = tiny()
    c = conds(m, B=1)
    g = Guidance(2.0, 1.0)
    a = sample(m, c, 4, g, torch.Generator().manual_seed(3))
    b = sample(m, c, 4, g, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)

    class Exact(torch.nn.Module):  # the true velocity towards a fixed target: Euler is exact for it
        config = type("C", (), {"motion_dim": M})

        def forward(self, x, s, c):
            return (x - target) / s[:, None, None].clamp(min=1e-6)

    target = torch.linspace(-1, 1, 12 * M).view(1, 12, M)
    out = sample(Exact(), c, 3, Guidance(1.0, 1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target, atol=1e-3, rtol=1e-3)


def test_generate_long_clip_with_seamless_windows():
    m = tiny(window=20)
    n = 57  # three windows with overlap, the last one shifted back to full length
    mel = np.random.default_rng(0).normal(-6, 3, (4 * n, 80)).astype(np.float32)
    cfg = SampleConfig(steps=2, guidance=Guidance(1.5), overlap=5, seed=1)
    out = generate(m, mel, n, cfg)
    assert out.shape == (n, M) and np.isfinite(out).all()
    np.testing.assert_allclose(generate(m, mel, n, cfg), out)
    assert not np.allclose(generate(m, mel, n, SampleConfig(steps=2, guidance=Guidance(1.5), overlap=5, seed=2)), out)
    long = generate(m, mel, n, SampleConfig(steps=1, overlap=50))  # overlap > window: clamped, still covers all
    assert long.shape == (n, M) and np.isfinite(long).all()


def test_save_and_load_round_trip(tmp_path):
    m = tiny()
    m.motion_mean.fill_(0.1)
    m.save_pretrained(tmp_path)
    again = MotionTeacher.from_pretrained(tmp_path).eval()
    c = conds(m)
    x, s = torch.randn(2, 12, M), torch.full((2,), 0.7)
    torch.testing.assert_close(again(x, s, c), m(x, s, c))
    assert float(again.motion_mean[0]) == np.float32(0.1)
