"""The synced virtual microphone: the user's voice, delayed to match the avatar frames the viewers see.

In a call the real microphone reaches the other side at once, but the avatar's video about 200 ms later.
This sink publishes the voice as a virtual microphone ("talkcam Microphone"), delayed by the measured
video delay, so a call that takes the talkcam camera and the talkcam microphone gets both in sync.

- **The delay is measured live**, per frame: the time the frame was shown (sent to the virtual camera, or
  out of the renderer for the preview) minus the capture time of its audio, centre to centre
  (`frame_delay`). The target is the median over the last second; the audio output's own latency (what
  the sound server still holds) is measured on every block and taken off.
- **It adjusts smoothly** (`DelayLine`): the output runs at the device's clock and reads the captured audio
  at a slightly varied rate (at most ±0.5% while the voice is heard, ±4% in pauses), so the delay glides
  to its target with no gap and no click. Only a jump of more than a quarter second (a stall) resyncs at
  once, with a short crossfade.
- **Devices**: Linux creates a PulseAudio/PipeWire null sink plus a remap source through libpulse
  (`engine.audio.pulse`), removed on exit and, after a crash, on the next start. Windows writes to
  VB-CABLE's "CABLE Input" (apps pick "CABLE Output"), macOS to BlackHole; both through PortAudio.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engine.audio.io import SAMPLE_RATE, StreamResampler
from engine.audio.sources import Piece
from engine.sinks.base import Frame, SinkBase

if TYPE_CHECKING:
    import sounddevice as sd

    from engine.audio.pulse import PulseStream

log = logging.getLogger(__name__)

OUT_RATE = 48000
"""The virtual microphone's rate (what call apps and Opus use)."""
BLOCK = 480
"""Samples written per block (10 ms)."""


class SyncedMicError(RuntimeError):
    """The synced microphone cannot be published here; the message says what to install or pick."""


def install_hint(system: str | None = None) -> str:
    system = system or platform.system()
    if system == "Windows":
        return ("Install VB-CABLE (free: https://vb-audio.com/Cable/), restart talkcam, then pick 'CABLE Output' "
                "as the microphone in Zoom, Teams, Discord or OBS.")
    if system == "Darwin":
        return ("Install BlackHole (free: `brew install blackhole-2ch`, or https://existential.audio/blackhole/), "
                "restart talkcam, then pick 'BlackHole 2ch' as the microphone in Zoom, Meet or OBS.")
    if system == "Linux":
        return "talkcam creates 'talkcam Microphone' itself; it needs a PulseAudio or PipeWire sound server."
    return f"A synced microphone is not supported on {system}."


def frame_delay(shown: float, frame: Frame, fps: float) -> float:
    """Seconds the voice must be held back for `frame`: its audio [captured - 1/fps, captured] is shown over
    [shown, shown + 1/fps]; centre to centre that is shown - captured + 1/fps."""
    return shown - frame.captured + 1.0 / fps


class DelayMeter:
    """The median of the last `window` frame delays (what the OBS sync offset and the synced mic use): over
    3 s, so a burst of late frames does not move the voice."""

    def __init__(self, window: int = 75) -> None:
        self._d: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, delay: float) -> None:
        with self._lock:
            self._d.append(delay)

    @property
    def value(self) -> float | None:
        with self._lock:
            return float(np.median(self._d)) if self._d else None


class DelayLine:
    """Audio stamped with capture times in, audio at an output device's clock out: the sample that plays at
    time t is the one captured at t - delay.

    `push(samples, t_last)`: contiguous input at `rate` (t_last: capture time of its last sample).
    `pull(n, t_play)`: the next n output samples, the first of which plays at `t_play`. The read position
    moves by a ratio near 1 (linear interpolation), steered toward the target; within `deadband` of it the
    ratio is exactly 1 (the voice passes unchanged)."""

    def __init__(self, rate: int = OUT_RATE, delay: float = 0.2, max_s: float = 5.0, max_ratio: float = 0.005,
                 quiet_ratio: float = 0.04, quiet_level: float = 0.003, settle_s: float = 0.5,
                 deadband_s: float = 0.002, resync_s: float = 0.25) -> None:
        self.rate = rate
        self.delay = delay
        self.max_s = max_s
        self.max_ratio, self.quiet_ratio, self.quiet_level = max_ratio, quiet_ratio, quiet_level
        self.settle_s, self.deadband_s, self.resync_s = settle_s, deadband_s, resync_s
        self._buf = np.zeros(0, np.float32)
        self._start = 0  # absolute index of _buf[0]
        self._offset: float | None = None  # capture time of input sample k = _offset + k / rate
        self._pos: float | None = None  # read position (absolute input index, fractional)
        self._last = 0.0  # last output sample (crossfade source on a resync)
        self._lock = threading.Lock()
        self.resyncs = 0
        self.played_delay: float | None = None
        """The delay of the last block pulled (seconds; None before audio arrived)."""

    def set_delay(self, delay: float) -> None:
        self.delay = max(0.0, float(delay))

    def push(self, samples: np.ndarray, t_last: float) -> None:
        with self._lock:
            self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32)])
            end = self._start + len(self._buf)
            offset = t_last - (end - 1) / self.rate
            if self._offset is None or abs(offset - self._offset) > 0.1:
                self._offset = offset  # first audio, or the source's clock jumped
            else:
                self._offset += 0.05 * (offset - self._offset)  # smooth the capture stamps' jitter
            extra = len(self._buf) - int(self.max_s * self.rate)
            if extra > 0:
                self._buf = self._buf[extra:]
                self._start += extra

    def pull(self, n: int, t_play: float) -> np.ndarray:
        with self._lock:
            if self._offset is None:
                return np.zeros(n, np.float32)
            target = (t_play - self.delay - self._offset) * self.rate  # input index that should play now
            resync = self._pos is None or abs(target - self._pos) > self.resync_s * self.rate
            if self._pos is None or resync:  # (resync when None; spelled out for the type checker)
                self._pos = target
                ratio = 1.0
                if self.played_delay is not None:
                    self.resyncs += 1
            else:
                err = (target - self._pos) / self.rate  # seconds behind (>0: read faster)
                near = self._slice(self._pos, n)
                limit = self.quiet_ratio if float(np.sqrt(np.mean(near ** 2))) < self.quiet_level else self.max_ratio
                ratio = 1.0 if abs(err) < self.deadband_s else 1.0 + float(np.clip(err / self.settle_s, -limit, limit))
            positions = self._pos + ratio * np.arange(n)
            out = self._interp(positions)
            if resync and n > 1:  # crossfade from the last sample played: no click
                m = min(n, self.rate // 200)
                w = np.linspace(0.0, 1.0, m, dtype=np.float32)
                out[:m] = self._last * (1 - w) + out[:m] * w
            self._pos += ratio * n
            self._last = float(out[-1]) if n else self._last
            self.played_delay = t_play - (self._offset + positions[0] / self.rate)
            drop = min(int(self._pos) - 2 - self._start, len(self._buf))  # never past the newest input
            if drop > 0:
                self._buf = self._buf[drop:]
                self._start += drop
            return out

    def _slice(self, pos: float, n: int) -> np.ndarray:
        i0 = int(pos) - self._start
        lo, hi = max(0, i0), min(len(self._buf), i0 + n)
        return self._buf[lo:hi] if hi > lo else np.zeros(1, np.float32)

    def _interp(self, positions: np.ndarray) -> np.ndarray:
        """Linear interpolation of the input at absolute `positions`; silence where there is none."""
        rel = positions - self._start
        i = np.floor(rel).astype(np.int64)
        f = (rel - i).astype(np.float32)
        ok = (i >= 0) & (i + 1 < len(self._buf))
        out = np.zeros(len(positions), np.float32)
        if ok.any():
            ii = i[ok]
            out[ok] = self._buf[ii] * (1 - f[ok]) + self._buf[ii + 1] * f[ok]
        edge = (i + 1 == len(self._buf)) & (i >= 0)  # the newest sample itself
        out[edge] = self._buf[i[edge]] if len(self._buf) else 0.0
        return out


class MicOutput(Protocol):
    """Where the delayed voice goes. `start(pull)` opens the device and keeps calling `pull(n, t_play)`
    (n samples at OUT_RATE, the first playing at monotonic time t_play) at the device's pace until `stop()`."""

    name: str

    def start(self, pull: Callable[[int, float], np.ndarray]) -> None: ...

    def stop(self) -> None: ...


class PulseMicOutput:
    """Linux: creates 'talkcam Microphone' (engine.audio.pulse) and writes to its feed sink in 10 ms blocks."""

    name = "talkcam Microphone"

    def __init__(self, buffer_ms: float = 40.0) -> None:
        from engine.audio.pulse import VirtualMicDevices

        self.devices = VirtualMicDevices(rate=OUT_RATE)
        self.buffer_ms = buffer_ms
        self._stream: PulseStream | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.flowing = threading.Event()
        """Set once the sound server consumes the voice at the device's pace."""

    def start(self, pull: Callable[[int, float], np.ndarray]) -> None:
        from engine.audio.pulse import PulseError, PulseStream

        try:
            self.devices.create()
            self._stream = PulseStream(self.devices.sink, OUT_RATE, name="synced voice", buffer_ms=self.buffer_ms,
                                       block=BLOCK)
        except PulseError as exc:
            self.devices.remove()
            raise SyncedMicError(str(exc)) from exc
        self._stop.clear()
        self._thread = threading.Thread(target=self._pump, args=(pull,), name="talkcam-syncmic", daemon=True)
        self._thread.start()

    def _pump(self, pull) -> None:
        stream = self._stream
        try:
            assert stream is not None  # start() opens it before starting this thread
            # a PulseAudio null sink that was idle wakes up only at its old (2 s) timer: until then writes
            # block. Prime it with silence so the voice starts when the device runs at its pace.
            silence = np.zeros(BLOCK, np.float32)
            for _ in range(400):
                t0 = time.monotonic()
                stream.write(silence)
                if time.monotonic() - t0 > 0.5 * BLOCK / OUT_RATE or self._stop.is_set():
                    break
            self.flowing.set()
            while not self._stop.is_set():
                t_play = time.monotonic() + stream.latency()
                stream.write(pull(BLOCK, t_play))  # blocks until the server has room: the device's pace
        except Exception as exc:  # the sound server went away: report it, the avatar goes on
            self.error = exc
            log.error("Synced microphone stopped: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._stream is not None:
            if self._thread is not None and self._thread.is_alive():  # still inside a write: do not free it under it
                log.warning("The synced microphone's stream did not stop in time; leaving it to the process's exit")
            else:
                self._stream.close()
            self._stream = None
        self.devices.remove()


class PortAudioMicOutput:
    """Windows/macOS (and any named output device): PortAudio playback into a virtual cable's input
    (VB-CABLE's "CABLE Input", BlackHole), whose other end apps pick as their microphone."""

    def __init__(self, device: str) -> None:
        self.name = device
        self._stream: sd.OutputStream | None = None

    def start(self, pull: Callable[[int, float], np.ndarray]) -> None:
        import sounddevice as sd

        def callback(outdata, frames, time_info, status):  # PortAudio's thread
            try:
                ahead = time_info.outputBufferDacTime - time_info.currentTime
            except AttributeError:
                ahead = 0.0
            t_play = time.monotonic() + (ahead if 0.0 <= ahead < 1.0 else 0.0)
            outdata[:, 0] = pull(frames, t_play)
            if outdata.shape[1] > 1:
                outdata[:, 1:] = outdata[:, :1]

        try:
            info = sd.query_devices(self.name, "output")
            self._stream = stream = sd.OutputStream(device=self.name, samplerate=OUT_RATE,
                                                    channels=min(2, int(info["max_output_channels"])),
                                                    dtype="float32", blocksize=BLOCK, latency="low",
                                                    callback=callback)
            stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            raise SyncedMicError(f"Could not open the output {self.name!r} for the synced microphone ({exc}).\n"
                                 f"{install_hint()}") from exc

    def stop(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.abort()
            stream.close()


CABLES = {"Windows": ("CABLE Input", "CABLE Output"), "Darwin": ("BlackHole", "BlackHole 2ch")}
"""Per OS: (the output talkcam writes to, the microphone apps pick)."""


def default_output(system: str | None = None, device: str | None = None) -> MicOutput:
    """This OS's synced-mic output: a named PortAudio output device when `device` is given, else PulseAudio
    on Linux and the virtual cable on Windows/macOS (SyncedMicError saying how to get one)."""
    system = system or platform.system()
    if device:
        return PortAudioMicOutput(device)
    if system == "Linux":
        return PulseMicOutput()
    if system in CABLES:
        from engine.audio.mic import _sd

        sd = _sd()
        want = CABLES[system][0]
        names = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
        found = [n for n in names if want.lower() in n.lower()]
        if not found:
            raise SyncedMicError(f"No {want!r} output device found for the synced microphone.\n{install_hint(system)}")
        return PortAudioMicOutput(found[0])
    raise SyncedMicError(install_hint(system))


def mic_name_for_apps(system: str | None = None) -> str:
    """What the user picks as the microphone in Zoom/Meet/OBS."""
    system = system or platform.system()
    return CABLES[system][1] if system in CABLES else "talkcam Microphone"


class AvDelaySink(SinkBase):
    """Measures how far the shown video lags the voice (`delay_ms`: the sync offset to enter in OBS for the
    real microphone). Frames count at `write_frame` (out of the renderer: the preview) unless it follows a
    virtual camera (`follow(camera)`): then at the time the camera sent them."""

    name = "A/V delay"

    def __init__(self, extra_ms: float = 0.0) -> None:
        self.extra = extra_ms / 1000.0
        self.follow_camera = False
        self.meter = DelayMeter()
        self.fps = 25.0

    def follow(self, camera) -> None:
        """Take the frame times from `camera` (engine.sinks.virtualcam.VirtualCamSink) instead."""
        camera.listeners.append(self.frame_shown)
        self.follow_camera = True

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        self.fps = float(fps)

    def write_frame(self, frame: Frame) -> None:
        if not self.follow_camera:
            self.frame_shown(frame, frame.out)

    def frame_shown(self, frame: Frame, shown: float) -> None:
        """A frame reached the viewer's side at monotonic time `shown`."""
        self.meter.add(frame_delay(shown, frame, self.fps) + self.extra)

    @property
    def delay_ms(self) -> float | None:
        d = self.meter.value
        return None if d is None else 1e3 * d

    def status(self) -> str:
        d = self.delay_ms
        return "" if d is None else f"video {d:.0f} ms behind the voice (OBS: set the microphone's Sync Offset to {d:.0f} ms)"


class SyncedMicSink(AvDelaySink):
    """Publishes the captured voice, delayed to the shown frames, on `output` (default: this OS's)."""

    name = "synced microphone"

    def __init__(self, output: MicOutput | None = None, initial_delay: float = 0.2, extra_ms: float = 0.0) -> None:
        super().__init__(extra_ms)
        self.output = output
        self.initial_delay = initial_delay
        self.line = DelayLine(OUT_RATE, initial_delay)
        self._resamplers: dict[str, StreamResampler] = {}
        self._opened = False

    @property
    def error(self) -> BaseException | None:
        return getattr(self.output, "error", None)

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        self.fps = float(fps)
        self._resamplers = {"orig": StreamResampler(sample_rate, OUT_RATE), "16k": StreamResampler(SAMPLE_RATE, OUT_RATE)}
        if self.output is None:
            self.output = default_output()
        self.output.start(self.line.pull)
        self._opened = True
        log.info("Synced microphone: %s (pick '%s' in the call app)", self.output.name, mic_name_for_apps())

    def write_audio(self, piece: Piece) -> None:
        if piece.original is not None and piece.original.ndim == 2:
            data, kind = piece.original.mean(1).astype(np.float32), "orig"
        else:
            data, kind = np.asarray(piece.samples, np.float32), "16k"
        out = self._resamplers[kind](data)
        if len(out):
            self.line.push(out, piece.captured)

    def frame_shown(self, frame: Frame, shown: float) -> None:
        super().frame_shown(frame, shown)
        target = self.meter.value
        if target is not None:
            self.line.set_delay(target)

    @property
    def delay_ms(self) -> float | None:
        """The delay the voice is played with now (ms), None before any audio."""
        d = self.line.played_delay
        return None if d is None else 1e3 * d

    def status(self) -> str:
        d = self.delay_ms
        return "" if d is None else f"synced microphone +{d:.0f} ms"

    def close(self) -> None:
        if self._opened and self.output is not None:
            self._opened = False
            self.output.stop()
