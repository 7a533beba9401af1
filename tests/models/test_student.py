"""The student streams chunk by chunk with its sink + sliding-window cache exactly as the full-sequence
block-causal forward computes (also after the window starts evicting), and its cache behaves."""

from __future__ import annotations

import pytest
import torch

from engine.models.conditions import N_CONTROLS, Conditions
from engine.models.student import MotionStudent, step_grid


def _conditions(model: MotionStudent, B: int, T: int, gen: torch.Generator) -> Conditions:
    D = model.config.dim
    return Conditions(audio=torch.randn(B, T, D, generator=gen), shape=torch.randn(B, 12, generator=gen),
                      style=torch.randint(1, 10, (B, 4), generator=gen),
                      controls=torch.randn(B, T, N_CONTROLS, generator=gen),
                      control_mask=(torch.rand(B, T, N_CONTROLS, generator=gen) > 0.7).float(),
                      context=torch.zeros(B, T, model.config.motion_dim), context_mask=torch.zeros(B, T),
                      drop_audio=torch.zeros(B, dtype=torch.bool), drop_style=torch.zeros(B, dtype=torch.bool),
                      drop_identity=torch.tensor([False, True][:B]))


def _randomize(model: MotionStudent, gen: torch.Generator) -> None:
    with torch.no_grad():  # zero-initialised layers would hide mistakes
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.mark.parametrize("chunk,window,sink", [(3, 7, 1), (1, 4, 2), (4, 8, 0), (5, 5, 1)])
def test_streaming_equals_full_sequence(chunk, window, sink):
    gen = torch.Generator().manual_seed(chunk * 100 + window)
    model = MotionStudent(dim=32, depth=2, heads=2, mlp_ratio=2.0, chunk=chunk, window=window,
                          sink_frames=sink, audio={"channels": 16}).eval()
    _randomize(model, gen)
    B, T, Mdim = 2, 6 * chunk + 2, model.config.motion_dim  # a partial last chunk too
    c = _conditions(model, B, T, gen)
    x = torch.randn(B, T, Mdim, generator=gen)
    clean = torch.randn(B, T, Mdim, generator=gen)
    s = torch.rand(B, T // chunk + 1, generator=gen).repeat_interleave(chunk, 1)[:, :T]
    g = torch.tensor([1.0, 3.5])
    with torch.no_grad():
        full = model(x, s, c, g, clean)
        cache = model.new_cache(c)
        tokens = model.frame_tokens(c)
        got = []
        for a in range(0, T, chunk):
            b = min(a + chunk, T)
            got.append(model.denoise(x[:, a:b], s[:, a], tokens[:, a:b], g, cache))
            model.commit(clean[:, a:b], tokens[:, a:b], cache)
        stream = torch.cat(got, 1)
    assert T - chunk > window + sink  # the window has evicted frames by the end
    assert cache.frame == T and int(cache.win_valid[0].sum()) == window
    torch.testing.assert_close(stream, full, rtol=1e-4, atol=1e-5)
    # and the mask is really causal: changing the future does not change the past
    last = (T - 1) // chunk * chunk  # first frame of the last chunk
    x2, clean2 = x.clone(), clean.clone()
    x2[:, last:] += 5.0
    clean2[:, last:] += 5.0
    with torch.no_grad():
        full2 = model(x2, s, c, g, clean2)
    torch.testing.assert_close(full2[:, :last], full[:, :last])
    assert not torch.allclose(full2[:, last:], full[:, last:])


def test_positions_do_not_grow_with_the_stream():
    """Frame 10 000 of a stream sees exactly what frame 100 sees when the window and inputs are equal."""
    gen = torch.Generator().manual_seed(3)
    model = MotionStudent(dim=32, depth=2, heads=2, chunk=2, window=4, sink_frames=1, audio={"channels": 16}).eval()
    _randomize(model, gen)
    c = _conditions(model, 1, 2, gen)
    tok = model.frame_tokens(c)
    x = torch.randn(1, 2, model.config.motion_dim, generator=gen)
    outs = []
    with torch.no_grad():
        for start in (100, 10_000):
            cache = model.new_cache(c)
            for _ in range(4):  # same content, then shift the frame counter
                model.commit(x, tok, cache)
            cache.win_pos += start - cache.frame
            cache.frame = start
            outs.append(model.denoise(x, torch.tensor([0.5]), tok, torch.tensor([2.0]), cache))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_identity_switch_and_reset():
    gen = torch.Generator().manual_seed(4)
    model = MotionStudent(dim=32, depth=2, heads=2, chunk=2, window=4, audio={"channels": 16}).eval()
    _randomize(model, gen)
    c = _conditions(model, 1, 2, gen)
    tok = model.frame_tokens(c)
    x = torch.randn(1, 2, model.config.motion_dim, generator=gen)
    with torch.no_grad():
        cache = model.new_cache(c)
        model.commit(x, tok, cache)
        v1 = model.denoise(x, torch.tensor([1.0]), tok, torch.tensor([1.0]), cache)
        model.set_identity(cache, c.replace(shape=c.shape + 1.0))
        assert cache.frame == 2 and cache.filled == 2  # motion kept
        v2 = model.denoise(x, torch.tensor([1.0]), tok, torch.tensor([1.0]), cache)
        assert not torch.allclose(v1, v2)
        model.reset(cache)
        assert cache.frame == 0 and cache.filled == 0
        # shapes come from the config
        assert cache.win_k.shape == (2, 1, 2, 4, 16) and cache.sink_k.shape[3] == 1


def test_step_grids_are_nested():
    assert step_grid(1) == [1.0]
    assert step_grid(2) == [1.0, 0.5]
    assert set(step_grid(2)) <= set(step_grid(4))
    with pytest.raises(ValueError):
        step_grid(0)


def test_guidance_is_an_input():
    gen = torch.Generator().manual_seed(5)
    model = MotionStudent(dim=32, depth=2, heads=2, chunk=2, window=4, audio={"channels": 16}).eval()
    _randomize(model, gen)
    c = _conditions(model, 1, 4, gen)
    x = torch.randn(1, 4, model.config.motion_dim, generator=gen)
    s = torch.full((1, 4), 0.5)
    with torch.no_grad():
        a = model(x, s, c, torch.tensor([1.0]), x)
        b = model(x, s, c, torch.tensor([3.0]), x)
    assert not torch.allclose(a, b)
