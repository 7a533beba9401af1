"""View-models: the app's logic between the engine and the widgets, testable without any widget.

The engine runs in a worker thread (`SessionViewModel._worker`, one thread: loading models, preparing
portraits, starting and stopping the pipeline); the pipeline's own threads do the streaming. Results
come back as Qt signals (queued to the GUI thread). The GUI thread only draws: it polls the newest frame
(`latest_frame`) on a timer, so a slow paint never slows the engine (latest frame wins).
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from app.settings import Settings, user_portraits_dir
from engine import paths
from engine.sinks.base import Sink, SinkBase

if TYPE_CHECKING:  # the engine's modules load with the first start (a quick window)
    from engine.audio.mic import MicSource
    from engine.audio.sources import AudioSource
    from engine.render.avatar import Avatar
    from engine.runtime.live import AvatarEngine
    from engine.runtime.pipeline import Pipeline
    from engine.sinks.bus import FrameBus
    from engine.sinks.recorder import RecorderSink
    from engine.sinks.syncmic import AvDelaySink, SyncedMicSink
    from engine.sinks.virtualcam import VirtualCamSink
    from engine.sinks.vmc import VmcSink

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

EXPRESSIONS: dict[str, list[tuple[float, dict[str, float | None]]]] = {
    # name: [(seconds from now, {control: value or None to release})]: applied at the next frame
    "smile": [(0.0, {"smile": 0.8}), (2.0, {"smile": None})],
    "blink": [(0.0, {"blink": 1.0}), (0.25, {"blink": None})],
    "look left": [(0.0, {"gazeX": -0.7, "yaw": -0.2}), (1.5, {"gazeX": None, "yaw": None})],
    "look right": [(0.0, {"gazeX": 0.7, "yaw": 0.2}), (1.5, {"gazeX": None, "yaw": None})],
    "nod": [(0.0, {"pitch": 0.2}), (0.35, {"pitch": -0.1}), (0.7, {"pitch": None})],
    "neutral": [(0.0, {"smile": None, "blink": None, "gazeX": None, "gazeY": None, "yaw": None, "pitch": None,
                       "roll": None})],
}
LABELS = {"smile": "Smile", "blink": "Blink", "look left": "← Look", "look right": "Look →", "nod": "Nod",
          "neutral": "Neutral"}
LOADING = ("Loading the avatar models… (the first start on a computer also prepares them for it once, which can "
           "take a minute)")
"""The status-bar note while `loading` is on."""


class SessionState(str, Enum):
    """Where the live session is (`SessionViewModel.stateChanged`)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"

SHORTCUTS = {"smile": "S", "blink": "B", "look left": "Left", "look right": "Right", "nod": "N", "neutral": "0"}


@dataclass
class PortraitItem:
    path: Path
    bundled: bool
    status: str = "checking"  # checking, ok, bad
    reason: str = ""


class GalleryModel(QObject):
    """Bundled portraits + the user's own folder; each checked for a usable face in the background."""

    changed = Signal()

    def __init__(self, user_dir: Path | None = None, bundled_dir: Path | None = None,
                 cache_dir: Path | None = None) -> None:
        super().__init__()
        self.user_dir = Path(user_dir or user_portraits_dir())
        self.bundled_dir = Path(bundled_dir or paths.assets_dir() / "portraits")
        self.cache_dir = cache_dir
        self.items: list[PortraitItem] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="talkcam-gallery")
        self.refresh()

    def refresh(self) -> None:
        found = [PortraitItem(p, True) for p in sorted(self.bundled_dir.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if self.user_dir.is_dir():
            found += [PortraitItem(p, False) for p in sorted(self.user_dir.glob("*"))
                      if p.suffix.lower() in IMAGE_SUFFIXES]
        known = {i.path: i for i in self.items}
        self.items = [known.get(i.path, i) for i in found]
        for item in self.items:
            if item.status == "checking":
                self._pool.submit(self._check, item)
        self.changed.emit()

    def _check(self, item: PortraitItem) -> None:
        from engine.face import load_portrait

        try:
            avatar = load_portrait(item.path, cache_dir=self.cache_dir)
            item.status, item.reason = "ok", "; ".join(avatar.warnings)
        except Exception as exc:  # every failure is shown on the thumbnail with its reason
            item.status, item.reason = "bad", str(exc)
        self.changed.emit()

    def add(self, source: Path) -> PortraitItem:
        """Copy an image into the user's folder (a unique name) and check it."""
        source = Path(source)
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{source.name} is not an image talkcam reads ({', '.join(IMAGE_SUFFIXES)}).")
        self.user_dir.mkdir(parents=True, exist_ok=True)
        dest = self.user_dir / source.name
        n = 1
        while dest.exists():
            dest = self.user_dir / f"{source.stem}-{n}{source.suffix}"
            n += 1
        shutil.copy2(source, dest)
        self.refresh()
        return next(i for i in self.items if i.path == dest)

    def item(self, path: Path) -> PortraitItem | None:
        return next((i for i in self.items if i.path == Path(path)), None)

    def wait_checked(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        while any(i.status == "checking" for i in self.items) and time.monotonic() - t0 < timeout:
            time.sleep(0.05)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class LevelSink(SinkBase):
    """Microphone level (RMS in dBFS) for the meter, from the audio the pipeline reads."""

    name = "level"

    def __init__(self) -> None:
        self.level_db = -90.0

    def write_audio(self, piece) -> None:
        rms = float(np.sqrt(np.mean(piece.samples.astype(np.float64) ** 2)) + 1e-9)
        fall = 20.0 * len(piece.samples) / 16000  # the needle falls at 20 dB/s and jumps up at once
        self.level_db = max(-90.0, 20 * np.log10(rms), self.level_db - fall)


def _latency(mode: str):
    from engine.runtime.config import Latency

    try:
        return Latency(mode)
    except ValueError:
        log.warning("Unknown latency setting %r: using standard", mode)
        return Latency.STANDARD


class SessionViewModel(QObject):
    """Start/stop, portrait, microphone, mute, virtual camera, recording, controls. Every call returns at
    once; the work happens on the engine thread and reports through the signals."""

    stateChanged = Signal(str)  # a SessionState
    loading = Signal(bool)  # the models are being loaded (the first start can take a minute)
    error = Signal(str)
    message = Signal(str)  # for the status bar (microphone lost/back, recording saved, ...)
    recordingChanged = Signal(bool, str)
    virtualcamChanged = Signal(bool)
    vmcChanged = Signal(bool)
    syncedMicChanged = Signal(bool)
    portraitChanged = Signal(str)

    def __init__(self, settings: Settings, cache_dir: Path | None = None, source_factory=None) -> None:
        super().__init__()
        self.settings = settings
        self.cache_dir = cache_dir
        self.source_factory = source_factory  # tests: a file played as the microphone
        self.state = SessionState.STOPPED
        self.engine: AvatarEngine | None = None
        self.pipeline: Pipeline | None = None
        self.avatar: Avatar | None = None
        """The avatar on screen (None until the first start)."""
        # MicSource is listed apart: its record_format is None until opened (AudioSource says AudioFormat)
        self.source: AudioSource | MicSource | None = None
        self.bus: FrameBus | None = None
        self.level = LevelSink()
        self.recorder: RecorderSink | None = None
        self.camera: VirtualCamSink | None = None
        self.vmc: VmcSink | None = None
        self.synced: SyncedMicSink | None = None  # the synced microphone's sink while it is on
        # measures the video's delay behind the voice (the OBS sync offset)
        self.av_delay: AvDelaySink | None = None
        self.record_started = 0.0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="talkcam-engine")

    # -- helpers --------------------------------------------------------------------------------
    def _submit(self, fn, *args):
        def run():
            try:
                fn(*args)
            except Exception as exc:  # shown to the user as one dialog; details in the log
                log.error("%s", exc, exc_info=True)
                self.error.emit(str(exc))
        return self._worker.submit(run)

    def _set_state(self, state: SessionState) -> None:
        self.state = state
        self.stateChanged.emit(state)

    @property
    def running(self) -> bool:
        return self.state == SessionState.RUNNING

    def latest_frame(self):
        return self.bus.latest() if self.bus is not None else None

    def stats(self) -> dict:
        if self.pipeline is None:
            return {}
        s = self.pipeline.stats.summary(last=100)  # the last 4 s: what is happening now
        dev = getattr(self.source, "device", None)
        s["device"] = dev.name if dev is not None else f"{Path(getattr(self.source, 'path', 'audio')).name} (as microphone)"
        s["backend"] = self.engine.step.name if self.engine is not None and self.engine.step is not None else "torch"
        s["mic_state"] = getattr(self.source, "state", "")
        av = self.synced or self.av_delay
        s["av"] = av.status() if av is not None else ""
        return s

    def microphones(self) -> tuple[list[str], str]:
        """The input devices' names (enumerated afresh while stopped, so hot-plugged ones appear) and what went
        wrong, if anything ("" when nothing did)."""
        from engine.audio.mic import MicError, list_microphones, rescan

        try:
            if self.state == SessionState.STOPPED:
                rescan()
            return [m.name for m in list_microphones()], ""
        except MicError as exc:
            return [], str(exc)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Block until the engine thread has done what was asked (tests)."""
        self._worker.submit(lambda: None).result(timeout)

    # -- start / stop ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.state != SessionState.STOPPED:
            return
        self._set_state(SessionState.STARTING)
        self._submit(self._start)

    def _start(self) -> None:
        from engine.audio.mic import MicSource
        from engine.render.renderer import RendererConfig
        from engine.runtime.live import LIVE_PIECE, AvatarEngine
        from engine.sinks.bus import FrameBus

        try:
            size = self.settings.size
            if self.engine is None or self.engine.render_config.size != (size, size):
                self.loading.emit(True)
                try:
                    self.engine = AvatarEngine(RendererConfig(size=(size, size)), cache_dir=self.cache_dir)
                finally:
                    self.loading.emit(False)
            # the slider, the style box and the latency as they are now (they may have changed while stopped)
            self.engine.session_config.guidance = self.settings.guidance
            self.engine.session_config.latency = _latency(self.settings.latency)
            self.engine.style = self.settings.style
            portrait = Path(self.settings.portrait) if self.settings.portrait else paths.default_portrait()
            self.avatar = avatar = self.engine.avatar(portrait)
            self.source = (self.source_factory() if self.source_factory is not None
                           else MicSource(self.settings.mic or None, LIVE_PIECE, on_status=self._mic_status))
            from engine.sinks.syncmic import AvDelaySink

            self.bus = FrameBus()
            self.av_delay = AvDelaySink()
            sinks: list[Sink] = [self.bus, self.level, self.av_delay]
            self.pipeline = self.engine.pipeline_for(self.source, avatar, sinks)
            self.pipeline.muted = self.settings.muted
            self.pipeline.start()
        except Exception:
            self._set_state(SessionState.STOPPED)
            raise
        self._set_state(SessionState.RUNNING)
        self.portraitChanged.emit(str(portrait))
        if self.settings.virtualcam:
            self._set_virtualcam(True)
        if self.settings.vmc:
            self._set_vmc(True)
        if self.settings.synced_mic:
            self._set_synced_mic(True)

    def _mic_status(self, state: str, message: str) -> None:
        self.message.emit(message)

    def stop(self) -> None:
        if self.state != SessionState.RUNNING:
            return
        self._set_state(SessionState.STOPPING)
        self._submit(self._stop)

    def _stop(self) -> None:
        pipe, self.pipeline = self.pipeline, None
        try:
            if self.recorder is not None:
                self._set_recording(False, pipe)
            self.camera = None
            self.vmc = None
            self.synced = None
            self.av_delay = None
            if pipe is not None:
                pipe.stop()
                pipe.join()  # raises a stage's error: reported as the one dialog
        finally:
            self._set_state(SessionState.STOPPED)

    def _check_pipeline(self) -> None:
        """GUI timer: a pipeline that ended by itself (an error in a stage) is stopped and reported."""
        if self.state == SessionState.RUNNING and self.pipeline is not None and not self.pipeline.running:
            self._set_state(SessionState.STOPPING)
            self._submit(self._stop)

    def poll(self) -> None:
        """Called by the window's timer (and tests): notice a pipeline that died."""
        self._check_pipeline()

    # -- live changes ---------------------------------------------------------------------------
    def select_portrait(self, path: Path) -> None:
        self.settings.portrait = str(path)
        if self.running:
            self._submit(self._switch, Path(path))
        else:
            self.portraitChanged.emit(str(path))

    def _live_pipeline(self) -> Pipeline:
        """The running pipeline, for the engine thread's changes to it."""
        if self.pipeline is None:
            raise RuntimeError("The session is not running.")
        return self.pipeline

    def _live_avatar(self) -> Avatar:
        if self.avatar is None or self.pipeline is None:
            raise RuntimeError("The session is not running.")
        return self.avatar

    def _switch(self, path: Path) -> None:
        if self.engine is None:
            raise RuntimeError("The session is not running.")
        self.avatar = self.engine.switch_portrait(path)
        self.portraitChanged.emit(str(path))

    def set_mute(self, muted: bool) -> None:
        self.settings.muted = muted
        if self.pipeline is not None:
            self.pipeline.muted = muted

    def set_guidance(self, scale: float) -> None:
        self.settings.guidance = scale
        if self.pipeline is not None:
            self.pipeline.set_guidance(scale)

    def set_latency(self, mode: str) -> None:
        """Standard or low latency (engine.runtime.config.Latency): the session's chunk and lookahead, so it
        applies at the next start."""
        self.settings.latency = _latency(mode).value
        if self.running:
            self.message.emit("Latency: applies when you press Start again")

    def set_style(self, style: str) -> None:
        style = style.strip() or "speaking"
        self.settings.style = style
        if self.pipeline is not None:
            self.pipeline.set_style(style)

    def expression(self, name: str) -> None:
        """Smile, blink, look left/right, nod, neutral: timed controls applied from the next frame."""
        if name not in EXPRESSIONS:
            raise ValueError(f"unknown expression {name!r}")
        for delay, controls in EXPRESSIONS[name]:
            QTimer.singleShot(int(delay * 1000), lambda c=controls: self._apply_controls(c))

    def _apply_controls(self, controls: dict) -> None:
        if self.pipeline is not None:
            for k, v in controls.items():
                self.pipeline.set_control(k, v)

    # -- virtual camera -------------------------------------------------------------------------
    def set_virtualcam(self, on: bool) -> None:
        self.settings.virtualcam = on
        if self.running:
            self._submit(self._set_virtualcam, on)
        else:
            self.virtualcamChanged.emit(on)

    def _set_virtualcam(self, on: bool) -> None:
        from engine.sinks.virtualcam import VirtualCamSink

        cam = self._toggle_sink(on, "camera", "virtualcam", self.virtualcamChanged, lambda: VirtualCamSink(
            (self.settings.cam_width, self.settings.cam_height), self.settings.cam_fps,
            backend=self.settings.cam_backend, placeholder=self._live_avatar().framed.frame))
        for av in (self.av_delay, self.synced):  # the viewers see the camera's frames: time them there
            if av is not None:
                if cam is not None:
                    av.follow(cam)
                elif self.camera is None:
                    av.follow_camera = False

    # -- synced microphone ----------------------------------------------------------------------
    def set_synced_mic(self, on: bool) -> None:
        """Publish the voice as a virtual microphone delayed to the avatar's frames."""
        self.settings.synced_mic = on
        if self.running:
            self._submit(self._set_synced_mic, on)
        else:
            self.syncedMicChanged.emit(on)

    def _set_synced_mic(self, on: bool) -> None:
        from engine.sinks.syncmic import SyncedMicSink, mic_name_for_apps

        sink = self._toggle_sink(on, "synced", "synced_mic", self.syncedMicChanged, SyncedMicSink)
        if sink is not None:
            if self.camera is not None:
                sink.follow(self.camera)
            self.message.emit(f"Synced microphone on: pick '{mic_name_for_apps()}' as the microphone in the call app")

    def _toggle_sink(self, on: bool, attr: str, setting: str, changed, make):
        """Attach `make()` to the running pipeline as `self.<attr>`, or detach it; an attach that fails turns
        the setting off. `changed` says whether the sink is attached; returns the sink newly attached, if any."""
        current = getattr(self, attr)
        if on and current is None:
            try:
                sink = make()
                self._live_pipeline().add_sink(sink)
            except Exception:
                setattr(self.settings, setting, False)
                changed.emit(False)
                raise
            setattr(self, attr, sink)
            changed.emit(True)
            return sink
        if not on and current is not None:
            try:
                self._live_pipeline().remove_sink(current)  # closed before it is reported detached
            finally:  # detached even when its close failed (the failure still reaches the error dialog)
                setattr(self, attr, None)
        changed.emit(getattr(self, attr) is not None)
        return None

    # -- VTuber output (VMC) --------------------------------------------------------------------
    def set_vmc(self, on: bool, target: str | None = None) -> None:
        """Send the motion to a VTuber app over the VMC protocol (`target` HOST:PORT, remembered)."""
        self.settings.vmc = on
        if target is not None:
            self.settings.vmc_target = target
        if self.running:
            self._submit(self._set_vmc, on)
        else:
            self.vmcChanged.emit(on)

    def _set_vmc(self, on: bool) -> None:
        from engine.sinks.vmc import VmcSink

        sink = self._toggle_sink(on, "vmc", "vmc", self.vmcChanged, lambda: VmcSink(self.settings.vmc_target))
        if sink is not None:
            self.message.emit(f"VMC: sending to {sink.host}:{sink.port}")

    # -- recording ------------------------------------------------------------------------------
    def recording_path(self) -> Path:
        """A new file in the recordings folder, named by the time; never an existing one."""
        stem = f"talkcam-{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}"
        path, n = self.settings.record_dir / f"{stem}.mp4", 2
        while path.exists():
            path, n = self.settings.record_dir / f"{stem}-{n}.mp4", n + 1
        return path

    def set_recording(self, on: bool) -> None:
        if self.running:
            self._submit(self._set_recording, on, self.pipeline)

    def _set_recording(self, on: bool, pipe) -> None:
        from engine.sinks.recorder import RecorderSink

        if on and self.recorder is None:
            rec = RecorderSink(self.recording_path(), on_error=lambda e: self.error.emit(str(e)))
            pipe.add_sink(rec)
            self.recorder, self.record_started = rec, time.monotonic()
            self.recordingChanged.emit(True, str(rec.path))
        elif not on and self.recorder is not None:
            rec = self.recorder
            pipe.remove_sink(rec)  # the file is finished when this returns...
            self.recorder = None  # ...and only then is the recording reported stopped
            self.recordingChanged.emit(False, str(rec.path))
            self.message.emit(f"Saved {rec.path} ({rec.frames_written / 25:.1f} s)")

    def record_elapsed(self) -> float:
        return time.monotonic() - self.record_started if self.recorder is not None else 0.0

    def close(self) -> None:
        if self.state in (SessionState.RUNNING, SessionState.STARTING):
            self._worker.submit(lambda: None).result(120)
            if self.pipeline is not None:
                self._stop()
        self._worker.shutdown(wait=True)
