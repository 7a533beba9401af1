"""The decoder refiner's network: a compact residual U-Net on the mouth crop.

Pixel-unshuffle to half resolution, two stride-2 levels, FiLM of the motion in the bottleneck,
pixel-shuffle back. Its last layer starts at zero, so an untrained refiner is exactly the identity. A
pure nn.Module (tensors in, tensors out); `engine.render.refiner.FrameRefiner` applies it to frames and
`engine.backends` exports and runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from engine import motion as M
from engine.models.configs import RefinerConfig

IN_CHANNELS = 7  # rendered RGB, reference RGB, mouth mask


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class RefinerNet(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers types config_name differently in its two mixins
    """Residual U-Net on the mouth crop. Input sides must be multiples of 8."""

    if TYPE_CHECKING:

        @property
        def config(self) -> RefinerConfig: ...

    @register_to_config
    def __init__(self, motion_dim: int = M.DIM, channels: tuple[int, int, int] = (24, 48, 96),
                 bottleneck_blocks: int = 2, motion_hidden: int = 64, crop_scale: float = 0.6,
                 feather: float = 0.18, work: int = 128, gate: float = 0.0) -> None:
        super().__init__()
        # crop_scale, feather, work: the crop geometry the network was trained on (CropConfig) and the side
        # (pixels, a multiple of 8) it runs at; FrameRefiner resamples other crop sides to it.
        # gate: the correction is confined to the mouth opening grown by this share of the crop side (the
        # skin and lips further out keep the portrait's own pixels); 0 = the whole crop (under the feather).
        c1, c2, c3 = channels
        self.stem = nn.Conv2d(IN_CHANNELS * 4, c1, 3, padding=1)  # after pixel-unshuffle(2)
        self.enc1 = ResBlock(c1)
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.enc2 = ResBlock(c2)
        self.down2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.mid = nn.ModuleList(ResBlock(c3) for _ in range(bottleneck_blocks))
        self.film = nn.Sequential(nn.Linear(motion_dim, motion_hidden), nn.SiLU(),
                                  nn.Linear(motion_hidden, 2 * c3 * bottleneck_blocks))
        film_out = cast(nn.Linear, self.film[-1])
        self.up2 = nn.Conv2d(c3, c2, 1)
        self.dec2 = ResBlock(c2)
        self.up1 = nn.Conv2d(c2, c1, 1)
        self.dec1 = ResBlock(c1)
        self.head = nn.Conv2d(c1, 3 * 4, 3, padding=1)  # before pixel-shuffle(2)
        assert self.head.bias is not None  # a Conv2d made with bias=True
        for m in (film_out.weight, film_out.bias, self.head.weight, self.head.bias):  # starts as the identity
            nn.init.zeros_(m)

    def forward(self, rendered: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                motion: torch.Tensor) -> torch.Tensor:
        """rendered, reference [B, 3, H, W] in 0..1, mask [B, 1, H, W], motion [B, DIM] -> delta [B, 3, H, W]."""
        x = torch.cat([rendered * 2.0 - 1.0, reference * 2.0 - 1.0, mask], dim=1)  # [B, 7, H, W]
        x = F.pixel_unshuffle(x, 2)  # [B, 28, H/2, W/2]
        e1 = self.enc1(self.stem(x))  # [B, c1, H/2, W/2]
        e2 = self.enc2(self.down1(F.silu(e1)))  # [B, c2, H/4, W/4]
        h = self.down2(F.silu(e2))  # [B, c3, H/8, W/8]
        film = self.film(motion).view(motion.shape[0], len(self.mid), 2, -1, 1, 1)
        for i, block in enumerate(self.mid):
            h = block(h * (1.0 + film[:, i, 0]) + film[:, i, 1])
        h = F.interpolate(self.up2(h), scale_factor=2.0, mode="bilinear", align_corners=False) + e2
        h = self.dec2(h)
        h = F.interpolate(self.up1(h), scale_factor=2.0, mode="bilinear", align_corners=False) + e1
        h = self.dec1(h)
        return F.pixel_shuffle(self.head(F.silu(h)), 2)  # [B, 3, H, W]
