"""Microphone capture with sounddevice (PortAudio): device listing and selection by name, any native
rate and channel count turned into 16 kHz mono, and survival of an unplugged device.

The PortAudio callback only copies into a ring buffer (`AudioRing`): no allocation beyond one copy, no
locks held for long, no resampling. The reading side (`MicSource.read`, on the pipeline's source
thread) mixes down to mono, resamples with libswresample (PyAV, a streaming resampler: no seams
between blocks) and cuts fixed pieces stamped with the capture time of their last sample.

Device loss: when the stream ends without being asked to (PortAudio reports the device gone) or no
audio arrives for `stall_s` seconds, the source reports it (`on_status`), keeps delivering silence at
the real-time pace (so the avatar keeps running and the video clock keeps ticking), and tries to reopen
the same device by name every `retry_s` seconds; when it comes back, capture resumes by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.audio.io import SAMPLE_RATE, StreamResampler
from engine.audio.sources import MAX_RECORD_CHANNELS, AudioFormat, Piece, record_format_for

log = logging.getLogger(__name__)


class MicError(RuntimeError):
    """No usable microphone; the message says what was found and what to do."""


@dataclass(frozen=True)
class MicInfo:
    index: int
    name: str
    channels: int
    rate: float
    hostapi: str
    default: bool = False

    def __str__(self) -> str:
        return f"{self.name} ({self.hostapi}, {self.channels} ch, {self.rate:.0f} Hz){' [default]' if self.default else ''}"


def _sd():
    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio library itself is missing
        raise MicError("PortAudio is not installed, so no microphone can be opened. Install it "
                       "(Debian/Ubuntu: sudo apt install libportaudio2; macOS: brew install portaudio).") from exc
    return sd


def rescan() -> None:
    """Make PortAudio enumerate the devices again (hot-plug). Only while no stream of ours is open."""
    sd = _sd()
    sd._terminate()
    sd._initialize()


def list_microphones() -> list[MicInfo]:
    """Every input device PortAudio sees, the default first."""
    sd = _sd()
    try:
        default = sd.default.device[0]
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise MicError(f"The audio system could not list devices: {exc}") from exc
    apis = sd.query_hostapis()
    mics = [MicInfo(i, d["name"], int(d["max_input_channels"]), float(d["default_samplerate"]),
                    apis[d["hostapi"]]["name"], i == default)
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    return sorted(mics, key=lambda m: not m.default)


def find_microphone(name: str | None = None) -> MicInfo:
    """The device called `name`: an exact name first, then a unique case-insensitive part of one.
    None: the system's default input."""
    mics = list_microphones()
    if not mics:
        raise MicError("No microphone found. Plug one in (or enable it in the system's sound settings), then "
                       "check `talkcam mics`.")
    if name is None or name == "":
        return mics[0]
    exact = [m for m in mics if m.name == name]
    if exact:
        return exact[0]
    part = [m for m in mics if name.lower() in m.name.lower()]
    if len(part) == 1:
        return part[0]
    listing = "\n  ".join(str(m) for m in mics)
    if not part:
        raise MicError(f"No microphone named {name!r}. Available:\n  {listing}")
    raise MicError(f"{name!r} matches several microphones; give more of the name:\n  "
                   + "\n  ".join(str(m) for m in part))


class AudioRing:
    """A fixed-size ring of native-rate int16 frames [capacity, channels], written by the audio callback
    and read by one consumer. Like a sound card's buffer, audio that arrives while it is full is lost
    (counted in `overruns`); what is in it stays contiguous."""

    def __init__(self, capacity: int, channels: int) -> None:
        self.buf = np.zeros((capacity, channels), np.int16)
        self.capacity = capacity
        self.written = 0  # frames ever written
        self.read_pos = 0  # frames ever read
        self.overruns = 0  # frames lost to a full ring
        self.t_last = 0.0  # capture time of the last written frame
        self.ready = threading.Event()
        self._lock = threading.Lock()

    def write(self, data: np.ndarray, t_last: float) -> None:
        n = len(data)
        with self._lock:
            free = self.capacity - (self.written - self.read_pos)
            if n > free:
                self.overruns += n - free
                data = data[:free]
                n = free
            i = self.written % self.capacity
            first = min(n, self.capacity - i)
            self.buf[i:i + first] = data[:first]
            self.buf[: n - first] = data[first:]
            self.written += n
            self.t_last = t_last
        self.ready.set()

    def read(self) -> tuple[np.ndarray, float]:
        """Everything not read yet and the capture time of its last frame."""
        with self._lock:
            n = self.written - self.read_pos
            i = self.read_pos % self.capacity
            first = min(n, self.capacity - i)
            out = np.concatenate([self.buf[i:i + first], self.buf[: n - first]])
            self.read_pos += n
            t = self.t_last
            self.ready.clear()
        return out, t


class MicSource:
    """The microphone as an `AudioSource`: `read()` -> Piece of `piece` samples at 16 kHz mono."""

    live = True

    def __init__(self, name: str | None = None, piece: int = SAMPLE_RATE // 25, capacity_s: float = 10.0,
                 stall_s: float = 1.0, retry_s: float = 1.0, channels: int | None = None,
                 on_status: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.piece = piece
        self.capacity_s = capacity_s
        self.stall_s = stall_s
        self.retry_s = retry_s
        self.channels_wanted = channels
        self.on_status = on_status
        self.device: MicInfo | None = None
        self.state = "closed"  # closed, ok, lost
        self.losses = 0
        self.reconnects = 0
        self.silence_samples = 0
        self._stream = None
        self._token: object | None = None
        self._ring: AudioRing | None = None
        self._resampler: StreamResampler | None = None
        self._rate = 0
        self._out = np.zeros(0, np.float32)
        self.record_format: AudioFormat | None = None  # the device's own rate and channels (first opened)
        self._orig = np.zeros((0, 1), np.float32)  # the device's own audio not yet delivered
        self._orig_ok = False  # False after a reopen on another rate/channels: recordings use the 16 kHz copy
        self._out_t = 0.0  # capture time of the last sample in _out
        self._pos = 0  # samples delivered
        self._clock = 0.0  # capture time of the last delivered sample
        self._last_cb = 0.0
        self._started = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        self.device = find_microphone(self.name)
        self._open_stream()
        self._clock = time.monotonic()
        self._closing.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="mic-supervisor", daemon=True)
        self._supervisor.start()
        log.info("Microphone: %s", self.device)

    def _open_stream(self) -> None:
        sd = _sd()
        dev = self.device
        assert dev is not None  # open() finds the device before the first stream
        channels = max(1, min(self.channels_wanted or dev.channels, dev.channels, MAX_RECORD_CHANNELS))
        rate = int(round(dev.rate))
        ring = AudioRing(int(self.capacity_s * rate), channels)

        def callback(indata, frames, time_info, status):  # PortAudio's thread: copy and return
            now = time.monotonic()
            try:
                lag = time_info.currentTime - time_info.inputBufferAdcTime
            except AttributeError:
                lag = 0.0
            t_last = now - lag + frames / rate if 0.0 < lag < 1.0 else now
            ring.write(indata, t_last)
            self._last_cb = now
            self._started = True

        # int16: what microphones deliver (and what every host API converts exactly); floats come after
        token = object()  # identifies this stream: an old stream's end is not the current one's
        stream = sd.InputStream(device=dev.index, channels=channels, samplerate=rate, dtype="int16",
                                callback=callback, finished_callback=lambda: self._finished(token))
        stream.start()
        with self._lock:
            self._stream, self._ring, self._rate, self._token = stream, ring, rate, token
            self._resampler = StreamResampler(rate, SAMPLE_RATE)
            if self.record_format is None:
                self.record_format = record_format_for(rate, channels)
            # the device's own samples go to recordings when the recording keeps its format; otherwise (an
            # unusual rate, or a device back on another format) the recorder stretches the 16 kHz copy
            self._orig_ok = self.record_format == AudioFormat(rate, channels)
            self._orig = np.zeros((0, channels), np.float32)
            self._last_cb = time.monotonic()
            self._started = False  # set by the first callback
            self.state = "ok"

    def _finished(self, token) -> None:
        if token is self._token and not self._closing.is_set() and self.state == "ok":
            self._lose("the device stopped (unplugged or taken by the system)")

    def _lose(self, why: str) -> None:
        with self._lock:
            if self.state != "ok":
                return
            self.state = "lost"
            self.losses += 1
            stream, self._stream, self._token = self._stream, None, None
        assert self.device is not None  # a stream was open, so the device was found
        msg = (f"Microphone {self.device.name!r} lost: {why}. The avatar continues on silence; capture resumes "
               "when the device is back.")
        log.warning("%s", msg)
        self._report("lost", msg)
        _close_quietly(stream)

    def _report(self, state: str, msg: str) -> None:
        if self.on_status is not None:
            try:
                self.on_status(state, msg)
            except Exception:  # a broken status listener must not stop the capture
                log.exception("microphone status listener failed")

    def _supervise(self) -> None:
        next_try = 0.0
        start_tries = 0
        while not self._closing.wait(0.1):
            now = time.monotonic()
            if self.state == "ok":
                if not self._started and now - self._last_cb > self.stall_s and start_tries < 3:
                    # some host APIs (ALSA's PulseAudio plugin) now and then never start a new stream:
                    # open it again before calling the device lost
                    start_tries += 1
                    log.debug("microphone stream did not start; reopening (%d)", start_tries)
                    with self._lock:
                        stream, self._stream, self._token = self._stream, None, None
                    _close_quietly(stream)
                    try:
                        self._open_stream()
                    except Exception as exc:  # gone after all: the loss path takes over (silence, retries)
                        self._lose(f"it could not be restarted ({exc})")
                        next_try = now + self.retry_s
                    continue
                if now - self._last_cb > self.stall_s:
                    self._lose(f"no audio for {self.stall_s:.1f} s")
                    next_try = now + self.retry_s
                elif self._started:
                    start_tries = 0
            elif self.state == "lost" and now >= next_try:
                next_try = now + self.retry_s
                try:
                    assert self.device is not None  # it was open before it was lost
                    rescan()
                    self.device = find_microphone(self.device.name)
                    self._open_stream()
                except Exception as exc:  # still gone: PortAudio/MicError; try again later
                    log.debug("microphone reopen failed: %s", exc)
                    continue
                self.reconnects += 1
                msg = f"Microphone {self.device.name!r} is back."
                log.info("%s", msg)
                self._report("ok", msg)

    def close(self) -> None:
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        with self._lock:
            stream, self._stream = self._stream, None
            self.state = "closed"
        _close_quietly(stream)

    # -- reading --------------------------------------------------------------------------------
    @property
    def overruns(self) -> int:
        return self._ring.overruns if self._ring is not None else 0

    def _pull(self) -> None:
        """Move what the callback wrote into the 16 kHz mono buffer."""
        with self._lock:
            ring, res = self._ring, self._resampler
        if ring is None:
            return
        data, t_last = ring.read()
        if not len(data):
            return
        data = data.astype(np.float32) / 32768.0
        with self._lock:  # a reopen (supervisor thread) may have replaced the ring and reset the buffer
            if self._orig_ok and ring is self._ring and data.shape[1] == self._orig.shape[1]:
                self._orig = np.concatenate([self._orig, data])
        mono = data.mean(1).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
        assert res is not None  # set with the ring
        out = res(mono)
        self._out = np.concatenate([self._out, np.clip(out, -1.0, 1.0)])
        self._out_t = t_last

    def read(self) -> Piece | None:
        if self._closing.is_set():
            return None
        while True:
            self._pull()
            if len(self._out) >= self.piece:
                samples, self._out = self._out[: self.piece], self._out[self.piece:]
                captured = self._out_t - len(self._out) / SAMPLE_RATE
                # PortAudio's ADC time mapped to the monotonic clock can land a fraction of a millisecond
                # in the future; a sample cannot have been captured after now
                captured = min(captured, time.monotonic())
                return self._deliver(samples, max(captured, self._clock))
            if self._closing.is_set():
                return None
            if self.state == "lost":  # silence at the real-time pace keeps the avatar (and the clock) going
                due = self._clock + self.piece / SAMPLE_RATE
                wait = due - time.monotonic()
                if wait <= 0:
                    self._out = np.zeros(0, np.float32)
                    with self._lock:
                        self._orig = self._orig[:0]
                    self.silence_samples += self.piece
                    return self._deliver(np.zeros(self.piece, np.float32), due)
                time.sleep(min(wait, 0.02))
            else:
                ring = self._ring
                if ring is not None:
                    ring.ready.wait(0.05)

    def _deliver(self, samples: np.ndarray, captured: float) -> Piece:
        original = None
        fmt = self.record_format
        with self._lock:
            if fmt is not None and self._orig_ok:  # the same stretch of time in the device's own format
                n = fmt.position(self._pos + len(samples)) - fmt.position(self._pos)
                original = np.zeros((n, fmt.channels), np.float32)
                got = self._orig[:n]
                original[n - len(got):] = got  # short only at a (re)start: the resampler's delay, silence first
                self._orig = self._orig[len(got):]
        piece = Piece(samples, self._pos, captured, original)
        self._pos += len(samples)
        self._clock = captured
        return piece


def _close_quietly(stream) -> None:
    if stream is None:
        return
    try:
        stream.abort()
        stream.close()
    except Exception as exc:  # the device is gone: PortAudio may refuse to stop what already stopped
        log.debug("closing the microphone stream: %s", exc)
