"""Log-mel features in torch, identical offline and streaming.

Frames are not centred: mel frame k covers samples [k*hop, k*hop + win). With hop = 10 ms at
16 kHz and video at 25 fps there are exactly 4 mel frames per video frame, and video frame n
(time [n/25, (n+1)/25)) owns mel frames 4n..4n+3. A streaming caller that has received the
samples up to mel frame k's window end computes the same values as the offline pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.audio.io import SAMPLE_RATE

MEL_EPS = 1e-6
"""Added to the mel energies before the log."""
SILENCE = float(np.log(MEL_EPS))
"""The log-mel value of digital silence (padding before/after a clip)."""


@dataclass(frozen=True)
class MelConfig:
    """Log-mel front end settings (shared by the data engine and every audio model)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 40.0
    f_max: float = 7600.0
    fps: float = 25.0
    """Video frame rate the features are aligned to."""

    @property
    def mels_per_frame(self) -> int:
        per = self.sample_rate / self.fps / self.hop_length
        if abs(per - round(per)) > 1e-9:
            raise ValueError(f"hop {self.hop_length} does not divide one video frame at {self.fps} fps")
        return int(round(per))

    @property
    def samples_per_frame(self) -> int:
        return self.mels_per_frame * self.hop_length


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Slaney-style triangular filters on the HTK mel scale, [n_mels, n_fft // 2 + 1]."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = np.clip(np.minimum(up, down), 0, None)
    fb *= (2.0 / (hi - lo))  # equal area
    return fb.astype(np.float32)


class LogMel(nn.Module):
    """Audio [B, S] (float, 16 kHz) -> log-mel [B, F, n_mels] with F = (S - win) // hop + 1."""

    window: torch.Tensor
    fb: torch.Tensor

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        cfg = self.config
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)
        self.register_buffer("fb", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if audio.shape[-1] < cfg.win_length:
            return audio.new_zeros(audio.shape[0], 0, cfg.n_mels)
        frames = audio.unfold(-1, cfg.win_length, cfg.hop_length)  # [B, F, win]
        spec = torch.fft.rfft(frames * self.window, n=cfg.n_fft).abs().pow(2)
        mel = spec @ self.fb.T
        return torch.log(mel + MEL_EPS)


def log_mel(audio: np.ndarray, config: MelConfig | None = None, n_frames: int | None = None) -> np.ndarray:
    """Offline helper: mono 16 kHz audio -> [F, n_mels] float32, padded so that `n_frames` video frames
    (default: all the audio) have their 4 mel frames each."""
    cfg = config or MelConfig()
    per = cfg.samples_per_frame
    if n_frames is None:
        n_frames = int(np.ceil(len(audio) / per))
    need = n_frames * per + cfg.win_length - cfg.hop_length
    padded = np.zeros(need, np.float32)
    padded[: min(len(audio), need)] = audio[:need]
    with torch.no_grad():
        mel = LogMel(cfg)(torch.from_numpy(padded)[None])[0]
    return mel[: n_frames * cfg.mels_per_frame].numpy()


class StreamingLogMel:
    """Log-mel frames from audio arriving in pieces of any size: the same values as `log_mel` on the whole
    signal (frames are not centred, so frame k only needs samples up to k * hop + win)."""

    def __init__(self, config: MelConfig | None = None) -> None:
        self.config = config or MelConfig()
        self._mel = LogMel(self.config)
        self._buf = np.zeros(0, np.float32)  # samples from the next frame's start on
        self._samples = 0  # received
        self._frames = 0  # emitted

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Append mono 16 kHz samples; returns the mel frames [F, n_mels] that became complete."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        self._samples += len(audio)
        return self._push(audio)

    def _push(self, audio: np.ndarray) -> np.ndarray:
        cfg = self.config
        self._buf = np.concatenate([self._buf, audio])
        n = (len(self._buf) - cfg.win_length) // cfg.hop_length + 1 if len(self._buf) >= cfg.win_length else 0
        if n <= 0:
            return np.zeros((0, cfg.n_mels), np.float32)
        with torch.no_grad():
            mel = self._mel(torch.from_numpy(self._buf[: (n - 1) * cfg.hop_length + cfg.win_length])[None])[0]
        self._buf = self._buf[n * cfg.hop_length:]
        self._frames += n
        return mel.numpy()

    def finish(self) -> np.ndarray:
        """Flush with zeros (as `log_mel` pads the end) up to the next whole video frame."""
        cfg = self.config
        total = -(-self._samples // cfg.samples_per_frame) * cfg.mels_per_frame  # as log_mel: whole video frames
        pending = total - self._frames
        if pending <= 0:
            return np.zeros((0, cfg.n_mels), np.float32)
        need = (pending - 1) * cfg.hop_length + cfg.win_length - len(self._buf)
        return self._push(np.zeros(max(0, need), np.float32))[:pending]

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._samples = self._frames = 0
