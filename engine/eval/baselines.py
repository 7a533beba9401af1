"""Streaming baselines for `talkcam bench`: what the student replaces, run through the same pipeline.

`ChunkedTeacherSession` is the obvious way to stream a bidirectional model: every chunk of k frames
(the student's chunk, the same audio lookahead), the generalist teacher samples the whole window
(the last `window - k` generated frames as known context + the new chunk) from noise in `steps`
Euler steps with full classifier-free guidance (two passes a step), the audio encoder recomputed over
the window: no KV cache, nothing reused between chunks. It has the session's interface
(`push_audio`, `finish`, controls, identity), so the pipeline and the benchmark treat it exactly like
the student.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.audio.features import SILENCE, MelConfig, StreamingLogMel
from engine.models.conditions import CONTROL_NAMES, N_CONTROLS
from engine.models.sampling import Guidance, conditions_for, sample


class ChunkedTeacherSession:
    def __init__(self, teacher, chunk: int = 3, steps: int = 4, guidance: float = 3.0, window: int = 48,
                 shape: np.ndarray | None = None, style: str = "speaking", seed: int = 0) -> None:
        self.teacher = teacher.eval()
        self.chunk, self.steps, self.window = chunk, steps, window
        self.guidance = Guidance(audio=guidance)
        self.shape, self.style = shape, style
        enc = teacher.audio_encoder
        self.past, self.lookahead = enc.context()
        self.mpf = enc.config.mels_per_frame
        self.n_mels = enc.config.n_mels
        self.device = next(teacher.parameters()).device
        self.seed = seed
        self.controls = np.zeros(N_CONTROLS, np.float32)
        self.control_mask = np.zeros(N_CONTROLS, np.float32)
        self.reset()

    def reset(self) -> None:
        self.mel_front = StreamingLogMel(MelConfig())
        self._mel = np.zeros((0, self.n_mels), np.float32)  # all rows since the start (bounded below)
        self._mel0 = 0  # frame of the buffer's first row group
        self._out: list[torch.Tensor] = []  # generated frames (model space), the last `window` kept
        self._frame = 0
        self.gen = torch.Generator(device=self.device).manual_seed(self.seed)

    def set_identity(self, shape: np.ndarray | None = None, style: str | None = None) -> None:
        self.shape = shape
        self.style = self.style if style is None else style

    def set_control(self, name: str, value: float | None) -> None:
        i = CONTROL_NAMES.index(name)
        self.controls[i] = 0.0 if value is None else float(value)
        self.control_mask[i] = 0.0 if value is None else 1.0

    def set_guidance(self, scale: float) -> None:
        self.guidance = Guidance(audio=float(scale))

    def push_audio(self, samples: np.ndarray) -> np.ndarray:
        mel = self.mel_front.push(samples)
        if len(mel):
            self._mel = np.concatenate([self._mel, mel.astype(np.float32)])
        out = []
        while self._available() >= self._frame + self.chunk + self.lookahead:
            out.append(self._next(self.chunk))
        return np.concatenate(out) if out else np.zeros((0, self.teacher.config.motion_dim), np.float32)

    def finish(self, n_frames: int | None = None) -> np.ndarray:
        out = [self.push_audio(np.zeros(0, np.float32))]
        tail = self.mel_front.finish()
        if len(tail):
            self._mel = np.concatenate([self._mel, tail.astype(np.float32)])
        total = self._available() if n_frames is None else n_frames
        while self._frame < total:
            n = min(self.chunk, total - self._frame)
            need = self._frame + n + self.lookahead - self._available()
            if need > 0:
                self._mel = np.concatenate([self._mel, np.full((need * self.mpf, self.n_mels), SILENCE, np.float32)])
            out.append(self._next(n))
        return np.concatenate(out)

    def _available(self) -> int:
        return self._mel0 + len(self._mel) // self.mpf

    @torch.no_grad()
    def _next(self, n: int) -> np.ndarray:
        a = self._frame
        lo = max(0, a + n - self.window)
        first = lo - self.past  # frame of the encoder's first input row group
        rows = self._mel[max(0, first - self._mel0) * self.mpf:(a + n + self.lookahead - self._mel0) * self.mpf]
        if first < self._mel0:  # before the start: silence
            rows = np.concatenate([np.full(((self._mel0 - first) * self.mpf, self.n_mels), SILENCE, np.float32), rows])
        emb = self.teacher.audio_encoder(torch.from_numpy(rows)[None].to(self.device))  # recomputed every chunk
        T = a + n - lo
        c = conditions_for(self.teacher, emb[:, :T], self.shape, self.style, np.repeat(self.controls[None], T, 0),
                           np.repeat(self.control_mask[None], T, 0))
        known = torch.stack(self._out[-(a - lo):], 1) if a > lo else None
        if known is not None:
            c.context[0, : a - lo] = known[0]
            c.context_mask[0, : a - lo] = 1.0
        x = sample(self.teacher, c, self.steps, self.guidance, self.gen)  # [1, T, M]
        new = x[:, a - lo:]
        self._out.extend(new[:, i] for i in range(n))
        self._out = self._out[-self.window:]
        self._frame += n
        keep = self._frame - self.window - self.past - self._mel0  # drop mel no window needs any more
        if keep > 0:
            self._mel = self._mel[keep * self.mpf:]
            self._mel0 += keep
        return self.teacher.from_model(new[0]).cpu().numpy().astype(np.float32)
