"""The network parts the teacher and the student share (same names, so a student starts from a teacher's
weights): audio encoder, condition encoder, motion input, time MLP, DiT blocks, output head, and the
motion standardisation buffers."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from engine.models.audio_encoder import AudioEncoder
from engine.models.conditions import ConditionEncoder
from engine.models.transformer import Block


class MotionTrunk(nn.Module):
    """Base of the motion models (before diffusers' ModelMixin): `build_trunk` creates the shared parts."""

    motion_mean: torch.Tensor
    motion_std: torch.Tensor

    def build_trunk(self, motion_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float,
                    shape_dim: int, style_vocab: int, audio: dict | None) -> None:
        self.audio_encoder = AudioEncoder(**{"dim": dim, "channels": dim, **(audio or {})})
        self.cond = ConditionEncoder(dim, shape_dim, style_vocab, motion_dim)
        self.inp = nn.Linear(motion_dim, dim)
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.final_mod = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(dim, motion_dim)
        for m in (self.final_mod, self.head):  # adaLN-zero: the network starts as the identity
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.register_buffer("motion_mean", torch.zeros(motion_dim))
        self.register_buffer("motion_std", torch.ones(motion_dim))

    @property
    def block_list(self) -> list[Block]:
        """The DiT blocks (`self.blocks`), typed."""
        return cast("list[Block]", list(self.blocks))

    # -- motion space: standardised per dimension with the training data's statistics -------------
    def to_model(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.motion_std + self.motion_mean
