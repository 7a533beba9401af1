"""Read any audio (or the audio track of a video) as mono float32 at a chosen rate, via PyAV."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The engine's audio rate: features, datasets and models all work at 16 kHz mono."""

MAX_SECONDS = 6 * 3600


class AudioError(ValueError):
    """The audio could not be read; the message names the file and the fix."""


def iter_audio(path: Path | str, sample_rate: int = SAMPLE_RATE):
    """Decode `path` incrementally: mono float32 blocks at `sample_rate` (libswresample, no seams). Raises
    AudioError with the fix for a missing, empty, unreadable or silent file; corrupt data after the start
    ends the stream early with a warning."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"Audio file {path} does not exist.")
    if path.is_dir():
        raise AudioError(f"{path} is a folder; give an audio or video file.")
    if path.stat().st_size == 0:
        raise AudioError(f"Audio file {path} is empty (0 bytes).")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioError(f"Cannot read {path} as audio ({exc}). Use WAV, MP3, FLAC, OGG or a video with sound.") from exc
    total = 0
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio track. Give the sound separately (e.g. --audio speech.wav).")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(-1)
                    total += a.size
                    yield a
            for out in resampler.resample(None):
                a = out.to_ndarray().reshape(-1)
                total += a.size
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
