"""Audio encoder: audio feature rows -> one embedding per video frame, from past audio plus a fixed lookahead.

The rows are either the project's log-mel (`features="logmel"`, 4 x 80 per frame) or a pretrained
speech encoder's features (`features="speech"`: Whisper tiny.en on a sliding window, 2 x 384 per frame,
with `feature_lookahead` frames of audio after each chunk already inside them; engine.audio.frontend
builds the matching front end from this config). The text below says "mel" for either.

Input is the log-mel of `engine.audio.features` (computed in torch, not centred: identical offline
and streaming), 4 mel frames per 25 fps video frame. A strided convolution turns the 4 mel frames of
each video frame into one vector; a stack of causal dilated convolutions then mixes video frames.
The embedding of frame t is read at frame t + lookahead, so it sees audio up to the end of frame
t + lookahead and `past_frames` frames before t: streaming with that much context gives exactly the
offline result (tests/models/test_audio_encoder.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from engine.models.configs import AudioEncoderConfig


class _CausalBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.proj = nn.Linear(channels, channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, F, C]
        h = self.norm(x).transpose(1, 2)  # [B, C, F]
        h = self.conv(F.pad(h, (self.pad, 0))).transpose(1, 2)  # causal: output f sees f-pad..f
        return x + self.drop(self.proj(F.gelu(h)))


class AudioEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers types config_name differently in its two mixins
    """log-mel [B, mels_per_frame * (past_frames + T + lookahead), n_mels] -> [B, T, dim]."""

    if TYPE_CHECKING:

        @property
        def config(self) -> AudioEncoderConfig: ...

    @register_to_config
    def __init__(self, n_mels: int = 80, mels_per_frame: int = 4, channels: int = 192, dim: int = 192,
                 kernel: int = 3, dilations: tuple[int, ...] = (1, 2, 4, 1), lookahead: int = 2,
                 dropout: float = 0.1, features: str = "logmel", feature_chunk: int = 3, feature_lookahead: int = 2,
                 feature_window: int = 30) -> None:
        super().__init__()
        self.inp = nn.Conv1d(n_mels, channels, kernel_size=mels_per_frame, stride=mels_per_frame)
        self.blocks = nn.ModuleList(_CausalBlock(channels, kernel, d, dropout) for d in dilations)
        self.norm = nn.LayerNorm(channels)
        self.out = nn.Linear(channels, dim)
        # Fixed standardisation of the log-mel input (set from training data, saved with the weights).
        self.register_buffer("mel_mean", torch.full((n_mels,), -6.0))
        self.register_buffer("mel_std", torch.full((n_mels,), 4.0))

    @property
    def receptive_frames(self) -> int:
        """Video frames one embedding depends on (ending at t + lookahead)."""
        return 1 + sum((self.config.kernel - 1) * d for d in self.config.dilations)

    @property
    def past_frames(self) -> int:
        """Video frames of audio before frame t that the embedding of frame t depends on."""
        return max(0, self.receptive_frames - 1 - self.config.lookahead)

    @property
    def audio_lookahead(self) -> int:
        """Video frames of audio after a chunk's last frame that its embeddings depend on (the algorithmic
        latency is chunk + this): the convolutions' lookahead plus the feature window's."""
        return self.config.lookahead + (self.config.feature_lookahead if self.config.features == "speech" else 0)

    def context(self) -> tuple[int, int]:
        """(past, lookahead) video frames of mel a caller must supply around the T frames."""
        return self.past_frames, self.config.lookahead

    def forward(self, mel: torch.Tensor, past: int | None = None) -> torch.Tensor:
        """mel [B, 4*(past + T + lookahead), n_mels] -> [B, T, dim]; `past` = frames of context given
        before the first output frame (default: exactly `past_frames`)."""
        past = self.past_frames if past is None else past
        mpf, la = self.config.mels_per_frame, self.config.lookahead
        n_frames = mel.shape[1] // mpf - past - la
        if n_frames <= 0 or mel.shape[1] % mpf:
            raise ValueError(f"mel has {mel.shape[1]} frames; need 4*(past {past} + T + lookahead {la}) with T >= 1")
        x = (mel - self.mel_mean) / self.mel_std
        h = self.inp(x.transpose(1, 2)).transpose(1, 2)  # [B, F, C], one per video frame
        for blk in self.blocks:
            h = blk(h)
        h = h[:, past + la: past + la + n_frames]  # frame t read at t + lookahead
        return self.out(self.norm(h))  # [B, T, dim]
