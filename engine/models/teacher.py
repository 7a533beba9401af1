"""The teacher: a bidirectional transformer over windows of motion frames, trained by flow matching.

Rectified flow in diffusers' convention: x_s = (1 - s) * x0 + s * noise for noise level s in [0, 1];
the network predicts the velocity v = noise - x0. Motion is standardised per dimension with the
training data's statistics (buffers saved with the weights). Sampling (the denoising loop, with
classifier-free guidance on audio and on style separately) lives in `engine.models.sampling`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from engine.data.styles import STYLE_WORDS
from engine.face.shape import SHAPE_DIM
from engine.models.conditions import Conditions
from engine.models.configs import TeacherConfig
from engine.models.transformer import rotary, timestep_embedding
from engine.models.trunk import MotionTrunk
from engine.motion import DIM as MOTION_DIM


class MotionTeacher(MotionTrunk, ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers types config_name differently in its two mixins
    """v = teacher(x_s [B, T, M], s [B], conditions) -> [B, T, M] (model space)."""

    if TYPE_CHECKING:

        @property
        def config(self) -> TeacherConfig: ...

    @register_to_config
    def __init__(self, motion_dim: int = MOTION_DIM, dim: int = 192, depth: int = 6, heads: int = 6,
                 mlp_ratio: float = 3.0, dropout: float = 0.0, window: int = 100, shape_dim: int = SHAPE_DIM,
                 style_vocab: int = len(STYLE_WORDS), audio: dict | None = None) -> None:
        super().__init__()
        self.build_trunk(motion_dim, dim, depth, heads, mlp_ratio, dropout, shape_dim, style_vocab, audio)

    # -- network --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, s: torch.Tensor, c: Conditions) -> torch.Tensor:
        B, T, _ = x.shape
        prefix, fused, frame_tokens = self.cond(c)  # [B, 2, D], [B, D], [B, T, D]
        h = torch.cat([prefix, self.inp(x) + frame_tokens], dim=1)  # [B, 2 + T, D]
        cvec = self.time(timestep_embedding(s, self.config.dim)) + fused  # [B, D]
        pos = torch.cat([torch.zeros(2, device=x.device), torch.arange(1, T + 1, device=x.device)])
        cos, sin = rotary(pos, self.config.dim // self.config.heads)
        cos, sin = cos[None, None], sin[None, None]  # [1, 1, 2 + T, Dh/2]
        for blk in self.blocks:
            h, _ = blk(h, cvec, cos, sin)
        shift, scale = self.final_mod(torch.nn.functional.silu(cvec)).chunk(2, dim=-1)
        h = self.norm(h[:, 2:]) * (1 + scale[:, None]) + shift[:, None]
        return self.head(h)  # [B, T, M]
