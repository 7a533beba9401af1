"""Streaming baselines for `talkcam bench`: what the student replaces, run through the same pipeline.

`ChunkedTeacherStream` is the obvious way to stream a bidirectional model: every chunk of k frames
(the student's chunk, the same audio lookahead), the generalist teacher samples the whole window
(the last `window - k` generated frames as known context + the new chunk) from noise in `steps`
Euler steps with full classifier-free guidance (two passes a step), the audio encoder recomputed over
the window: no KV cache, nothing reused between chunks. It shares the student session's audio side
(`engine.runtime.stream.MelChunker`: `push_audio`, `finish`, controls), so the pipeline and the
benchmark treat it exactly like the student.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.models.sampling import Guidance, conditions_for, sample
from engine.runtime.stream import MelChunker


class ChunkedTeacherStream(MelChunker):
    def __init__(self, teacher, chunk: int = 3, steps: int = 4, guidance: float = 3.0, window: int = 48,
                 shape: np.ndarray | None = None, style: str = "speaking", seed: int = 0) -> None:
        self.teacher = teacher.eval()
        self.chunk, self.steps, self.window = chunk, steps, window
        self.motion_dim = teacher.config.motion_dim
        self.guidance = Guidance(audio=guidance)
        self.shape, self.style = shape, style
        self.device = next(teacher.parameters()).device
        self.seed = seed
        self._init_mel(teacher.audio_encoder)
        self.reset()

    def reset(self) -> None:
        self._reset_mel()
        self._out: list[torch.Tensor] = []  # generated frames (model space), the last `window` kept
        self.gen = torch.Generator(device=self.device).manual_seed(self.seed)

    def set_identity(self, shape: np.ndarray | None = None, style: str | None = None) -> None:
        self.shape = shape
        self.style = self.style if style is None else style

    def set_guidance(self, scale: float) -> None:
        self.guidance = Guidance(audio=float(scale))

    @torch.no_grad()
    def _chunk(self, n: int) -> np.ndarray:
        a = self._frame
        lo = max(0, a + n - self.window)
        T = a + n - lo
        rows = self._mel_rows(lo, T)
        emb = self.teacher.audio_encoder(torch.from_numpy(rows)[None].to(self.device))  # recomputed every chunk
        c = conditions_for(self.teacher, emb, self.shape, self.style, np.repeat(self.controls[None], T, 0),
                           np.repeat(self.control_mask[None], T, 0))
        if a > lo:
            c.context[0, : a - lo] = torch.stack(self._out[-(a - lo):], 1)[0]
            c.context_mask[0, : a - lo] = 1.0
        x = sample(self.teacher, c, self.steps, self.guidance, self.gen)  # [1, T, M]
        new = x[:, a - lo:]
        self._out.extend(new[:, i] for i in range(n))
        self._out = self._out[-self.window:]
        self._frame += n
        self._drop_mel_before(self._frame - self.window - self.past)  # rows no window needs any more
        return self.teacher.from_model(new[0]).cpu().numpy().astype(np.float32)
