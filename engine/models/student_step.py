"""The student's chunk step as a pure tensor function: KV cache in, next chunk + new KV cache out.

`StudentStep` does what `MotionStudent.generate_chunk` does (sample the chunk in `steps` Euler steps on
the prepared cache, then commit it: sink slots first, then the sliding window) with no Python state and
no data-dependent control flow, so it exports to ONNX (and from there to TensorRT) with the cache as
explicit inputs and outputs. `StepCache` holds those tensors between calls; `StepRunner` adapts any
backend (torch eager / compiled / CUDA graph, onnxruntime, TensorRT) to the session
(`engine.runtime.session.StudentSession(step=...)`). `tests/runtime/test_backends.py` checks each
against `generate_chunk`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.models.sampling import step_grid
from engine.models.student import N_PREFIX, MotionStudent, StudentCache

CACHE_NAMES = ("sink_k", "sink_v", "sink_valid", "win_k", "win_v", "win_valid", "win_pos")
"""The cache tensors a step reads and writes (prefix_k/v and fused are inputs only: they change with the
portrait/style, `set_identity`)."""
INPUT_NAMES = ("noise", "tokens", "guidance", "frame", "fused", "prefix_k", "prefix_v") + CACHE_NAMES
OUTPUT_NAMES = ("x",) + tuple(f"new_{n}" for n in CACHE_NAMES)


class StudentStep(nn.Module):
    """forward(noise [B, n, M], tokens [B, n, D], guidance [B], frame [1] (float: index of the chunk's first
    frame), fused [B, D], prefix_k/v [L, B, H, P, Dh], sink_k/v [L, B, H, S, Dh], sink_valid [B, S] (0/1
    float), win_k/v [L, B, H, W, Dh], win_valid [B, W] (0/1), win_pos [W]) -> (x [B, n, M] model space,
    new sink_k, sink_v, sink_valid, win_k, win_v, win_valid, win_pos)."""

    def __init__(self, student: MotionStudent, steps: int = 1) -> None:
        super().__init__()
        self.student = student.eval()
        self.grid = step_grid(steps) + [0.0]

    def forward(self, noise, tokens, guidance, frame, fused, prefix_k, prefix_v, sink_k, sink_v, sink_valid,
                win_k, win_v, win_valid, win_pos):
        st = self.student
        B, n, _ = noise.shape
        S, W = st.config.sink_frames, st.config.window
        dev = noise.device
        # the cache's keys, prepared once (sink plain, window rotated to positions relative to this chunk)
        pos = torch.cat([torch.zeros(N_PREFIX + S, device=dev), win_pos - frame])
        sink_mask = torch.cat([torch.ones(N_PREFIX + S, dtype=torch.bool, device=dev),
                               torch.zeros(W, dtype=torch.bool, device=dev)])
        cos, sin = st._rot(pos)
        layers = []
        for i in range(st.config.depth):
            k = torch.cat([prefix_k[i], sink_k[i], win_k[i]], 2)
            v = torch.cat([prefix_v[i], sink_v[i], win_v[i]], 2)
            layers.append((st._keys(k, cos, sin, sink_mask), v))
        valid = torch.cat([torch.ones(B, N_PREFIX, device=dev), sink_valid, win_valid, torch.ones(B, n, device=dev)], 1)
        mask = (valid > 0.5)[:, None, None, :].expand(B, 1, n, valid.shape[1])
        rot = st._rot(torch.arange(n, device=dev, dtype=torch.float32))

        def chunk_pass(tok, cvec, self_sink):
            h, kvs = tok, []
            for blk, extra in zip(st.blocks, layers):
                h, k, v = st._attend(blk, h, cvec, rot, extra, self_sink, mask)
                kvs.append((k, v))
            return h, kvs

        no_sink = torch.zeros(n, dtype=torch.bool, device=dev)
        x = noise
        for s, s_next in zip(self.grid[:-1], self.grid[1:]):
            cvec = (st._time(torch.full((B,), s, device=dev)) + fused + st._guide(guidance))[:, None].expand(B, n, -1)
            h, _ = chunk_pass(st.inp(x) + tokens, cvec, no_sink)
            x = x + (s_next - s) * st._out(h, cvec)
        # commit: a clean pass writes the chunk's keys/values; frames < S go to the sink slots
        frames = frame + torch.arange(n, device=dev, dtype=torch.float32)
        is_sink = frames < S
        cvec = (st._time(torch.zeros(B, device=dev)) + fused)[:, None].expand(B, n, -1)
        _, kvs = chunk_pass(st.inp(x) + tokens, cvec, is_sink)
        A = ((torch.arange(S, device=dev, dtype=torch.float32)[:, None] == frames[None, :]) & is_sink[None, :]).float()
        hit = A.sum(1).clamp(max=1.0)  # [S] slots written now
        m = n - is_sink.sum()  # frames entering the window
        slot = torch.arange(W, device=dev)
        idx = torch.where(m + slot < W, m + slot, n + slot)  # into [window, chunk]: the newest W non-sink frames
        new_sk, new_sv, new_wk, new_wv = [], [], [], []
        for i, (k, v) in enumerate(kvs):
            new_sk.append(sink_k[i] * (1 - hit)[None, None, :, None] + torch.einsum("sn,bhnd->bhsd", A, k))
            new_sv.append(sink_v[i] * (1 - hit)[None, None, :, None] + torch.einsum("sn,bhnd->bhsd", A, v))
            new_wk.append(torch.cat([win_k[i], k], 2).index_select(2, idx))
            new_wv.append(torch.cat([win_v[i], v], 2).index_select(2, idx))
        new_sink_valid = torch.maximum(sink_valid, hit[None].expand(B, S))
        new_win_valid = torch.cat([win_valid, torch.ones(B, n, device=dev)], 1).index_select(1, idx)
        new_win_pos = torch.cat([win_pos, frames]).index_select(0, idx)
        return (x, torch.stack(new_sk), torch.stack(new_sv), new_sink_valid, torch.stack(new_wk), torch.stack(new_wv),
                new_win_valid, new_win_pos)


@dataclass
class StepCache:
    """The cache as the step's tensors (validity as 0/1 floats)."""

    tensors: dict

    @classmethod
    def from_cache(cls, cache: StudentCache) -> StepCache:
        t = {n: getattr(cache, n) for n in CACHE_NAMES}
        t["sink_valid"], t["win_valid"] = t["sink_valid"].float(), t["win_valid"].float()
        return cls({n: v.clone() for n, v in t.items()})

    def write_back(self, cache: StudentCache, frame: int) -> None:
        """Copy into a StudentCache (so the torch path can continue from it)."""
        for n in CACHE_NAMES:
            v = self.tensors[n]
            setattr(cache, n, v > 0.5 if n.endswith("valid") else v.clone())
        cache.frame = frame
        cache.prepared = None


class StepRunner:
    """Runs the chunk step on a backend and keeps the cache tensors. `run(tokens, noise, guidance,
    cache)` -> x [B, n, M] (model space); `cache` (the session's StudentCache) supplies the identity
    prefix and its frame counter, and gets the frame count advanced."""

    name = "torch"

    def __init__(self, fn, cache: StudentCache | None = None) -> None:
        self.fn = fn
        self.state: StepCache | None = StepCache.from_cache(cache) if cache is not None else None

    def reset(self, cache: StudentCache) -> None:
        self.state = StepCache.from_cache(cache)

    def run(self, tokens: torch.Tensor, noise: torch.Tensor, guidance: torch.Tensor, cache: StudentCache) -> torch.Tensor:
        if self.state is None:
            self.reset(cache)
        t = self.state.tensors
        frame = torch.tensor([float(cache.frame)], device=noise.device)
        out = self.fn(noise, tokens, guidance, frame, cache.fused, cache.prefix_k, cache.prefix_v,
                      *(t[n] for n in CACHE_NAMES))
        x = out[0]
        self.state = StepCache(dict(zip(CACHE_NAMES, out[1:])))
        cache.frame += noise.shape[1]
        cache.prepared = None
        return x
