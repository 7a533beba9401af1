"""Read any audio (or the audio track of a video) as mono float32 at a chosen rate, via PyAV."""

from __future__ import annotations

import itertools
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The engine's audio rate: features, datasets and models all work at 16 kHz mono."""
FPS = 25
"""The video clock, defined once: every model, front end, renderer output and recording runs at 25 frames
per second (frame i shows audio samples [i * SAMPLES_PER_FRAME, (i + 1) * SAMPLES_PER_FRAME))."""
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

MAX_SECONDS = 6 * 3600


class AudioError(ValueError):
    """The audio could not be read; the message names the file and the fix."""


def wav_shortfall(path: Path | str) -> tuple[float, float] | None:
    """For a RIFF/WAVE file whose data chunk is cut short (a copy or download that stopped early): (seconds
    its header announces, seconds actually in the file). None for a whole WAV, a stream-written one (size
    0 or 0xFFFFFFFF) and any other format."""
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = rate = 0
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(n + (n & 1))
                    if len(fmt) < 14:
                        return None
                    rate, block = struct.unpack("<I", fmt[4:8])[0], struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not block or not rate or n in (0, 0xFFFFFFFF):
                        return None
                    have = size - f.tell()
                    if have >= n - block:
                        return None
                    return n / block / rate, max(0, have) / block / rate
                else:
                    f.seek(n + (n & 1), 1)
    except OSError:
        return None


def _open(path: Path | str):
    """The container of `path`, which has an audio track; AudioError with the fix otherwise."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioError(f"Cannot read {path} as audio ({exc}). Use WAV, MP3, FLAC, OGG or a video with sound.") from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path} has no audio track. Give the sound separately (e.g. --audio speech.wav).")
    return container


def audio_info(path: Path | str) -> tuple[int, int, float | None]:
    """(sample rate, channels, duration in seconds or None) of the first audio track of `path`."""
    with _open(path) as container:
        st = container.streams.audio[0]
        duration = (float(st.duration * st.time_base) if st.duration is not None and st.time_base is not None
                    else (container.duration / 1e6 if container.duration else None))
        return int(st.rate or st.codec_context.sample_rate), int(st.codec_context.channels or 1), duration


def iter_audio(path: Path | str, sample_rate: int = SAMPLE_RATE, layout: str = "mono", warn: bool = True):
    """Decode `path` incrementally: float32 blocks at `sample_rate` (libswresample, no seams), mono [n] or,
    with layout "stereo", [n, 2]. Raises AudioError with the fix for a missing, empty, unreadable or silent
    file; corrupt data after the start ends the stream early with a warning, and so does a WAV cut short."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"Audio file {path} does not exist.")
    if path.is_dir():
        raise AudioError(f"{path} is a folder; give an audio or video file.")
    if path.stat().st_size == 0:
        raise AudioError(f"Audio file {path} is empty (0 bytes).")
    container = _open(path)
    short = wav_shortfall(path) if warn else None
    if short is not None:
        log.warning("%s is cut short: its header announces %.1f s, the file holds %.1f s; using those %.1f s "
                    "(the rest of the recording is missing from the file).", path, short[0], short[1], short[1])
    shape = (-1, 2) if layout == "stereo" else (-1,)  # packed frames: [n] mono, [n, 2] stereo
    total = 0
    with container:
        resampler = av.AudioResampler(format="flt", layout=layout, rate=sample_rate)
        try:
            for frame in itertools.chain(container.decode(audio=0), [None]):  # None flushes the resampler
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(shape)
                    total += len(a)
                    yield a
        except av.error.FFmpegError as exc:
            if not total:
                raise AudioError(f"{path}: the audio data is corrupt ({exc}).") from exc
            log.warning("%s: decoding stopped early (%s); using the first %.1f s", path, exc, total / sample_rate)
    if not total:
        raise AudioError(f"{path} contains no audio samples.")


def load_audio(path: Path | str, sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode `path` (WAV in any PCM/float/extensible format, MP3, FLAC, OGG, M4A, or a video's audio
    track) to mono float32 in [-1, 1] at `sample_rate`."""
    chunks: list[np.ndarray] = []
    total = 0
    for a in iter_audio(path, sample_rate):
        chunks.append(a)
        total += a.size
        if total > max_seconds * sample_rate:
            raise AudioError(f"{path} is longer than {max_seconds / 3600:.0f} hours; split it first.")
    audio = np.concatenate(chunks).astype(np.float32)
    if not np.isfinite(audio).all():
        raise AudioError(f"{path} contains invalid (NaN/inf) samples.")
    return np.clip(audio, -1.0, 1.0)


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling of mono float audio."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    g = np.gcd(int(rate_in), int(rate_out))
    return resample_poly(audio.astype(np.float32), rate_out // g, rate_in // g).astype(np.float32)


class StreamResampler:
    """Mono float32 pieces at `rate_in` -> `rate_out`, continuous across pieces: libswresample (PyAV) keeps its
    filter state between calls, so there is no seam at a piece boundary (the microphone's capture, the synced
    microphone's output). The first output lags by the filter's delay (a few ms, silence first). Equal rates
    pass through."""

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self._res = av.AudioResampler(format="flt", layout="mono", rate=self.rate_out)
        self._pts = 0

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        mono = np.asarray(mono, np.float32)
        if self.rate_in == self.rate_out:
            return mono
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None]), format="flt", layout="mono")
        frame.sample_rate = self.rate_in
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate_in)
        self._pts += len(mono)
        parts = [f.to_ndarray().reshape(-1) for f in self._res.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
