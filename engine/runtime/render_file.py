"""`talkcam render`: any audio (or a video's sound track) + a portrait -> MP4, through the live path.

The file is decoded incrementally and fed to the same pipeline as the microphone
(`engine.runtime.pipeline`: student and renderer stages on their own threads) in 40 ms pieces; each
motion chunk the student emits is rendered from the portrait and encoded. Nothing here looks ahead
further than the live session does; the only difference from live is that nothing waits for the clock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.audio.io import FPS
from engine.audio.sources import FileSource
from engine.render.renderer import RendererConfig
from engine.runtime.config import SessionConfig
from engine.runtime.live import PIECE, AvatarEngine
from engine.sinks.base import SinkBase
from engine.sinks.recorder import Interrupted, Progress, RecorderSink, check_output

log = logging.getLogger(__name__)


@dataclass
class RenderResult:
    path: Path
    frames: int
    duration: float
    motion: np.ndarray
    seconds: float
    """Wall time of the whole stream (session + renderer + encoder)."""
    stage_seconds: dict = field(default_factory=dict)


class _MotionTap(SinkBase):
    """Keeps each frame's motion (for the result and evaluation) and reports the progress."""

    name = "motion"

    def __init__(self, progress: Progress | None = None, total: float = 0.0) -> None:
        self.motion: dict[int, np.ndarray] = {}
        self.progress, self.total = progress, total

    def write_frame(self, frame) -> None:
        self.motion[frame.index] = frame.motion
        if self.progress is not None:
            self.progress((frame.index + 1) / FPS, self.total)


def render_file(audio_path: Path, portrait: Path, out: Path, session: SessionConfig | None = None,
                render: RendererConfig | None = None, student_dir: Path | None = None, style: str = "speaking",
                cache_dir: Path | None = None, require_skin: bool = True, max_seconds: float = 0.0,
                progress: Progress | None = None, overwrite: bool = False) -> RenderResult:
    """The live pipeline (engine.runtime.pipeline) on a file at full speed: nothing is dropped, the
    recorder holds the pipeline back when it is slower. The MP4 keeps the file's own audio (its rate, mono
    or stereo). `progress(done, total)` gets seconds of video; Ctrl-C closes the file where it was and
    raises `Interrupted`."""
    render = render or RendererConfig()
    source = FileSource(audio_path, PIECE, realtime=False, max_seconds=max_seconds)
    source.open()  # bad files fail here, before any model is loaded
    source.close()
    check_output(out, (audio_path, portrait, student_dir), overwrite)  # and a bad output path
    total = source.duration or 0.0
    if max_seconds > 0:
        total = min(total, max_seconds) if total else max_seconds
    engine = AvatarEngine(render, session, student_dir, style, cache_dir, require_skin)
    avatar = engine.avatar(portrait)
    recorder, tap = RecorderSink(out, blocking=True), _MotionTap(progress, total)
    pipe = engine.pipeline_for(source, avatar, [recorder, tap])
    t0 = time.perf_counter()
    stats = pipe.run()
    elapsed = time.perf_counter() - t0
    if recorder.error is not None:
        raise recorder.error
    if stats.interrupted:
        raise Interrupted(Path(out), recorder.frames_written / FPS, total)
    if not tap.motion:
        raise ValueError(f"{audio_path} has no audio samples")
    motion = np.stack([tap.motion[i] for i in sorted(tap.motion)])
    s = stats.summary()
    log.info("Wrote %s: %d frames (%.2f s) at %dx%d in %.1f s (student %.1f ms/frame, renderer%s %.1f ms/frame, "
             "overlapped)", out, len(motion), len(motion) / FPS, *render.size, elapsed, s["student_ms_per_frame"],
             f" + refiner ({avatar.renderer.refiner.backend})" if avatar.renderer.refiner else "",
             s["render_ms_per_frame"])
    return RenderResult(path=Path(out), frames=len(motion), duration=len(motion) / FPS, motion=motion, seconds=elapsed,
                        stage_seconds={"session": stats.student_s, "render": stats.render_s})
