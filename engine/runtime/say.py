"""`talkcam say`: text -> speech (espeak-ng) -> motion (procedural animator) -> frames -> MP4."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.animator import AnimatorConfig, ProceduralAnimator
from engine.data.tts import EspeakTTS, TTSConfig, TTSError, looks_like_ssml, voice_for_text
from engine.render.avatar import build_avatar, prepare_portrait
from engine.render.renderer import RendererConfig
from engine.sinks.recorder import Interrupted, Mp4Writer, Progress, RecorderError

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
        cache_dir: Path | None = None, require_skin: bool = True, batch: int = 8, ssml: bool = False,
        progress: Progress | None = None) -> SayResult:
    """Speak `text` and write the MP4. The file is fragmented (one self-contained fragment a second) and
    its audio is written along with the frames, so a kill, a crash or a full disk leaves a file that plays
    with equal streams up to its last fragment. Ctrl-C ends the file cleanly where it was and raises
    `Interrupted`. `progress(done, total)` (seconds of video) is called after every batch of frames."""
    render = render or RendererConfig()
    framed = prepare_portrait(portrait, render.size, render.max_upscale, cache_dir=cache_dir, require_skin=require_skin)
    tts = tts or TTSConfig()
    if not ssml and looks_like_ssml(text):
        ssml = True
        log.info("The text is SSML (<speak>...): its tags control the speech and are not read aloud.")
    voice, note = voice_for_text(text, tts.voice, TTSConfig().voice)
    if note is not None:
        (log.info if voice != tts.voice else log.warning)("%s", note)
        tts = dataclasses.replace(tts, voice=voice)
    utt = EspeakTTS(tts).synthesize(text, ssml=ssml)
    if not utt.phonemes:
        raise TTSError(f"Nothing to say: espeak-ng ({tts.voice}) finds no words to speak in {text[:60]!r}. Give a "
                       "text with words (punctuation alone is silent).")
    n_frames = max(1, math.ceil(utt.duration * fps))
    motion = ProceduralAnimator(animator).animate(utt.phonemes, n_frames, fps, utt.audio, utt.sample_rate)
    renderer = build_avatar(framed, render).renderer
    rate = utt.sample_rate
    n_samples = round(n_frames * rate / fps)
    audio = np.zeros(n_samples, np.float32)
    audio[: min(n_samples, len(utt.audio))] = utt.audio[:n_samples]
    total = n_frames / fps
    t0 = time.perf_counter()
    writer = Mp4Writer(out, render.size, fps, rate, fragmented=True)

    def audio_to_frames() -> None:
        """The audio of the frames written so far goes with them: both streams end together at any point."""
        writer.write_audio(audio[writer.samples_written: round(writer.frames_written * rate / fps)])

    try:
        for i in range(0, n_frames, batch):
            for frame in renderer.render(motion[i:i + batch]):
                writer.write_video(frame)
            audio_to_frames()
            if progress is not None:
                progress(writer.frames_written / fps, total)
    except KeyboardInterrupt:  # it may land between a batch's frames and their audio: catch the audio up
        audio_to_frames()
        writer.close()
        raise Interrupted(Path(out), writer.frames_written / fps, total) from None
    except BaseException:
        _close_after_error(writer)
        raise
    writer.close()
    elapsed = time.perf_counter() - t0
    log.info("Wrote %s: %d frames (%.2f s) at %dx%d, rendered and encoded in %.1f s", out, n_frames,
             n_frames / fps, *render.size, elapsed)
    return SayResult(path=Path(out), frames=n_frames, fps=fps, duration=n_frames / fps, motion=motion,
                     render_seconds=elapsed)


def _close_after_error(writer: Mp4Writer) -> None:
    """Finish the file after a failure (it plays up to there); the first error is the one raised."""
    try:
        writer.close()
    except RecorderError as exc:  # e.g. the disk is still full: the first error already says so
        log.debug("closing %s after an error: %s", writer.path, exc)
