"""`talkcam say`: text -> speech (espeak-ng) -> motion (procedural animator) -> frames -> MP4."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.animator import AnimatorConfig, ProceduralAnimator
from engine.data.tts import EspeakTTS, TTSConfig
from engine.face import frame_avatar, prepare_avatar
from engine.render.renderer import AvatarRenderer, RendererConfig
from engine.sinks.recorder import Mp4Writer

log = logging.getLogger(__name__)


@dataclass
class SayResult:
    path: Path
    frames: int
    fps: int
    duration: float
    motion: np.ndarray  # [frames, DIM] what drove the renderer
    render_seconds: float


def say(text: str, portrait: Path, out: Path, *, fps: int = 25, tts: TTSConfig | None = None,
        animator: AnimatorConfig | None = None, render: RendererConfig | None = None,
        cache_dir: Path | None = None, require_skin: bool = True, batch: int = 8) -> SayResult:
    render = render or RendererConfig()
    avatar = prepare_avatar(portrait, cache_dir=cache_dir, require_skin=require_skin)
    framed = frame_avatar(avatar, render.size)
    utt = EspeakTTS(tts).synthesize(text)
    n_frames = max(1, math.ceil(utt.duration * fps))
    motion = ProceduralAnimator(animator).animate(utt.phonemes, n_frames, fps, utt.audio, utt.sample_rate)
    renderer = AvatarRenderer(framed, render)
    n_samples = round(n_frames * utt.sample_rate / fps)
    audio = np.zeros(n_samples, np.float32)
    audio[: min(n_samples, len(utt.audio))] = utt.audio[:n_samples]
    t0 = time.perf_counter()
    with Mp4Writer(out, render.size, fps, utt.sample_rate) as writer:
        writer.write_audio(audio)
        for i in range(0, n_frames, batch):
            for frame in renderer.render(motion[i:i + batch]):
                writer.write_video(frame)
    elapsed = time.perf_counter() - t0
    log.info("Wrote %s: %d frames (%.2f s) at %dx%d, rendered and encoded in %.1f s", out, n_frames,
             n_frames / fps, *render.size, elapsed)
    return SayResult(path=Path(out), frames=n_frames, fps=fps, duration=n_frames / fps, motion=motion,
                     render_seconds=elapsed)
