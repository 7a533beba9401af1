"""The student: a causal, few-step motion generator that streams chunk by chunk with a KV cache.

Same conditioning as the teachers (`engine.models.conditions`), same network parts
(`engine.models.transformer`), so it starts from a teacher's weights. What differs:

- Block-causal over chunks of `chunk` frames: bidirectional inside a chunk, causal across chunks.
- Streaming state (`StudentCache`): a permanent **sink** (the identity/style prefix tokens and the
  first `sink_frames` clean frames) plus a **sliding window** of the last `window` clean frames'
  keys/values, as fixed-shape buffers derived from the config (plus validity masks).
- Positions: keys are cached un-rotated. Window and chunk tokens use rotary embeddings (relative
  positions, re-based at every call, so a 1000 s stream never leaves the positions seen in training);
  sink keys carry no position at all (their half of the query/key vector is not rotated, see `_attend`).
- The guidance scale is an input (embedded like time): one network pass per denoising step.
- Sampling: Euler steps of the flow on the grid s = 1, 1 - 1/n, ..., 1/n (n = 1, 2 or 4 steps: nested
  grids, x_{s'} = x_s + (s' - s) v). After a chunk is final, one pass at s = 0 over the clean chunk
  writes its keys/values to the cache (`commit`).

`forward` is the full-sequence form used in training: noisy frames (each chunk at its own noise level)
attend to the clean frames the cache would hold at that time (block-causal mask with sink + window).
`tests/models/test_student.py` checks that streaming chunk by chunk equals it, also after eviction; the chunk step
itself is written once (`step`, pure tensor functions), run eagerly on a `StudentCache` or exported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from engine.data.styles import STYLE_WORDS
from engine.face.shape import SHAPE_DIM
from engine.models.conditions import Conditions
from engine.models.configs import StudentConfig
from engine.models.sampling import step_grid
from engine.models.transformer import Block, apply_rotary, rotary, timestep_embedding
from engine.models.trunk import MotionTrunk
from engine.motion import DIM as MOTION_DIM

N_PREFIX = 2
"""Prefix tokens: identity, style."""


CACHE_NAMES = ("sink_k", "sink_v", "sink_valid", "win_k", "win_v", "win_valid", "win_pos")
"""The cache tensors a chunk step reads and writes (prefix_k/v and fused are inputs only: they change with
the portrait/style, `MotionStudent.set_identity`)."""


class ChunkContext(NamedTuple):
    """What a chunk attends to: per layer the cache's prepared keys [B, H, P, 2 Dh] and values [B, H, P, Dh],
    and the validity [B, P] (0/1) of those slots."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    valid: torch.Tensor


@dataclass
class StudentCache:
    """Streaming state of one student for B streams. Buffers are [depth, B, heads, slots, head_dim]."""

    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    sink_k: torch.Tensor
    sink_v: torch.Tensor
    sink_valid: torch.Tensor  # [B, sink_frames] 0/1 float
    win_k: torch.Tensor
    win_v: torch.Tensor
    win_valid: torch.Tensor  # [B, window] 0/1 float
    win_pos: torch.Tensor  # [window] absolute frame index of each slot (oldest first)
    fused: torch.Tensor  # [B, D] global conditioning (identity + style)
    frame: int = 0
    """Index of the next frame to generate."""
    prepared: tuple[int, ChunkContext] | None = None
    """(frame, the context of that frame's chunk): valid until the next commit."""

    @property
    def filled(self) -> int:
        return int(self.win_valid[0].sum()) + int(self.sink_valid[0].sum())

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors a chunk step reads and writes, in `CACHE_NAMES` order."""
        return tuple(getattr(self, n) for n in CACHE_NAMES)

    def frame_tensor(self) -> torch.Tensor:
        """The next frame's index as the step takes it ([1] float)."""
        return torch.tensor([float(self.frame)], device=self.win_pos.device)

    def update(self, tensors: tuple[torch.Tensor, ...], frames: int) -> None:
        """Take a step's new cache tensors (`CACHE_NAMES` order) after a chunk of `frames` frames."""
        for name, t in zip(CACHE_NAMES, tensors, strict=True):
            setattr(self, name, t)
        self.frame += frames
        self.prepared = None


class MotionStudent(MotionTrunk, ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers types config_name differently in its two mixins
    """v = student(x_s [B, T, M], s [B, T], conditions, guidance [B], clean [B, T, M]) -> [B, T, M]."""

    if TYPE_CHECKING:

        @property
        def config(self) -> StudentConfig: ...

    @register_to_config
    def __init__(self, motion_dim: int = MOTION_DIM, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 2.5, dropout: float = 0.0, chunk: int = 3, window: int = 48,
                 sink_frames: int = 1, train_frames: int = 75, shape_dim: int = SHAPE_DIM,
                 style_vocab: int = len(STYLE_WORDS), audio: dict | None = None) -> None:
        super().__init__()
        if chunk < 1 or window < chunk or sink_frames < 0:
            raise ValueError(f"need chunk >= 1, window >= chunk, sink_frames >= 0 (got {chunk}, {window}, {sink_frames})")
        acfg = audio or {}
        if acfg.get("features") == "speech" and int(acfg.get("feature_chunk", chunk)) != chunk:
            raise ValueError(f"the speech features are computed per chunk of {acfg['feature_chunk']} frames but the "
                             f"student's chunk is {chunk}: they must be equal (the stream's chunk grid)")
        self.build_trunk(motion_dim, dim, depth, heads, mlp_ratio, dropout, shape_dim, style_vocab, audio)
        self.guide = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        guide_out = cast(nn.Linear, self.guide[2])
        nn.init.zeros_(guide_out.weight)
        nn.init.zeros_(guide_out.bias)

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.heads

    # -- conditioning vectors -------------------------------------------------------------------
    def _time(self, s: torch.Tensor) -> torch.Tensor:
        """[...] noise levels -> [..., D]."""
        return self.time(timestep_embedding(s.reshape(-1), self.config.dim)).view(*s.shape, -1)

    def _guide(self, g: torch.Tensor) -> torch.Tensor:
        """[B] guidance scales -> [B, D] (embedded like time, on (g - 1) / 10)."""
        return self.guide(timestep_embedding((g.float() - 1.0) / 10.0, self.config.dim))

    # -- attention with sink keys ---------------------------------------------------------------
    def _attend(self, blk: Block, h: torch.Tensor, cvec: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor],
                extra: tuple[torch.Tensor, torch.Tensor] | None, self_sink: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One block on tokens h [B, L, D] (conditioning cvec [B, L, D], rotary cos/sin of their positions).

        Sink keys are matched with the un-rotated query (no position), the others with rotary embeddings,
        in one attention call: q' = [q, rot(q)], k' = [k, 0] (sink) or [0, rot(k)] (`_keys`). `extra` =
        prepared keys k' and values [B, H, P, 2Dh / Dh] placed before this call's own. mask [L, P + L] or
        [B, 1, L, P + L], True = attend. Returns (h, k, v) with this call's un-rotated k and v."""
        B, L, D = h.shape
        H, Dh = self.config.heads, self.head_dim
        s1, g1, b1, s2, g2, b2 = blk.modulation(F.silu(cvec)).chunk(6, dim=-1)
        x = blk.norm1(h) * (1 + s1) + b1
        q, k, v = blk.attn.qkv(x).view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)
        cos, sin = rot
        q2 = torch.cat([q, apply_rotary(q, cos, sin)], -1)
        k2 = self._keys(k, cos, sin, self_sink)
        if extra is not None:
            k2, vals = torch.cat([extra[0], k2], 2), torch.cat([extra[1], v], 2)
        else:
            vals = v
        y = F.scaled_dot_product_attention(q2, k2, vals, attn_mask=mask, scale=1.0 / math.sqrt(Dh))
        h = h + g1 * blk.attn.out(y.transpose(1, 2).reshape(B, L, D))
        h = h + g2 * blk.mlp(blk.norm2(h) * (1 + s2) + b2)
        return h, k, v

    @staticmethod
    def _keys(k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sink: torch.Tensor) -> torch.Tensor:
        """k [B, H, L, Dh] -> [B, H, L, 2 Dh]: [k, 0] for sink keys, [0, rot(k)] for the others."""
        zero = torch.zeros_like(k)
        sink = sink[None, None, :, None]
        return torch.cat([torch.where(sink, k, zero), torch.where(sink, zero, apply_rotary(k, cos, sin))], -1)

    def _rot(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rotary(pos, self.head_dim)
        return cos[None, None], sin[None, None]

    def _out(self, h: torch.Tensor, cvec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.final_mod(F.silu(cvec)).chunk(2, dim=-1)
        return self.head(self.norm(h) * (1 + scale) + shift)

    # -- full sequence (training, and the reference for streaming) --------------------------------
    def visible(self, T: int, device: torch.device | None = None) -> torch.Tensor:
        """[T, T] bool: may a token of frame i (any noise level) see the CLEAN frame j from the cache?
        Yes when j's chunk is earlier and j is a sink frame or among the last `window` non-sink frames
        before i's chunk starts."""
        k, W, S = self.config.chunk, self.config.window, self.config.sink_frames
        f = torch.arange(T, device=device)
        start = (f // k) * k  # chunk start of each query frame
        earlier = f[None] < start[:, None]
        in_window = f[None] >= (start[:, None] - W)
        return earlier & ((f[None] < S) | in_window)

    def sequence_mask(self, T: int, device: torch.device | None = None) -> torch.Tensor:
        """[P + 2T, P + 2T] mask over tokens [prefix, clean frames, noisy frames]."""
        P, k = N_PREFIX, self.config.chunk
        f = torch.arange(T, device=device)
        same = (f[:, None] // k) == (f[None] // k)
        vis = self.visible(T, device)
        m = torch.zeros(P + 2 * T, P + 2 * T, dtype=torch.bool, device=device)
        m[:, :P] = True  # everyone sees the prefix; the prefix sees only itself
        m[P:P + T, P:P + T] = vis | same  # clean tokens: cache + own chunk (as in `commit`)
        m[P + T:, P:P + T] = vis  # noisy tokens: the cache ...
        m[P + T:, P + T:] = same  # ... and their own chunk
        return m

    def forward(self, x: torch.Tensor, s: torch.Tensor, c: Conditions, guidance: torch.Tensor,
                clean: torch.Tensor) -> torch.Tensor:
        """x [B, T, M] noisy frames, s [B, T] their noise levels (constant within a chunk), guidance [B],
        clean [B, T, M] the clean frames the cache holds (model space). Returns velocities [B, T, M]."""
        B, T, _ = x.shape
        P, S = N_PREFIX, self.config.sink_frames
        prefix, fused, frame_tokens = self.cond(c)
        h = torch.cat([prefix, self.inp(clean) + frame_tokens, self.inp(x) + frame_tokens], 1)
        base = self._time(torch.zeros(B, device=x.device)) + fused  # [B, D]
        cvec = torch.cat([base[:, None].expand(B, P + T, -1),
                          self._time(s) + fused[:, None] + self._guide(guidance)[:, None]], 1)
        f = torch.arange(T, device=x.device, dtype=torch.float32)
        pos = torch.cat([torch.zeros(P, device=x.device), f, f])
        sink = torch.cat([torch.ones(P, dtype=torch.bool, device=x.device), f < S,
                          torch.zeros(T, dtype=torch.bool, device=x.device)])
        mask = self.sequence_mask(T, x.device)
        rot = self._rot(pos)
        for blk in self.block_list:
            h, _, _ = self._attend(blk, h, cvec, rot, None, sink, mask)
        return self._out(h[:, P + T:], cvec[:, P + T:])

    def frame_tokens(self, c: Conditions) -> torch.Tensor:
        """Per-frame condition tokens [B, T, D] (audio, controls) for `denoise`/`commit`."""
        return self.cond(c)[2]

    # -- streaming ----------------------------------------------------------------------------------
    # One chunk step, written once as pure tensor functions (`_context`, `_velocity`, `_written`, `step`):
    # the eager methods below (`denoise`, `commit`, `generate_chunk`, used by the session and by training
    # rollouts) run them on a `StudentCache`, and `engine.models.student_step.StudentStep` exports `step` to
    # ONNX / TensorRT with the cache tensors as explicit inputs and outputs.
    def new_cache(self, c: Conditions) -> StudentCache:
        """An empty cache for the B streams of `c` (only its identity/style fields are read)."""
        B, dev = c.shape.shape[0], c.shape.device
        H, Dh, L = self.config.heads, self.head_dim, self.config.depth
        S, W = self.config.sink_frames, self.config.window

        def buf(n: int) -> torch.Tensor:
            return torch.zeros(L, B, H, n, Dh, device=dev)

        cache = StudentCache(prefix_k=buf(N_PREFIX), prefix_v=buf(N_PREFIX), sink_k=buf(S), sink_v=buf(S),
                             sink_valid=torch.zeros(B, S, device=dev), win_k=buf(W), win_v=buf(W),
                             win_valid=torch.zeros(B, W, device=dev), win_pos=torch.zeros(W, device=dev),
                             fused=torch.zeros(B, self.config.dim, device=dev))
        self.set_identity(cache, c)
        return cache

    def set_identity(self, cache: StudentCache, c: Conditions) -> None:
        """(Re)compute the prefix (identity + style) of the sink: switch portrait or style mid-stream.
        The motion already in the cache (sink frames, window) stays, so the motion continues smoothly."""
        B = c.shape.shape[0]
        ctx = c.replace(audio=torch.zeros(B, 1, self.config.dim, device=c.shape.device),
                        controls=c.controls[:, :1] * 0, control_mask=c.control_mask[:, :1] * 0,
                        context=torch.zeros(B, 1, self.config.motion_dim, device=c.shape.device),
                        context_mask=torch.zeros(B, 1, device=c.shape.device))
        prefix, fused, _ = self.cond(ctx)
        cvec = (self._time(torch.zeros(B, device=prefix.device)) + fused)[:, None].expand(B, N_PREFIX, -1)
        rot = self._rot(torch.zeros(N_PREFIX, device=prefix.device))
        sink = torch.ones(N_PREFIX, dtype=torch.bool, device=prefix.device)
        h = prefix
        ks, vs = [], []
        for blk in self.block_list:
            h, k, v = self._attend(blk, h, cvec, rot, None, sink, None)
            ks.append(k)
            vs.append(v)
        cache.prefix_k, cache.prefix_v = torch.stack(ks), torch.stack(vs)
        cache.fused = fused
        cache.prepared = None

    def _context(self, prefix_k: torch.Tensor, prefix_v: torch.Tensor, sink_k: torch.Tensor, sink_v: torch.Tensor,
                 sink_valid: torch.Tensor, win_k: torch.Tensor, win_v: torch.Tensor, win_valid: torch.Tensor,
                 win_pos: torch.Tensor, frame: torch.Tensor) -> ChunkContext:
        """What the next chunk (first frame `frame` [1]) attends to: per layer the cache's keys k' (sink keys
        plain, window keys rotated to positions relative to the chunk) and values, and the slots' validity."""
        dev = win_pos.device
        S, W = self.config.sink_frames, self.config.window
        pos = torch.cat([torch.zeros(N_PREFIX + S, device=dev), win_pos - frame])
        sink = torch.cat([torch.ones(N_PREFIX + S, dtype=torch.bool, device=dev),
                          torch.zeros(W, dtype=torch.bool, device=dev)])
        cos, sin = self._rot(pos)
        layers = []
        for i in range(self.config.depth):
            k = torch.cat([prefix_k[i], sink_k[i], win_k[i]], 2)
            v = torch.cat([prefix_v[i], sink_v[i], win_v[i]], 2)
            layers.append((self._keys(k, cos, sin, sink), v))
        valid = torch.cat([torch.ones(sink_valid.shape[0], N_PREFIX, device=dev), sink_valid, win_valid], 1)
        return ChunkContext(layers, valid)

    def _pass(self, tokens: torch.Tensor, cvec: torch.Tensor, ctx: ChunkContext,
              self_sink: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The blocks over one chunk's tokens [B, L, D], attending to the context and to the chunk itself.
        Returns the last hidden state and each layer's (un-rotated) keys and values of the chunk."""
        B, L, _ = tokens.shape
        dev = tokens.device
        rot = self._rot(torch.arange(L, device=dev, dtype=torch.float32))  # relative to the chunk: bounded
        valid = torch.cat([ctx.valid, torch.ones(B, L, device=dev)], 1) > 0.5
        mask = valid[:, None, None, :].expand(B, 1, L, valid.shape[1])
        h, kvs = tokens, []
        for blk, extra in zip(self.block_list, ctx.layers):
            h, k, v = self._attend(blk, h, cvec, rot, extra, self_sink, mask)
            kvs.append((k, v))
        return h, kvs

    def _velocity(self, x: torch.Tensor, s: torch.Tensor, tokens: torch.Tensor, guidance: torch.Tensor,
                  fused: torch.Tensor, ctx: ChunkContext) -> torch.Tensor:
        """Velocity [B, n, M] of the chunk x [B, n, M] at noise level s [B]."""
        B, n, _ = x.shape
        cvec = (self._time(s) + fused + self._guide(guidance))[:, None].expand(B, n, -1)
        h, _ = self._pass(self.inp(x) + tokens, cvec, ctx, torch.zeros(n, dtype=torch.bool, device=x.device))
        return self._out(h, cvec)

    def _sample(self, noise: torch.Tensor, tokens: torch.Tensor, guidance: torch.Tensor, fused: torch.Tensor,
                ctx: ChunkContext, steps: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The chunk sampled from `noise` [B, n, M] in `steps` Euler steps on the context. Returns (x0 [B, n, M]
        model space, the last step's input, its noise level)."""
        grid = step_grid(steps) + [0.0]
        B = noise.shape[0]
        x = last = noise
        for s, s_next in zip(grid[:-1], grid[1:]):
            last = x
            x = x + (s_next - s) * self._velocity(x, torch.full((B,), s, device=x.device), tokens, guidance, fused, ctx)
        return x, last, grid[-2]

    def _written(self, clean: torch.Tensor, tokens: torch.Tensor, fused: torch.Tensor, ctx: ChunkContext,
                 frame: torch.Tensor, sink_k: torch.Tensor, sink_v: torch.Tensor, sink_valid: torch.Tensor,
                 win_k: torch.Tensor, win_v: torch.Tensor, win_valid: torch.Tensor,
                 win_pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The cache tensors (`CACHE_NAMES`) after the finished chunk clean [B, n, M] is written: a clean pass
        at s = 0 gives its keys/values; frames < sink_frames fill their sink slots, the others enter the
        sliding window (the oldest leave). No data-dependent control flow, so it exports."""
        B, n, _ = clean.shape
        dev = clean.device
        S, W = self.config.sink_frames, self.config.window
        frames = frame + torch.arange(n, device=dev, dtype=torch.float32)
        is_sink = frames < S
        cvec = (self._time(torch.zeros(B, device=dev)) + fused)[:, None].expand(B, n, -1)
        _, kvs = self._pass(self.inp(clean) + tokens, cvec, ctx, is_sink)
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
        return (torch.stack(new_sk), torch.stack(new_sv), new_sink_valid, torch.stack(new_wk), torch.stack(new_wv),
                new_win_valid, new_win_pos)

    def step(self, noise: torch.Tensor, tokens: torch.Tensor, guidance: torch.Tensor, frame: torch.Tensor,
             fused: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor, sink_k: torch.Tensor,
             sink_v: torch.Tensor, sink_valid: torch.Tensor, win_k: torch.Tensor, win_v: torch.Tensor,
             win_valid: torch.Tensor, win_pos: torch.Tensor, steps: int = 1) -> tuple[torch.Tensor, ...]:
        """The whole chunk step as a pure function: sample the chunk from `noise` [B, n, M] in `steps` Euler
        steps, then write it. Returns (x [B, n, M] model space, *the new cache tensors in `CACHE_NAMES` order)."""
        ctx = self._context(prefix_k, prefix_v, sink_k, sink_v, sink_valid, win_k, win_v, win_valid, win_pos, frame)
        x, _, _ = self._sample(noise, tokens, guidance, fused, ctx, steps)
        return (x, *self._written(x, tokens, fused, ctx, frame, sink_k, sink_v, sink_valid, win_k, win_v,
                                  win_valid, win_pos))

    def _prepare(self, cache: StudentCache) -> ChunkContext:
        """The cache's context for its next chunk, computed once per chunk (it changes only in `commit`)."""
        if cache.prepared is not None and cache.prepared[0] == cache.frame:
            return cache.prepared[1]
        ctx = self._context(cache.prefix_k, cache.prefix_v, cache.sink_k, cache.sink_v, cache.sink_valid, cache.win_k,
                            cache.win_v, cache.win_valid, cache.win_pos, cache.frame_tensor())
        cache.prepared = (cache.frame, ctx)
        return ctx

    def denoise(self, x: torch.Tensor, s: torch.Tensor, frame_tokens: torch.Tensor, guidance: torch.Tensor,
                cache: StudentCache) -> torch.Tensor:
        """Velocity for the next chunk x [B, n, M] at noise level s [B], given the cache (not changed)."""
        return self._velocity(x, s, frame_tokens, guidance, cache.fused, self._prepare(cache))

    def commit(self, clean: torch.Tensor, frame_tokens: torch.Tensor, cache: StudentCache) -> None:
        """Write the finished chunk clean [B, n, M] to the cache (sink first, then the sliding window)."""
        new = self._written(clean, frame_tokens, cache.fused, self._prepare(cache), cache.frame_tensor(),
                            *cache.tensors())
        cache.update(new, clean.shape[1])

    def reset(self, cache: StudentCache) -> None:
        """Forget the motion (sink frames and window); keep identity and style."""
        # new tensors, not in place: the old ones may be a compiled backend's outputs
        cache.sink_valid = torch.zeros_like(cache.sink_valid)
        cache.win_valid = torch.zeros_like(cache.win_valid)
        cache.win_pos = torch.zeros_like(cache.win_pos)
        cache.frame = 0
        cache.prepared = None

    @torch.no_grad()
    def sample_chunk(self, frame_tokens: torch.Tensor, cache: StudentCache, steps: int, guidance: torch.Tensor,
                     noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Sample the next chunk from `noise` in `steps` Euler steps (the cache is not changed).
        Returns (x0 [B, n, M] model space, the last step's input, its noise level)."""
        return self._sample(noise, frame_tokens, guidance, cache.fused, self._prepare(cache), steps)

    @torch.no_grad()
    def generate_chunk(self, frame_tokens: torch.Tensor, cache: StudentCache, steps: int, guidance: torch.Tensor,
                       noise: torch.Tensor, correct=None) -> torch.Tensor:
        """Sample the next chunk (model space [B, n, M]) and commit it to the cache. `correct(x0) -> x0`
        may replace the chunk before it is committed (tail forcing)."""
        x, _, _ = self.sample_chunk(frame_tokens, cache, steps, guidance, noise)
        if correct is not None:
            x = correct(x)
        self.commit(x, frame_tokens, cache)
        return x
