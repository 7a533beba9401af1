"""`talkcam render`: any audio (or a video's sound track) + a portrait -> MP4, through the live path.

The audio is pushed to the streaming session (`engine.runtime.session`) in 40 ms pieces, as the
microphone delivers it live; each motion chunk the student emits is rendered from the portrait and
encoded at once. Nothing here looks ahead further than the live session does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.audio.io import SAMPLE_RATE, load_audio
from engine.face import frame_avatar, prepare_avatar
from engine.render.renderer import AvatarRenderer, RendererConfig
from engine.runtime.session import SessionConfig, StudentSession, load_session_models
from engine.sinks.recorder import Mp4Writer

log = logging.getLogger(__name__)

FPS = 25
PIECE = SAMPLE_RATE // FPS  # 40 ms of audio per push, as live


@dataclass
class RenderResult:
    path: Path
    frames: int
    duration: float
    motion: np.ndarray
    seconds: float
    """Wall time of the whole stream (session + renderer + encoder)."""
    stage_seconds: dict = field(default_factory=dict)


def render_file(audio_path: Path, portrait: Path, out: Path, session: SessionConfig | None = None,
                render: RendererConfig | None = None, student_dir: Path | None = None, style: str = "speaking",
                cache_dir: Path | None = None, require_skin: bool = True, max_seconds: float = 0.0) -> RenderResult:
    from engine.eval.evaluate import portrait_shape

    session = session or SessionConfig()
    render = render or RendererConfig()
    audio = load_audio(audio_path)
    if max_seconds > 0:
        audio = audio[: int(max_seconds * SAMPLE_RATE)]
    if len(audio) == 0:
        raise ValueError(f"{audio_path} has no audio samples")
    n_frames = max(1, math.ceil(len(audio) / SAMPLE_RATE * FPS))
    framed = frame_avatar(prepare_avatar(portrait, cache_dir=cache_dir, require_skin=require_skin), render.size)
    student, corrector, schedule = load_session_models(student_dir, tail_forcing=session.tail_forcing)
    sess = StudentSession(student, session, corrector, schedule, portrait_shape(framed), style)
    renderer = AvatarRenderer(framed, render)
    padded = np.zeros(round(n_frames * SAMPLE_RATE / FPS), np.float32)
    padded[: len(audio)] = audio[: len(padded)]
    motions, t_session, t_render = [], 0.0, 0.0
    t0 = time.perf_counter()
    with Mp4Writer(out, render.size, FPS, SAMPLE_RATE) as writer, torch.inference_mode():
        writer.write_audio(padded)
        chunks = sess.stream(audio, PIECE, n_frames)  # exactly n_frames: the audio covers no more
        while True:
            t = time.perf_counter()
            motion = next(chunks, None)
            t_session += time.perf_counter() - t
            if motion is None:
                break
            motions.append(motion)
            t = time.perf_counter()
            for frame in renderer.render(motion):
                writer.write_video(frame)
            t_render += time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    motion = np.concatenate(motions)
    log.info("Wrote %s: %d frames (%.2f s) at %dx%d in %.1f s (student %.1f ms/frame, renderer%s + encoder %.1f "
             "ms/frame)", out, len(motion), len(motion) / FPS, *render.size, elapsed, 1e3 * t_session / len(motion),
             f" + refiner ({renderer.refiner.backend})" if renderer.refiner else "", 1e3 * t_render / len(motion))
    return RenderResult(path=Path(out), frames=len(motion), duration=len(motion) / FPS, motion=motion, seconds=elapsed,
                        stage_seconds={"session": t_session, "render_encode": t_render})
