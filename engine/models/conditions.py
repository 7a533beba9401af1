"""Conditioning for the motion models (teachers and student).

- Identity/shape: the portrait's face proportions (`engine.face.shape`, standardised) -> a token.
- Style: a text prompt ("speaking calmly", "singing") as word ids of `engine.data.styles` -> a token;
  fused with the identity (image + text fusion) into the global conditioning vector.
- Frame controls, placed at any frame (in context): expression offsets and events (smile, blink now),
  gaze target, head-pose target, speak/listen. Each channel has a value and a "given" flag per frame;
  absent channels are simply not given.
- Motion context: known motion frames (e.g. the previous window's tail), value + flag per frame.
Every condition can be dropped per sample (replaced by a learned "null"), for classifier-free
guidance and for robustness when a condition is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CONTROL_NAMES: tuple[str, ...] = ("smile", "blink", "gazeX", "gazeY", "yaw", "pitch", "roll", "speak")
"""Frame control channels. smile in [0, 1]; blink 1 = close the eyes now; gaze in [-1, 1] (image
right/down); yaw/pitch/roll in radians (engine.motion conventions); speak 1 = speaking, 0 = listening
(mouth stays closed whatever the audio)."""
N_CONTROLS = len(CONTROL_NAMES)


@dataclass
class Conditions:
    """Per-sample inputs besides the noisy motion. Shapes: B samples, T frames."""

    audio: torch.Tensor  # [B, T, D] audio embeddings (AudioEncoder)
    shape: torch.Tensor  # [B, SHAPE_DIM] standardised face-shape features
    style: torch.Tensor  # [B, W] style word ids (0 = padding)
    controls: torch.Tensor  # [B, T, N_CONTROLS] values
    control_mask: torch.Tensor  # [B, T, N_CONTROLS] 1 where given
    context: torch.Tensor  # [B, T, M] known motion (model space)
    context_mask: torch.Tensor  # [B, T] 1 where known
    drop_audio: torch.Tensor  # [B] bool
    drop_style: torch.Tensor  # [B] bool
    drop_identity: torch.Tensor  # [B] bool

    def replace(self, **kw) -> Conditions:
        d = dict(self.__dict__)
        d.update(kw)
        return Conditions(**d)


class ConditionEncoder(nn.Module):
    """Conditions -> (prefix tokens [B, 2, D], global vector [B, D], per-frame tokens [B, T, D])."""

    def __init__(self, dim: int, shape_dim: int, style_vocab: int, motion_dim: int) -> None:
        super().__init__()
        self.shape_mlp = nn.Sequential(nn.Linear(shape_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.style_emb = nn.Embedding(style_vocab, dim, padding_idx=0)
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null_shape = nn.Parameter(torch.zeros(dim))
        self.null_style = nn.Parameter(torch.zeros(dim))
        self.null_audio = nn.Parameter(torch.zeros(dim))
        self.controls = nn.Linear(2 * N_CONTROLS, dim)
        self.context = nn.Linear(motion_dim + 1, dim)
        self.type_emb = nn.Parameter(torch.randn(2, dim) * 0.02)  # identity, style prefix tokens

    def forward(self, c: Conditions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B = c.shape.shape[0]
        ident = self.shape_mlp(c.shape)  # [B, D]
        ident = torch.where(c.drop_identity[:, None], self.null_shape.expand(B, -1), ident)
        words = (c.style > 0).float()  # [B, W]
        style = (self.style_emb(c.style) * words[..., None]).sum(1) / words.sum(1, keepdim=True).clamp(min=1)
        no_words = words.sum(1) == 0
        style = torch.where((c.drop_style | no_words)[:, None], self.null_style.expand(B, -1), style)
        fused = self.fuse(torch.cat([ident, style], dim=-1))  # [B, D]
        prefix = torch.stack([ident, style], dim=1) + self.type_emb  # [B, 2, D]
        audio = torch.where(c.drop_audio[:, None, None], self.null_audio.expand_as(c.audio), c.audio)
        ctrl = self.controls(torch.cat([c.controls * c.control_mask, c.control_mask], dim=-1))
        ctx = self.context(torch.cat([c.context * c.context_mask[..., None], c.context_mask[..., None]], dim=-1))
        return prefix, fused, audio + ctrl + ctx
