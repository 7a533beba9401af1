"""Putting the live avatar together: models + portrait -> a Pipeline on a source, with sinks.

`AvatarEngine` is what the command line (`talkcam live`, `talkcam render`) and the desktop app use: it
loads the student once, prepares portraits (face found, framed, renderer + refiner built) and builds
pipelines; `switch_portrait` swaps the avatar of a running pipeline without stopping it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.audio.io import FPS, SAMPLE_RATE
from engine.face import FramedPortrait
from engine.render.avatar import Avatar, build_avatar, prepare_portrait
from engine.render.renderer import RendererConfig
from engine.runtime.config import SessionConfig
from engine.runtime.pipeline import Pipeline, PipelineConfig
from engine.sinks.base import Sink

if TYPE_CHECKING:
    from engine.runtime.stream import StudentStream

log = logging.getLogger(__name__)

PIECE = SAMPLE_RATE // FPS  # 40 ms: one video frame of audio (files at full speed)
LIVE_PIECE = SAMPLE_RATE // 50
"""20 ms: live audio is read in half frames, so a chunk starts as soon as its audio (plus the mel window's
15 ms) is in, not at the next 40 ms boundary: 20 ms less latency."""


class AvatarEngine:
    def __init__(self, render: RendererConfig | None = None, session: SessionConfig | None = None,
                 student_dir: Path | None = None, style: str = "speaking", cache_dir: Path | None = None,
                 require_skin: bool = True, device: str = "auto") -> None:
        import torch

        from engine.runtime.stream import load_session_models

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.render_config = render or RendererConfig()
        self.session_config = session or SessionConfig()
        self.style = style
        self.cache_dir = cache_dir
        self.require_skin = require_skin
        try:
            self.models = load_session_models(student_dir, tail_forcing=self.session_config.tail_forcing,
                                              device=self.device)
        except torch.OutOfMemoryError as exc:
            log.warning("GPU out of memory (%s): running on the CPU instead (slower)", exc)
            self.device = "cpu"
            torch.cuda.empty_cache()
            self.models = load_session_models(student_dir, tail_forcing=self.session_config.tail_forcing)
        self.step = None
        if not self.session_config.tail_forcing:  # tail forcing runs the teacher in torch: the student stays there too
            from engine.backends.runners import StudentBackend

            self.step = StudentBackend(self.models.student, self.session_config.backend, self.session_config.steps)
        self.pipeline: Pipeline | None = None
        self._refiners: dict[str, object] = {}

    def avatar(self, portrait: Path) -> Avatar:
        """Prepare a portrait (PortraitError with the reason when it has no usable face)."""
        import torch

        fp = prepare_portrait(portrait, self.render_config.size, self.render_config.max_upscale,
                            cache_dir=self.cache_dir, require_skin=self.require_skin)
        try:
            return build_avatar(fp, self.render_config, device=self.device, refiner_runner=self._refiner(self.device))
        except torch.OutOfMemoryError as exc:  # the student stays where it is; the renderer moves to the CPU
            log.warning("GPU out of memory for the renderer (%s): rendering on the CPU instead (slower)", exc)
            torch.cuda.empty_cache()
            return build_avatar(fp, self.render_config, device="cpu", refiner_runner=self._refiner("cpu"))

    def _refiner(self, device: str):
        """The refiner runner for `device`, built once and shared by every portrait (None when it is off)."""
        if not self.render_config.refiner:
            return None
        if device not in self._refiners:
            from engine.render.refiner import refiner_runner_for

            self._refiners[device] = refiner_runner_for(self.render_config, device)
        return self._refiners[device]

    def stream(self, avatar: Avatar | FramedPortrait) -> StudentStream:
        """A new motion stream of the engine's models and settings for `avatar`'s face shape."""
        from engine.runtime.stream import StudentStream  # the models' side (diffusers) loads only when used

        student, corrector, schedule = self.models
        return StudentStream(student, self.session_config, corrector, schedule, avatar.shape, self.style, self.step)

    def pipeline_for(self, source, avatar: Avatar, sinks: list[Sink], config: PipelineConfig | None = None) -> Pipeline:
        self.pipeline = Pipeline(source, self.stream(avatar), avatar.renderer, sinks, config)
        return self.pipeline

    def switch_portrait(self, portrait: Path) -> Avatar:
        """Prepare `portrait` (in the caller's thread) and switch the running pipeline to it at its next chunk."""
        avatar = self.avatar(portrait)
        if self.pipeline is not None:
            self.pipeline.set_portrait(avatar.renderer, avatar.shape)
        log.info("Portrait: %s", portrait)
        return avatar


def run_headless(engine: AvatarEngine, source, portrait: Path, sinks: list[Sink], seconds: float = 0.0,
                 report_every: float = 5.0) -> dict:
    """Run until the source ends, `seconds` have passed, or Ctrl-C / SIGTERM; log a status line every
    `report_every` seconds. Returns the pipeline's summary."""
    pipe = engine.pipeline_for(source, engine.avatar(portrait), sinks)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("Stopping (%s)", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        pipe.start()
        t0 = next_report = time.monotonic()
        while pipe.running and not stop.is_set():
            time.sleep(0.05)
            now = time.monotonic()
            if seconds and now - t0 >= seconds:
                break
            if report_every and now >= next_report + report_every:
                next_report = now
                s = pipe.stats.summary()
                mic = getattr(source, "state", "")
                av = [t for t in (getattr(k, "status", lambda: "")() for k in sinks) if t]
                log.info("%d frames, %.1f fps, latency p50 %.0f / p95 %.0f ms, dropped %d%s%s", s["frames"], s["fps"],
                         s["latency_ms_p50"], s["latency_ms_p95"], s["dropped_frames"],
                         f", microphone {mic}" if mic else "", "".join(f"; {t}" for t in av))
        pipe.stop()
        pipe.join()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    summary = pipe.stats.summary()
    log.info("Stopped: %d frames, %.1f fps, latency p50 %.0f / p95 %.0f ms, %d dropped", summary["frames"],
             summary["fps"], summary["latency_ms_p50"], summary["latency_ms_p95"], summary["dropped_frames"])
    return summary
