"""Sampling motion from a flow-matching motion model: the denoising loop, in one place.

`sample` draws one window with diffusers' FlowMatchEulerDiscreteScheduler and classifier-free
guidance on audio and on style separately:
    v = v(a, s) + (g_audio - 1) * (v(a, s) - v(-, s)) + (g_style - 1) * (v(a, s) - v(a, -))
(one network pass per step when both scales are 1, up to three otherwise, batched together).
`generate` covers a clip of any length with overlapping windows: each window after the first gets
the previous window's last frames as known motion context, so the seams are continuous.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler

from engine.audio.frontend import front_end
from engine.data import styles
from engine.face.shape import SHAPE_DIM
from engine.models.conditions import N_CONTROLS, Conditions


@dataclass
class Guidance:
    """Classifier-free guidance scales (1 = no guidance: one pass per step)."""

    audio: float = 3.0
    style: float = 1.0


@dataclass
class SampleConfig:
    steps: int = 4
    """Denoising steps (4 steps with audio guidance 3 scored best in the teachers' guidance sweep)."""
    guidance: Guidance = None  # type: ignore[assignment]
    shift: float = 1.0
    """Noise schedule shift (diffusers' `shift`; >1 spends more steps at high noise)."""
    overlap: int = 25
    """Frames shared between consecutive windows in `generate` (at most half the model's window)."""
    seed: int = 0
    schedule: GuidanceSchedule | None = None
    """Calibrated audio guidance (per step and motion group) on the nested grid s = 1, 1 - 1/n, ...
    instead of the scheduler's (used to measure calibration and as the distillation target)."""

    def __post_init__(self) -> None:
        if self.guidance is None:
            self.guidance = Guidance()


def step_grid(steps: int) -> list[float]:
    """Noise levels of the nested Euler grid: 1, 1 - 1/n, ..., 1/n (then 0). 1, 2, 4 steps are nested."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1.0 - i / steps for i in range(steps)]


def passes_per_step(g: Guidance) -> int:
    return 1 + int(g.audio != 1.0) + int(g.style != 1.0)


def guided_velocity(model, x: torch.Tensor, s: torch.Tensor, c: Conditions, g: Guidance) -> torch.Tensor:
    """The guided velocity at noise level s [B] (batched passes)."""
    B = x.shape[0]
    variants = [c]
    if g.audio != 1.0:
        variants.append(c.replace(drop_audio=torch.ones_like(c.drop_audio)))
    if g.style != 1.0:
        variants.append(c.replace(drop_style=torch.ones_like(c.drop_style)))
    if len(variants) == 1:
        return model(x, s, c)
    cat = Conditions(**{k: torch.cat([getattr(v, k) for v in variants]) for k in c.__dict__})
    out = model(x.repeat(len(variants), 1, 1), s.repeat(len(variants)), cat).split(B)
    v, i = out[0], 1
    if g.audio != 1.0:
        v = v + (g.audio - 1.0) * (out[0] - out[i])
        i += 1
    if g.style != 1.0:
        v = v + (g.style - 1.0) * (out[0] - out[i])
    return v


@torch.no_grad()
def sample(model, c: Conditions, steps: int, guidance: Guidance, generator: torch.Generator | None = None,
           shift: float = 1.0, noise: torch.Tensor | None = None,
           schedule: GuidanceSchedule | None = None) -> torch.Tensor:
    """One window: noise -> motion [B, T, M] in model space."""
    B, T = c.audio.shape[:2]
    if schedule is not None:
        from engine.motion import MOTION_NAMES

        x = noise if noise is not None else torch.randn(B, T, model.config.motion_dim, generator=generator,
                                                        device=c.audio.device)
        grid = step_grid(steps) + [0.0]
        g = torch.full((B,), guidance.audio, device=x.device)
        for s, s_next in zip(grid[:-1], grid[1:]):
            w = schedule.per_dim(s, MOTION_NAMES)
            x = x + (s_next - s) * weighted_guidance(model, x, torch.full((B,), s, device=x.device), c, g, w)
        return x
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps, device=c.audio.device)
    x = noise if noise is not None else torch.randn(B, T, model.config.motion_dim, generator=generator,
                                                    device=c.audio.device)
    for t in sched.timesteps:
        s = (t / 1000.0).expand(B).to(x.dtype)
        v = guided_velocity(model, x, s, c, guidance)
        x = sched.step(v, t, x, return_dict=False)[0]
    return x


def conditions_for(model, audio_emb: torch.Tensor, shape: np.ndarray | None = None, style: str = "speaking",
                   controls: np.ndarray | None = None, control_mask: np.ndarray | None = None) -> Conditions:
    """Conditions for one sample (B = 1) of T frames from numpy inputs; missing ones are dropped."""
    T, dev = audio_emb.shape[1], audio_emb.device
    ids, _ = styles.tokenize(style)
    return Conditions(
        audio=audio_emb,
        shape=torch.from_numpy(np.zeros(SHAPE_DIM, np.float32) if shape is None else shape)[None].to(dev),
        style=torch.from_numpy(styles.pad(ids))[None].to(dev),
        controls=torch.zeros(1, T, N_CONTROLS, device=dev) if controls is None
        else torch.from_numpy(controls)[None].float().to(dev),
        control_mask=torch.zeros(1, T, N_CONTROLS, device=dev) if control_mask is None
        else torch.from_numpy(control_mask)[None].float().to(dev),
        context=torch.zeros(1, T, model.config.motion_dim, device=dev),
        context_mask=torch.zeros(1, T, device=dev),
        drop_audio=torch.zeros(1, dtype=torch.bool, device=dev),
        drop_style=torch.zeros(1, dtype=torch.bool, device=dev),
        drop_identity=torch.tensor([shape is None], device=dev),
    )


def audio_embedding(model, mel: np.ndarray, n_frames: int) -> torch.Tensor:
    """Audio embeddings [1, n_frames, D] of a clip's log-mel, padded with silence before the clip (the
    encoder's past context) and after it (lookahead, short clips)."""
    enc = model.audio_encoder
    past, la = enc.context()
    mpf = enc.config.mels_per_frame
    padded = np.full(((past + n_frames + la) * mpf, mel.shape[1]), front_end(enc.config).pad, np.float32)
    padded[past * mpf: past * mpf + min(len(mel), n_frames * mpf)] = mel[: n_frames * mpf]
    return enc(torch.from_numpy(padded)[None].to(next(model.parameters()).device))


@torch.no_grad()
def generate(model, mel: np.ndarray, n_frames: int, config: SampleConfig | None = None,
             shape: np.ndarray | None = None, style: str = "speaking", controls: np.ndarray | None = None,
             control_mask: np.ndarray | None = None) -> np.ndarray:
    """Motion [n_frames, M] (engine.motion units) for a clip's log-mel [4 * n_frames, n_mels]."""
    cfg = config or SampleConfig()
    model.eval()
    dev = next(model.parameters()).device
    audio_emb = audio_embedding(model, mel, n_frames)  # [1, n, D]
    W = int(model.config.window)
    overlap = max(0, min(cfg.overlap, W // 2))  # at least half a window of new frames each time
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    out = torch.zeros(n_frames, model.config.motion_dim, device=dev)
    start, done = 0, 0
    while done < n_frames:
        if start > 0 and start + W > n_frames:
            start = max(0, n_frames - W)  # full-length last window, with a longer known context
        end = min(start + W, n_frames)
        c = conditions_for(model, audio_emb[:, start:end], shape, style,
                           None if controls is None else controls[start:end],
                           None if control_mask is None else control_mask[start:end])
        known = done - start
        if known > 0:
            c.context[0, :known] = out[start:done]
            c.context_mask[0, :known] = 1.0
        x = sample(model, c, cfg.steps, cfg.guidance, gen, cfg.shift, schedule=cfg.schedule)[0]
        out[done:end] = x[known:]
        done = end
        start = max(0, end - overlap)
    return model.from_model(out).cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Calibrated audio guidance (per denoising step and motion group) and the tail correction: both used
# by the student's distillation (engine.train.distill) and by the streaming session at inference.

def group_dims(motion_names: tuple[str, ...]) -> dict[str, list[int]]:
    """Motion dimensions of each guidance group: mouth (jaw, mouth, cheek), eyes (lids, brows, gaze), head."""
    groups: dict[str, list[int]] = {"mouth": [], "eyes": [], "head": []}
    for i, n in enumerate(motion_names):
        g = "head" if n.startswith("head") else "mouth" if n.startswith(("jaw", "mouth", "cheek")) else "eyes"
        groups[g].append(i)
    return groups


@dataclass
class GuidanceSchedule:
    """Share of the audio guidance applied per denoising step (rows: the 4-step grid s = 1, .75, .5, .25)
    and per motion group. All ones = plain guidance everywhere."""

    weights: dict[str, list[float]]
    """group -> [w_step0, ..., w_step3] in [0, 1]."""

    @classmethod
    def uniform(cls) -> GuidanceSchedule:
        return cls({g: [1.0] * 4 for g in ("mouth", "eyes", "head")})

    @classmethod
    def load(cls, path: Path | str) -> GuidanceSchedule:
        """The schedule of a calibration.json (`talkcam train calibrate`)."""
        data = json.loads(Path(path).read_text("utf-8"))
        return cls({g: [float(w) for w in ws] for g, ws in data["schedule"].items()})

    def table(self, motion_names: tuple[str, ...]) -> torch.Tensor:
        """Weights [4 steps, M] (computed once per motion layout)."""
        cache = self.__dict__.setdefault("_tables", {})
        if motion_names not in cache:
            w = torch.zeros(4, len(motion_names))
            for g, dims in group_dims(motion_names).items():
                w[:, dims] = torch.tensor([float(v) for v in self.weights[g]])[:, None]
            cache[motion_names] = w
        return cache[motion_names]

    @staticmethod
    def step_index(s: torch.Tensor | float) -> torch.Tensor:
        """The step of the 4-step grid whose interval contains noise level s."""
        return ((1.0 - torch.as_tensor(s, dtype=torch.float64)) * 4 + 1e-6).long().clamp(0, 3)

    def per_dim(self, s: torch.Tensor | float, motion_names: tuple[str, ...]) -> torch.Tensor:
        """Weights at noise level s: [M] for a float, [B, M] for levels [B]."""
        return self.table(motion_names).to(torch.as_tensor(s).device)[self.step_index(s)]

    def guided_cells(self) -> int:
        return sum(1 for ws in self.weights.values() for w in ws if w > 0)


def weighted_guidance(model, x: torch.Tensor, s: torch.Tensor, c: Conditions, g: torch.Tensor,
                      w: torch.Tensor | None) -> torch.Tensor:
    """Audio-guided velocity with a per-sample scale g [B] applied to the dimensions by weight w ([M] for
    all samples or [B, M] per sample; None = all dimensions): v = v(a) + (g - 1) w (v(a) - v(-)).
    Two passes, batched."""
    B = x.shape[0]
    if torch.all(g == 1.0):
        return model(x, s, c)
    cat = Conditions(**{k: torch.cat([getattr(c, k), getattr(c, k)]) for k in c.__dict__})
    cat.drop_audio = torch.cat([c.drop_audio, torch.ones_like(c.drop_audio)])
    vc, vu = model(x.repeat(2, 1, 1), s.repeat(2), cat).split(B)
    scale = (g.to(x.dtype) - 1.0)[:, None, None]
    if w is not None:
        scale = scale * (w.to(x)[None, None] if w.dim() == 1 else w.to(x)[:, None])
    return vc + scale * (vc - vu)


@torch.no_grad()
def tail_correct(teacher, known: torch.Tensor, chunk: torch.Tensor, c: Conditions, g: torch.Tensor,
                 schedule: GuidanceSchedule | None, level: float, steps: int, generator: torch.Generator | None,
                 motion_names: tuple[str, ...]) -> torch.Tensor:
    """Hybrid tail forcing: re-denoise a chunk with the bidirectional teacher, anchored to known frames.

    known [B, K, M] (model space: the sink frames, then the recent past), chunk [B, n, M]; c: the
    teacher's conditions over those K + n frames (its context fields are set here). The window is noised
    to `level` (SDEdit) and denoised in `steps` Euler steps with the known frames given as context.
    Returns the chunk with only its tail frame replaced by the correction."""
    B, K, _ = known.shape
    n = chunk.shape[1]
    dev = chunk.device
    ctx = torch.cat([known, torch.zeros_like(chunk)], 1)
    cmask = torch.cat([torch.ones(B, K, device=dev), torch.zeros(B, n, device=dev)], 1)
    c = c.replace(context=ctx, context_mask=cmask)
    x0 = torch.cat([known, chunk], 1)
    noise = torch.randn(x0.shape, generator=generator, device=dev)
    x = (1 - level) * x0 + level * noise
    grid = [level * (1 - i / steps) for i in range(steps + 1)]
    for s, s_next in zip(grid[:-1], grid[1:]):
        w = None if schedule is None else schedule.per_dim(s, motion_names)
        v = weighted_guidance(teacher, x, torch.full((B,), s, device=dev), c, g, w)
        x = x + (s_next - s) * v
    out = chunk.clone()
    out[:, -1] = x[:, -1]
    return out
