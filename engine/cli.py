"""The `talkcam` command line, generated from typed config dataclasses (tyro)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Protocol

import tyro

from engine import paths
from engine.audio.mic import MicError
from engine.data.animator import AnimatorConfig
from engine.data.build import BuildConfig
from engine.data.tts import TTSConfig, TTSError
from engine.eval.evaluate import EvalConfig
from engine.face.image import PortraitError
from engine.limits import Range, validate
from engine.logs import setup_logging
from engine.render.renderer import RendererConfig
from engine.runtime.config import SessionConfig
from engine.sinks.recorder import Interrupted, RecorderError
from engine.sinks.virtualcam import VirtualCamError
from engine.sinks.vmc import VmcError
from engine.train.config import CalibrateConfig, DistillConfig, RefinerTrainConfig, TeacherTrainConfig
from engine.train.refiner_data import RefinerDataConfig
from engine.train.refiner_eval import RefinerEvalConfig

log = logging.getLogger("talkcam")

Flat = tyro.conf.OmitArgPrefixes


@dataclass
class Common:
    """Options shared by every command."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Console log level (DEBUG, INFO, WARNING, ERROR). The log file always gets DEBUG."""
    cache_dir: Path | None = None
    """Where prepared portraits are cached (default: the user's cache folder)."""
    cache: bool = True
    """Read and write the portrait cache (--no-cache: prepare the portrait afresh, keep nothing)."""

    def avatar_cache(self) -> Path | None:
        return (self.cache_dir or paths.cache_dir() / "avatars") if self.cache else None


@dataclass
class Say:
    """Speak TEXT with espeak-ng and write an MP4 of the portrait saying it."""

    text: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="TEXT")]
    """What the avatar says."""
    portrait: Path | None = None
    """Portrait image (JPEG/PNG/WebP/BMP). Default: the bundled portrait."""
    out: Path = Path("talkcam_say.mp4")
    """Output MP4 (H.264 + AAC)."""
    overwrite: bool = False
    """Replace OUT when it exists (never an input file)."""
    fps: Annotated[int, Range(1, 60)] = 25
    """Frames per second of the video."""
    ssml: bool = False
    """TEXT is SSML (<speak>, <break>, <emphasis>, <prosody>, ...): its tags shape the speech instead of being
    read aloud (a text starting with <speak> is taken as SSML anyway)."""
    skin_check: bool = True
    """Refuse faces without skin tones (robots, statues); --no-skin-check accepts them."""
    tts: Annotated[TTSConfig, Flat] = field(default_factory=TTSConfig)
    animator: Annotated[AnimatorConfig, Flat] = field(default_factory=AnimatorConfig)
    render: Annotated[RendererConfig, Flat] = field(default_factory=RendererConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.runtime.say import say
        from engine.sinks.recorder import check_output

        _check_size(self.render.size)
        check_output(self.out, (self.portrait,), self.overwrite)
        with _progress("say") as progress:
            result = say(self.text, self.portrait or paths.default_portrait(), self.out, fps=self.fps, tts=self.tts,
                         animator=self.animator, render=self.render, cache_dir=self.common.avatar_cache(),
                         require_skin=self.skin_check, ssml=self.ssml, progress=progress)
        log.info("Done: %s (%.2f s of video)", result.path.resolve(), result.duration)
        return 0


@dataclass
class Render:
    """Make the portrait speak an audio file (or a video's sound track) and write an MP4, through the live
    streaming path: the default student, chunk by chunk, with its KV cache and tail forcing."""

    audio: Path
    """Any audio file (WAV, MP3, FLAC, ...) or a video with a sound track."""
    portrait: Path | None = None
    """Portrait image (JPEG/PNG/WebP/BMP). Default: the bundled portrait."""
    out: Path = Path("talkcam_render.mp4")
    """Output MP4 (H.264 + AAC)."""
    overwrite: bool = False
    """Replace OUT when it exists (never an input file)."""
    style: str = "speaking"
    """Style prompt, e.g. "speaking calmly", "singing", "excited"."""
    student: Path | None = None
    """Student model folder (default: the shipped one, assets/models/student)."""
    max_seconds: Annotated[float, Range(0, None)] = 0.0
    """Only the first seconds of the audio (0 = all)."""
    skin_check: bool = True
    """Refuse faces without skin tones (robots, statues); --no-skin-check accepts them."""
    session: Annotated[SessionConfig, Flat] = field(default_factory=SessionConfig)
    render: Annotated[RendererConfig, Flat] = field(default_factory=RendererConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.runtime.render_file import render_file

        _check_size(self.render.size)
        if self.session.steps not in (1, 2, 4):
            raise ValueError(f"--steps is 1, 2 or 4 (the student's step grids), got {self.session.steps}")
        with _progress("render") as progress:
            res = render_file(self.audio, self.portrait or paths.default_portrait(), self.out, self.session,
                              self.render, self.student, self.style, self.common.avatar_cache(), self.skin_check,
                              self.max_seconds, progress, overwrite=self.overwrite)
        log.info("Done: %s (%.2f s of video, made in %.1f s)", res.path.resolve(), res.duration, res.seconds)
        return 0


@dataclass
class Live:
    """Run the avatar live from the microphone: preview window, or headless with --no-gui; optionally as
    a virtual webcam (--virtualcam) and recorded (--record OUT.mp4). Ctrl-C stops cleanly."""

    no_gui: bool = False
    """Run without a window (also the default where there is no display)."""
    mic: str | None = None
    """Microphone name or a unique part of it (see `talkcam mics`). Default: the system's default input."""
    audio: Path | None = None
    """Play this file as the microphone, at real-time pace (demos and tests)."""
    portrait: Path | None = None
    """Portrait image. Default: the bundled portrait."""
    virtualcam: bool = False
    """Publish the avatar as a virtual webcam (v4l2loopback on Linux, OBS's virtual camera on Windows/macOS)."""
    camera_device: str | None = None
    """Virtual camera device (e.g. /dev/video10); default: the first free one."""
    camera_backend: str | None = None
    """pyvirtualcam backend (v4l2loopback, obs, unitycapture); default: any available."""
    vmc: str | None = None
    """Also send the motion to a VTuber app over the VMC protocol (OSC/UDP), e.g. 127.0.0.1:39539 for
    VSeeFace, VNyan or Warudo on this machine: ARKit perfect-sync blendshapes, head pose, gaze."""
    synced_mic: bool = False
    """Publish your voice as a virtual microphone ("talkcam Microphone" on Linux; VB-CABLE on Windows, BlackHole
    on macOS) delayed to match the avatar's frames, so a call that takes the talkcam camera and microphone gets
    them in sync. Without it the status line says the sync offset to enter in OBS instead."""
    synced_mic_device: str | None = None
    """Write the synced voice to this output device instead (any PortAudio output, e.g. a VoiceMeeter input)."""
    video_delay_ms: Annotated[float, Range(0, 1000)] = 0.0
    """What the call app adds to the camera on top of what talkcam measures, if you know it (ms)."""
    record: Path | None = None
    """Record the avatar with the microphone's audio to this MP4."""
    overwrite: bool = False
    """Replace the --record or --screenshot file when it exists (never an input file)."""
    seconds: Annotated[float, Range(0, None)] = 0.0
    """Stop after this many seconds (0: until Ctrl-C)."""
    style: str = "speaking"
    skin_check: bool = True
    screenshot: Path | None = None
    """Window mode: save a screenshot of the window after --seconds of frames, then quit."""
    settings_file: Path | None = None
    """Window mode: keep the settings in this .ini file instead of the system's store."""
    session: Annotated[SessionConfig, Flat] = field(default_factory=SessionConfig)
    render: Annotated[RendererConfig, Flat] = field(default_factory=RendererConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        import os

        from engine.sinks.recorder import check_output

        if self.screenshot is not None:
            check_output(self.screenshot, (self.portrait,), self.overwrite, suffixes=(".png", ".jpg", ".jpeg"))
        gui = not self.no_gui and bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or
                                       sys.platform in ("win32", "darwin") or
                                       os.environ.get("QT_QPA_PLATFORM") == "offscreen")
        if gui and (self.vmc is not None or self.record is not None or self.virtualcam or self.synced_mic):
            raise ValueError("--vmc, --record, --virtualcam and --synced-mic are for --no-gui; in the window use its "
                             "VTuber (VMC), Record, Virtual webcam and Synced mic controls (add --no-gui to run them "
                             "from the command line).")
        if gui:
            from app.main import run_app

            return run_app(self.audio, self.portrait, self.settings_file, self.common.avatar_cache(),
                           autostart=self.audio is not None, screenshot=self.screenshot, seconds=self.seconds)
        if not self.no_gui:
            log.info("No display: running headless (--no-gui)")
        return self._headless()

    def _headless(self) -> int:
        from engine.audio.mic import MicSource
        from engine.audio.sources import FileSource
        from engine.runtime.live import LIVE_PIECE, AvatarEngine, run_headless
        from engine.sinks.base import Sink
        from engine.sinks.recorder import RecorderSink, check_output
        from engine.sinks.virtualcam import VirtualCamSink

        _check_size(self.render.size)
        if self.audio is not None and self.mic is not None:
            raise ValueError("Give --mic or --audio, not both.")
        if self.record is not None:  # before any model loads: a bad path is said at once, and nothing runs
            check_output(self.record, (self.audio, self.portrait), self.overwrite)
        source = (FileSource(self.audio, LIVE_PIECE, realtime=True) if self.audio is not None
                  else MicSource(self.mic, LIVE_PIECE))
        sinks: list[Sink] = []
        camera = None
        if self.virtualcam:
            camera = VirtualCamSink(backend=self.camera_backend, device=self.camera_device)
            sinks.append(camera)
        if self.synced_mic:
            from engine.sinks.syncmic import AvDelaySink, PortAudioMicOutput, SyncedMicSink

            output = PortAudioMicOutput(self.synced_mic_device) if self.synced_mic_device else None
            av_sink: AvDelaySink = SyncedMicSink(output, extra_ms=self.video_delay_ms)
        else:
            from engine.sinks.syncmic import AvDelaySink

            av_sink = AvDelaySink(self.video_delay_ms)
        if camera is not None:
            av_sink.follow(camera)
        sinks.append(av_sink)
        if self.vmc is not None:
            from engine.sinks.vmc import VmcSink

            sinks.append(VmcSink(self.vmc))
        recorder = None
        if self.record is not None:
            recorder = RecorderSink(self.record, on_error=lambda exc: log.error("%s", exc))
            sinks.append(recorder)
        engine = AvatarEngine(self.render, self.session, None, self.style, self.common.avatar_cache(), self.skin_check)
        run_headless(engine, source, self.portrait or paths.default_portrait(), sinks, self.seconds)
        for s in sinks:  # another output that failed (the virtual camera went away) ends with its error
            if s is not recorder:
                error = getattr(s, "error", None)
                if error is not None:
                    raise error
        if recorder is not None and recorder.error is not None:  # said when it happened; the outcome here
            log.error("The recording %s stopped early: it plays its first %.1f s.", self.record,
                      recorder.frames_written / recorder.fps)
            return 1
        return 0


@dataclass
class Export:
    """Export the live networks to ONNX: the student's chunk step (KV cache as explicit inputs/outputs,
    dynamic batch) and the refiner; with --tensorrt also build their FP16 TensorRT engines (NVIDIA GPU)."""

    out: Path = Path("export")
    student: Path | None = None
    """Student model folder (default: the shipped one)."""
    steps: int = 1
    """Denoising steps baked into the student's graph (1, 2 or 4)."""
    tensorrt: bool = False
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.backends.export import export_refiner, export_student_step
        from engine.models.loading import load_refiner, load_student

        if self.steps not in (1, 2, 4):
            raise ValueError(f"--steps is 1, 2 or 4, got {self.steps}")
        files = [export_student_step(load_student(self.student or paths.student_dir()), self.out / "student_step.onnx",
                                     self.steps),
                 export_refiner(load_refiner(paths.refiner_dir()), self.out / "refiner.onnx")]
        if self.tensorrt:
            from engine.backends.tensorrt import build_engine

            files += [build_engine(f, self.out / "tensorrt") for f in files]
        for f in files:
            log.info("Wrote %s (%.1f MB)", f, f.stat().st_size / 1e6)
        return 0


@dataclass
class Mics:
    """List the microphones (input devices) by name, the default first."""

    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.audio.mic import list_microphones

        mics = list_microphones()
        for m in mics:
            sys.stdout.write(f"{m}\n")
        if not mics:
            log.warning("No microphone found. Plug one in (or enable it in the system's sound settings); "
                        "`talkcam live --audio FILE` plays a file as the microphone.")
            return 1
        return 0


@dataclass
class Drift:
    """Long-run stability: stream N seconds of real recordings (cycled) through the student live path,
    with and without tail forcing; report drift slopes, mouth stuck shares and head-pose wander."""

    audio_dir: Path
    """Folder of recordings to cycle (e.g. ../shared/data/real)."""
    seconds: Annotated[float, Range(0, None, above=True)] = 1000.0
    out: Path = Path("drift")
    student: Path | None = None
    """Student model folder (default: the shipped one)."""
    variants: tuple[str, ...] = ("tail", "no-tail")
    session: Annotated[SessionConfig, Flat] = field(default_factory=SessionConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.eval.drift import drift

        for v in self.variants:
            if v not in ("tail", "no-tail"):
                raise ValueError(f"--variants takes tail and/or no-tail, got {v!r}")
        drift(self.audio_dir, self.seconds, self.out, self.session, self.student, tuple(self.variants))
        log.info("Drift: %s\n%s", self.out / "drift.md", (self.out / "drift.md").read_text())
        return 0


@dataclass
class Prepare:
    """Check a portrait: find the face, fit its landmarks, cache it; report what was found."""

    portrait: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PORTRAIT")]
    skin_check: bool = True
    """Refuse faces without skin tones (robots, statues); --no-skin-check accepts them."""
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.face import load_portrait

        avatar = load_portrait(self.portrait, cache_dir=self.common.avatar_cache(),
                                require_skin=self.skin_check)
        h, w = avatar.image.shape[:2]
        log.info("%s: face found (%d faces in the image), %dx%d, interocular %.0f px%s%s", self.portrait,
                 avatar.n_faces, w, h, avatar.interocular, " [cached]" if avatar.from_cache else "",
                 "".join(f"; {m}" for m in avatar.warnings))
        return 0


@dataclass
class Voices:
    """List espeak-ng's voices (use the name or language code with --voice)."""

    language: str = ""
    """Only voices whose language code starts with this."""
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.data.tts import EspeakTTS

        voices = [v for v in EspeakTTS().voices() if not self.language or
                  any(lang.startswith(self.language) for lang in v.languages)]
        for v in voices:
            sys.stdout.write(f"{(v.languages[0] if v.languages else '-'):10s} {v.name:30s} {v.identifier}\n")
        return 0


@dataclass
class Bench:
    """Measure speed; prints one JSON line.

    --stage pipeline (default): the live path as it runs (student stage || renderer + refiner stage, on
    threads): fps and real-time factor at full speed, per-frame latency paced like a microphone (p50/p95),
    per-stage ms, memory growth, and side by side in the same process the baselines (a bidirectional
    chunked sampler with full CFG, and the teacher offline); --long-run-seconds 1000 adds a long run with
    memory sampled every 50 s. serial: session + renderer + refiner per chunk, one after the other.
    renderer: the renderer (+ refiner unless --no-refiner); refiner: the refiner alone per backend;
    student: the streaming student session alone. call: the avatar live between virtual devices (a private
    PulseAudio server): speech bursts into a virtual microphone, the virtual camera and the synced microphone
    read back, A/V offset from onsets on both sides and mic-to-frame latency."""

    stage: Literal["pipeline", "call", "serial", "renderer", "refiner", "student"] = "pipeline"
    portrait: Path | None = None
    frames: Annotated[int, Range(1, None)] = 250
    student: Path | None = None
    """Student model folder (default: the shipped one; stages student and serial)."""
    latency_seconds: Annotated[float, Range(0, None)] = 10.0
    """Seconds of microphone-paced audio for the latency figures (pipeline; 0 skips)."""
    baselines: bool = True
    """Run the baselines side by side (pipeline)."""
    long_run_seconds: Annotated[float, Range(0, None)] = 0.0
    """Also run this many seconds of audio at full speed and report memory over time (pipeline)."""
    json: bool = True
    """Print JSON (the only output format)."""
    session: Annotated[SessionConfig, Flat] = field(default_factory=SessionConfig)
    render: Annotated[RendererConfig, Flat] = field(default_factory=RendererConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.eval.bench import bench_pipeline, bench_refiner, bench_renderer, bench_stream, environment

        _check_size(self.render.size)
        portrait = self.portrait or paths.default_portrait()
        if self.stage == "pipeline":
            out = bench_pipeline(portrait, self.render, self.session, self.frames, self.latency_seconds,
                                 self.baselines, self.long_run_seconds, self.common.avatar_cache())
        elif self.stage == "renderer":
            r = bench_renderer(portrait, self.render, frames=self.frames, cache_dir=self.common.avatar_cache())
            out = {"stage": "renderer", **dataclasses.asdict(r), **environment()}
        elif self.stage == "refiner":
            out = {"stage": "refiner", **bench_refiner(portrait, self.render, frames=self.frames,
                                                        cache_dir=self.common.avatar_cache()), **environment()}
        elif self.stage == "call":
            from engine.eval.callbench import bench_call

            out = {**bench_call(portrait, self.render, self.session, cache_dir=self.common.avatar_cache()),
                   **environment()}
        elif self.stage in ("student", "serial"):
            sb = bench_stream(portrait, self.render if self.stage == "serial" else None, self.session,
                              self.student, frames=self.frames, cache_dir=self.common.avatar_cache())
            out = {"stage": self.stage, **dataclasses.asdict(sb), **environment()}
        else:
            raise ValueError(f"--stage is pipeline, call, serial, renderer, refiner or student, got {self.stage!r}")
        sys.stdout.write(json.dumps(out) + "\n")
        return 0


@dataclass
class DataBuild:
    """Build (or resume) a sharded training corpus from TTS: speech, singing, pose and hard scenarios."""

    out: Path
    """Corpus folder (created; an interrupted build resumes when run again with the same settings)."""
    build: Annotated[BuildConfig, Flat] = field(default_factory=BuildConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from engine.data.build import build

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn()) as progress:
            summary = build(self.out, self.build, progress)
        log.info("Corpus %s: %d clips, %.2f h, %d voices; %s", self.out, summary["clips"], summary["hours"],
                 summary["voices"], ", ".join(f"{k} {v['seconds'] / 60:.1f} min"
                                              for k, v in summary["scenarios"].items()))
        return 0


@dataclass
class DataIngest:
    """Turn a real talking video into a corpus shard: motion fitted from its face landmarks per frame, audio features."""

    video: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="VIDEO")]
    out: Path
    """Corpus folder to add the clip to (created if needed; the manifest is rewritten)."""
    audio: Path | None = None
    """Sound track, when the video has none of its own (any audio file)."""
    max_seconds: float | None = None
    """Only the first seconds of the video."""
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.data.ingest import ingest

        info = ingest(self.video, self.out, audio=self.audio, max_seconds=self.max_seconds)
        log.info("Added %s to %s: %d frames, face found on %.0f%%", info["id"], self.out, info["frames"],
                 100 * info["source"]["face_found"])
        return 0


@dataclass
class DataReal:
    """Ingest the real talking people of ../shared/data/real (talking/, talking_lowres/; talking_manifest.csv)
    with their own audio: motion fitted per frame, audio/mouth offset measured and corrected (or the clip
    rejected), whole speakers held out. Writes OUT/train, OUT/heldout and OUT/report.md."""

    out: Path
    real: Path = Path("../shared/data/real")
    """The real-media folder (with talking_manifest.csv)."""
    only: tuple[str, ...] = ()
    """Only clips whose file name contains one of these."""
    train_corpus: Path | None = None
    """Where the training speakers go (default OUT/train): e.g. the TTS corpus, to train on the mix."""
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.data.real import ingest_real

        report = ingest_real(self.real, self.out, only=self.only, train_corpus=self.train_corpus)
        kept = [c for c in report["clips"] if not c["decision"].startswith("rejected")]
        log.info("%d clips ingested (%d rejected); natural lag %+d frames; report: %s", len(kept),
                 len(report["clips"]) - len(kept), report["natural_lag"], self.out / "report.md")
        return 0


@dataclass
class DataFeatures:
    """Add the speech-encoder features (Whisper tiny.en, windowed as the live session computes them) to
    every clip of a corpus, so speech-feature models train without recomputing them."""

    corpus: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CORPUS")]
    window: int = 30
    """Video frames of audio per encoder window (must match the model's feature_window)."""
    chunk: int = 3
    lookahead: int = 2
    threads: int = 2
    recompute: bool = False
    """Recompute clips that already have features (e.g. after changing the window)."""
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from engine.audio.speech import SpeechFeatureConfig
        from engine.data.corpus import add_speech_features

        cfg = SpeechFeatureConfig(chunk=self.chunk, lookahead=self.lookahead, window=self.window, threads=self.threads)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn()) as progress:
            n = add_speech_features(self.corpus, cfg, progress, self.recompute)
        log.info("Speech features computed for %d clips of %s", n, self.corpus)
        return 0


@dataclass
class Eval:
    """Render a portrait speaking, re-measure the rendered frames, write a report (JSON, Markdown, plots).

    One clip: --audio FILE (any audio, or a video with sound) or --text TEXT (espeak-ng; phoneme ground
    truth), optionally --reference-video of the real speaker. A corpus: --corpus DIR (held-out clips).
    Also `talkcam eval realism` (does an open mouth look real?) and `talkcam eval latency` (the latency
    settings against lip sync).
    """

    portrait: Path | None = None
    """Portrait image. Default: the bundled portrait."""
    audio: Path | None = None
    text: str = ""
    """Speak this with espeak-ng instead of --audio (lip sync is then scored against the phonemes)."""
    reference_video: Path | None = None
    """The real speaker's video for --audio: lip sync is scored against their mouth curve."""
    corpus: Path | None = None
    """Evaluate on the clips of this corpus (see `talkcam data build --split heldout`)."""
    scenarios: tuple[str, ...] = ("speech", "singing", "hard")
    clips: int = 8
    """Clips per scenario with --corpus."""
    source: str = "procedural"
    """Motion source: procedural, model (a trained teacher: --model FOLDER), reference (fitted from
    --reference-video), corpus (stored motion)."""
    realsync: Path | None = None
    """Real-voice lip sync on held-out real speakers: the held-out corpus of `talkcam data real` (OUT/heldout).
    Compares --sources side by side on every clip, plus white noise (engine/eval/realsync.py)."""
    sources: tuple[str, ...] = ("loudness", "student=assets/models/student")
    """With --realsync: NAME=MODEL_FOLDER (a student; add :novad to turn its voice-activity gate off) or
    "loudness" (the loudness-follower baseline)."""
    real: Path = Path("../shared/data/real")
    """With --realsync: the real-media folder the held-out clips came from (their videos)."""
    out: Path = Path("report")
    eval: Annotated[EvalConfig, Flat] = field(default_factory=EvalConfig)
    tts: Annotated[TTSConfig, Flat] = field(default_factory=TTSConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.eval.evaluate import evaluate, evaluate_corpus

        _check_size(self.eval.size)
        portrait = self.portrait or paths.default_portrait()
        if self.realsync is not None:
            from engine.eval.realsync import realsync

            sources: dict[str, str] = {}
            for s in self.sources:
                name, sep, value = s.partition("=")
                sources[name] = value if sep else s
            res = realsync(self.realsync, self.real, portrait, self.out, sources, self.eval,
                           max_seconds=self.eval.max_seconds or 20.0, cache_dir=self.common.avatar_cache())
            log.info("Report: %s\n%s", self.out / "realsync.md", res["table"])
            return 0
        if self.corpus is not None:
            summary = evaluate_corpus(self.corpus, portrait, self.out, tuple(self.scenarios), self.clips, self.source,
                                      self.eval, self.common.avatar_cache())
            log.info("Report: %s\n%s", self.out / "corpus_report.md", (self.out / "corpus_report.md").read_text())
            return 0 if summary["scenarios"] else 2
        phonemes = None
        audio = self.audio
        if self.text:
            if audio is not None:
                raise ValueError("Give --audio or --text, not both.")
            from engine.audio.io import SAMPLE_RATE, resample
            from engine.data.tts import EspeakTTS
            from engine.sinks.wav import write_wav

            utt = EspeakTTS(self.tts).synthesize(self.text)
            audio = self.out / "speech.wav"
            self.out.mkdir(parents=True, exist_ok=True)
            write_wav(audio, resample(utt.audio, utt.sample_rate, SAMPLE_RATE), SAMPLE_RATE)
            phonemes = utt.phonemes
        if audio is None:
            raise ValueError("Give --audio FILE, --text TEXT or --corpus DIR.")
        evaluate(portrait, audio, self.out, self.reference_video, self.source, self.eval,
                 self.common.avatar_cache(), phonemes=phonemes)
        log.info("Report: %s\n%s", self.out / "report.md", (self.out / "report.md").read_text())
        return 0


@dataclass
class TrainTeacher:
    """Train the generalist teacher, or fine-tune a specialist from it (--scenarios X --init GENERALIST).

    Resumes from OUT/checkpoint when interrupted; multi-GPU with `torchrun --nproc-per-node N -m engine.cli
    train teacher ...`.
    """

    train: Annotated[TeacherTrainConfig, Flat]
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.train.teachers import train

        train(self.train)
        return 0


@dataclass
class GuidanceSweep:
    """Measure the effect of audio guidance: lip sync, closure and jitter for each guidance scale x step
    count on held-out clips (rendered and re-measured), written as JSON and a Markdown table."""

    corpus: Path
    """Held-out corpus."""
    out: Path = Path("guidance")
    scales: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
    """Audio guidance scales."""
    step_counts: tuple[int, ...] = (1, 2, 4, 8)
    """Denoising step counts."""
    scenarios: tuple[str, ...] = ("speech", "hard")
    clips: int = 4
    portrait: Path | None = None
    eval: Annotated[EvalConfig, Flat] = field(default_factory=lambda: EvalConfig(size=(256, 256)))
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.eval.guidance import sweep

        if self.eval.model is None:
            raise ValueError("Give the teacher to measure: --model FOLDER (e.g. assets/models/teachers/generalist)")
        res = sweep(self.eval.model, self.corpus, self.portrait or paths.default_portrait(), self.out, self.scales,
                    self.step_counts, self.scenarios, self.clips, self.eval, self.common.avatar_cache())
        log.info("Guidance sweep: %s\n%s", self.out / "guidance.md", res["table"])
        return 0


@dataclass
class Compare:
    """Results table: the procedural baselines and trained teachers side by side on a held-out corpus
    (per scenario) and on real recordings (../shared/data/real: sun clip against the real speaker)."""

    models: tuple[str, ...] = ()
    """NAME=MODEL_FOLDER for each teacher or student; NAME=FOLDER@STEPS sets its denoising steps."""
    baselines: tuple[str, ...] = ("procedural", "procedural-audio")
    """Procedural sources to include: procedural (with the corpus's phonemes: the teachers' training
    target), procedural-audio (audio only: the baseline for audio-driven models)."""
    corpus: Path | None = None
    """Held-out corpus (`talkcam data build --split heldout`)."""
    real: Path | None = None
    """Folder of real recordings (e.g. ../shared/data/real)."""
    scenarios: tuple[str, ...] = ("speech", "singing", "pose", "hard")
    clips: int = 4
    portrait: Path | None = None
    out: Path = Path("compare")
    include: tuple[Path, ...] = ()
    """compare.json files of earlier runs (same settings) to show in the same table."""
    eval: Annotated[EvalConfig, Flat] = field(default_factory=EvalConfig)
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.eval.compare import PROCEDURAL, compare

        sources: dict[str, str | Path | tuple[Path, int]] = {}
        for b in self.baselines:
            if b not in PROCEDURAL:
                raise ValueError(f"--baselines takes procedural and/or procedural-audio, got {b!r}")
            sources[b] = b
        for item in self.models:
            name, sep, folder = item.partition("=")
            folder, at, steps = folder.partition("@")
            if not sep or not name or not folder or (at and not steps.isdigit()):
                raise ValueError(f"--models takes NAME=MODEL_FOLDER or NAME=MODEL_FOLDER@STEPS, got {item!r}")
            sources[name] = (Path(folder), int(steps)) if at else Path(folder)
        res = compare(sources, self.corpus, self.portrait or paths.default_portrait(), self.out,
                      tuple(self.scenarios), self.clips, self.real, self.eval, self.common.avatar_cache(),
                      tuple(self.include))
        log.info("Results: %s\n%s", self.out / "compare.md", res["table"])
        return 0


@dataclass
class TrainCalibrate:
    """Adaptive CFG calibration: measure per denoising step and motion group (mouth/eyes/head) how audio
    guidance changes the teacher and its lip sync; write the schedule the student is distilled with."""

    calibrate: Annotated[CalibrateConfig, Flat]
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.train.calibrate import calibrate

        res = calibrate(self.calibrate)
        log.info("Calibration: %s\n%s", Path(self.calibrate.out) / "calibration.md",
                 (Path(self.calibrate.out) / "calibration.md").read_text())
        return 0 if res["chosen"] else 2


@dataclass
class TrainStudent:
    """Distil the causal student from the teachers: --stage ode (regression onto teacher trajectories,
    multi-teacher routing), then --stage dmd --init RUN/model (distribution matching on self-rollouts,
    critic, tail forcing). Resumes from OUT/checkpoint; multi-GPU with torchrun."""

    distill: Annotated[DistillConfig, Flat]
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.train.distill import train

        train(self.distill)
        return 0


@dataclass
class DataRefiner:
    """Training pairs for the decoder refiner from real talking videos: frame i of a clip warped to frame j's
    fitted motion (the input) and the real frame j (the target); held-out time ranges kept apart."""

    data: Annotated[RefinerDataConfig, Flat]
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.train.refiner_data import build_pairs

        info = build_pairs(self.data)
        log.info("Pairs: %s", info["pairs"])
        return 0


@dataclass
class TrainRefiner:
    """Train the decoder refiner (mouth interior, teeth, warp seams, sharpness) on pairs from
    `talkcam data refiner`. Resumes from OUT/checkpoint."""

    train: Annotated[RefinerTrainConfig, Flat]
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.train.refiner import train

        train(self.train)
        return 0


@dataclass
class RefinerEval:
    """Measure the refiner with and without it: held-out pairs (PSNR/SSIM), a held-out real video range
    (PSNR/SSIM, sharpness, identity, flicker) and portraits driven by real speech."""

    eval: Annotated[RefinerEvalConfig, Flat]
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.train.refiner_eval import evaluate_refiner

        evaluate_refiner(self.eval)
        log.info("Report: %s\n%s", self.eval.out / "refiner_eval.md", (self.eval.out / "refiner_eval.md").read_text())
        return 0


@dataclass
class _Group:
    """A group of commands (run `talkcam GROUP --help`)."""

    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        log.error("Give a command: %s", "; ".join(f"talkcam {g} {{{','.join(c)}}}" for g, (c, _) in GROUPS.items()))
        return 2


@contextmanager
def _progress(what: str) -> Iterator[Callable[[float, float], None]]:
    """A progress bar on stderr (seconds of video done, elapsed, time left) fed by `progress(done, total)`."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{what}"), BarColumn(), TextColumn("{task.fields[done]}"), TimeElapsedColumn(),
                   TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task(what, total=None, done="")
    shown = False

    def update(done: float, total: float) -> None:
        nonlocal shown
        if not shown:  # the bar (and its clock) appears with the first frame, after the models have loaded
            bar.reset(task)
            bar.start()
            shown = True
        bar.update(task, completed=done, total=total or None,
                   done=f"{done:.1f}/{total:.1f} s of video" if total else f"{done:.1f} s of video")

    try:
        yield update
    finally:
        if shown:
            bar.stop()


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if not (64 <= w <= 1920 and 64 <= h <= 1080):
        raise ValueError(f"--size {w} {h} is out of range: width 64-1920, height 64-1080.")


@dataclass
class EvalRealism:
    """Does an open mouth look real? Renders held-out portraits speaking held-out real speech (with and without
    the refiner), re-measures every frame with the face mesh, and scores them against held-out real speakers:
    a realism judge (leave-one-source-out accuracy, 50% = indistinguishable), inner-mouth colour and detail,
    teeth share, skin detail around the mouth, flicker and identity (engine/eval/realism.py)."""

    out: Path = Path("report/realism")
    shared: Path = Path("../shared/data")
    """The shared media folder (portraits/, real/)."""
    portraits: tuple[str, ...] = ("happy.png", "sad.png", "gray:happy.png", "art_8.png", "monalisa.png", "art_1.png",
                                  "lp_s42.jpg")
    """Portraits (paths, or names in SHARED/portraits); gray:NAME uses a black-and-white copy."""
    photos: tuple[str, ...] = ("happy", "sad", "happy_gray", "lp_s42")
    """Which portraits (by stem) are photographs, for the photo-only detail figure."""
    compare: tuple[str, ...] = ()
    """NAME=DIR: renders made by another version (PORTRAIT__CLIP.mp4 files, same portraits and audio)."""
    render: bool = True
    """Render the working code's variants (with and without the refiner) into OUT/renders."""
    max_seconds: float = 8.0
    """Seconds of each held-out clip's speech that the portraits speak."""
    judge_steps: Annotated[int, Range(10, 5000)] = 300
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.data.real import HELDOUT
        from engine.eval.realism import realism

        real = [self.shared / "real" / h for h in HELDOUT]
        missing = [p for p in real if not p.exists()]
        if missing:
            raise FileNotFoundError(f"Held-out real clips not found: {', '.join(map(str, missing))} (--shared)")
        audio = [p for p in real if "noisy" not in p.stem and "dfdc" not in p.stem]
        portraits = [_realism_portrait(p, self.shared / "portraits", self.out / "portraits") for p in self.portraits]
        compare = dict(c.split("=", 1) for c in self.compare)
        res = realism(real, portraits, audio, self.out, {k: Path(v) for k, v in compare.items()}, self.render,
                      self.max_seconds, judge_steps=self.judge_steps, photos=self.photos)
        log.info("Report: %s\n%s", self.out / "realism.md", res["table"])
        return 0


@dataclass
class EvalLatency:
    """The latency trade-off: for each session chunk (1-3 frames) x audio lookahead (0-2 frames), the live
    mic-to-frame latency (p50/p95, paced audio through the threaded pipeline) and the lip-sync correlation
    with held-out real speakers (engine/eval/latency.py). Writes OUT/latency.md and OUT/latency.json."""

    out: Path = Path("report/latency")
    heldout: Path | None = None
    """The held-out real corpus made by `talkcam data real` (its heldout/ folder); without it, latency only."""
    real: Path = Path("../shared/data/real")
    """The real-media folder the held-out corpus came from."""
    lipsync_portrait: Path | None = None
    """Portrait for the lip-sync renders (default: --portrait)."""
    portrait: Path | None = None
    """Portrait for the latency runs (default: the bundled one)."""
    seconds: Annotated[float, Range(0, None)] = 12.0
    """Seconds of paced audio per latency measurement (0: lip sync only)."""
    rounds: Annotated[int, Range(1, 20)] = 3
    """Latency measurements per setting (the median is reported)."""
    max_seconds: Annotated[float, Range(1, None)] = 20.0
    """Seconds of each held-out clip used for lip sync."""
    common: Annotated[Common, Flat] = field(default_factory=Common)

    def run(self) -> int:
        from engine.eval.latency import run

        run(self.out, self.seconds, self.rounds, self.heldout, self.real, self.portrait, self.lipsync_portrait,
            self.max_seconds, cache_dir=self.common.avatar_cache())
        return 0


def _realism_portrait(spec: str, root: Path, work: Path) -> Path:
    """A portrait path from NAME, PATH or gray:NAME (a black-and-white copy written under `work`)."""
    name = spec[5:] if spec.startswith("gray:") else spec
    path = Path(name) if Path(name).exists() else root / name
    if not path.exists():
        raise FileNotFoundError(f"Portrait {spec} not found (looked for {path})")
    if not spec.startswith("gray:"):
        return path
    import cv2

    work.mkdir(parents=True, exist_ok=True)
    dest = work / f"{path.stem}_gray.png"
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path} cannot be read as an image")
    cv2.imwrite(str(dest), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return dest


class _Command(Protocol):
    """What every command is: its options, with the shared ones in `common`, and `run`."""

    common: Common

    def run(self) -> int: ...


COMMANDS: dict[str, Callable[..., _Command]] = {
    "live": Live, "mics": Mics, "export": Export, "say": Say, "render": Render, "drift": Drift,
    "prepare": Prepare, "voices": Voices, "bench": Bench, "eval": Eval}
GROUPS: dict[str, tuple[dict[str, Callable[..., _Command]], str]] = {
    "data": ({"build": DataBuild, "ingest": DataIngest, "real": DataReal, "features": DataFeatures,
              "refiner": DataRefiner},
             "Training data: build a TTS corpus, ingest real talking videos, make refiner pairs."),
    "train": ({"teacher": TrainTeacher, "guidance": GuidanceSweep, "calibrate": TrainCalibrate,
               "student": TrainStudent, "compare": Compare, "refiner": TrainRefiner,
               "refiner-eval": RefinerEval},
              "Training: teachers (generalist and specialists), guidance sweep and calibration, the "
              "student (distillation), results table, the decoder refiner and its evaluation.")}


def _unknown_command(argv: list[str]) -> str | None:
    """A message for a misspelled (sub)command, naming the closest ones; None when the command exists."""
    import difflib

    if not argv or argv[0].startswith("-"):
        return None
    if argv[0] in GROUPS:
        names = list(GROUPS[argv[0]][0])
        word, prefix = (argv[1] if len(argv) > 1 else None), f"talkcam {argv[0]} "
        if word is None or word.startswith("-"):
            return None
    else:
        names = [*COMMANDS, *GROUPS]
        word, prefix = argv[0], "talkcam "
    if word in names:
        return None
    close = difflib.get_close_matches(word, list(names), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(prefix + c for c in close)}?" if close else ""
    return f"Unknown command {prefix}{word}.{hint} Commands: {', '.join(names)}."


TYRO = (tyro.conf.EnumChoicesFromValues,)
"""Enums on the command line by their values (`--latency low`)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    unknown = _unknown_command(argv)
    if unknown is not None:
        setup_logging("INFO", None)
        log.error("%s", unknown)
        return 2
    cmd: _Command
    if argv[:2] == ["eval", "realism"]:
        cmd = tyro.cli(EvalRealism, args=argv[2:], prog="talkcam eval realism", config=TYRO)
    elif argv[:2] == ["eval", "latency"]:
        cmd = tyro.cli(EvalLatency, args=argv[2:], prog="talkcam eval latency", config=TYRO)
    elif argv and argv[0] in GROUPS:
        commands, text = GROUPS[argv[0]]
        cmd = tyro.extras.subcommand_cli_from_dict(commands, args=argv[1:], prog=f"talkcam {argv[0]}",
                                                   description=text, config=TYRO)
    else:
        cmd = tyro.extras.subcommand_cli_from_dict(
            {**COMMANDS, **{g: _Group for g in GROUPS}}, args=argv, prog="talkcam",
            description="talkcam: a live talking avatar from one portrait.", config=TYRO)
    setup_logging(cmd.common.log_level, paths.log_dir())
    try:
        validate(cmd)  # numeric ranges, before any work starts
        return cmd.run()
    except (PortraitError, TTSError, RecorderError, ValueError, FileNotFoundError, MicError, VirtualCamError,
            VmcError) as exc:
        log.error("%s", exc)
        log.debug("details", exc_info=True)
        return 2
    except Interrupted as exc:  # the file was closed cleanly where the job stopped
        log.warning("%s", exc)
        return 130
    except KeyboardInterrupt:
        log.warning("Interrupted (Ctrl-C).")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
