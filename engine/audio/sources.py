"""Audio sources for the live pipeline: fixed-size pieces of 16 kHz mono audio, each stamped with the
(monotonic) time its last sample was captured.

Two kinds feed the same pipeline: the microphone (`engine.audio.mic.MicSource`) and files
(`FileSource`: any audio, or a video with a sound track, decoded incrementally with PyAV), either
paced like a microphone (`realtime=True`) or as fast as the consumer takes them (`talkcam render`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.audio.io import SAMPLE_RATE, audio_info, iter_audio

log = logging.getLogger(__name__)


@dataclass
class Piece:
    """`samples` (float32 mono at 16 kHz) that start at sample `start` of the stream; `captured` is the
    monotonic time the last of them was captured. `original` is the same stretch of time as the source
    gave it (float32 [n, channels] at the source's `record_format` rate), for recordings; None when the
    source has only the 16 kHz copy."""

    samples: np.ndarray
    start: int
    captured: float
    original: np.ndarray | None = None


@dataclass(frozen=True)
class AudioFormat:
    """Rate and channels of a source's own audio (what a recording keeps)."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    def position(self, engine_samples: int) -> int:
        """The sample of this format at the time of 16 kHz stream sample `engine_samples` (rounded down)."""
        return engine_samples * self.sample_rate // SAMPLE_RATE


MAX_RECORD_CHANNELS = 2
"""Recordings keep mono or stereo; sources with more channels are mixed down to stereo."""
RECORD_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
"""Rates a recording keeps as they are (what AAC encodes; each a whole number of samples per frame at 25 fps).
Other rates (e.g. 192 kHz studio files) are recorded at 48 kHz."""


def record_format_for(rate: int, channels: int) -> AudioFormat:
    """The format a recording of a `rate` Hz, `channels`-channel source is written in."""
    return AudioFormat(rate if rate in RECORD_RATES else 48000, max(1, min(channels, MAX_RECORD_CHANNELS)))


class AudioSource(Protocol):
    """What the pipeline reads: `read()` blocks for the next piece and returns None at the end."""

    piece: int
    live: bool
    """True for a microphone (or a file paced like one): the pipeline then prefers the newest frames."""
    record_format: AudioFormat
    """The source's own rate and channels (known after `open`): what `Piece.original` carries."""

    def open(self) -> None: ...

    def read(self) -> Piece | None: ...

    def close(self) -> None: ...


class FileSource:
    """A file as a stream of `piece`-sample pieces. The last piece is padded with silence to a whole piece
    (so the video has ceil(duration * fps) frames); `realtime` paces it like a microphone."""

    live = False

    def __init__(self, path: Path | str, piece: int = SAMPLE_RATE // 25, realtime: bool = False,
                 max_seconds: float = 0.0, loop: bool = False) -> None:
        self.path = Path(path)
        self.piece = piece
        self.realtime = realtime
        self.live = realtime
        self.max_samples = int(max_seconds * SAMPLE_RATE) if max_seconds > 0 else 0
        self.loop = loop
        self._it: Iterator[np.ndarray] | None = None
        self._hi_it: Iterator[np.ndarray] | None = None
        self._opened = False
        self.record_format = AudioFormat()
        self.duration: float | None = None
        """Seconds of audio the file announces (known after `open`; None when it does not say)."""
        self._hi = np.zeros((0, 1), np.float32)
        self._hi_pos = 0  # position in the original format of the first sample in _hi
        self._buf = np.zeros(0, np.float32)
        self._pos = 0
        self._t0 = 0.0
        self.samples_read = 0

    def open(self) -> None:
        self._opened = True
        self._it = self._decode()
        first = next(self._it, None)  # a bad file fails here, in the caller, with its message
        self._buf = np.zeros(0, np.float32) if first is None else np.clip(first, -1, 1).astype(np.float32)
        rate, channels, self.duration = audio_info(self.path)
        self.record_format = record_format_for(rate, channels)
        # the file's own audio (its rate, mono or stereo), decoded alongside for recordings
        self._hi_it = self._decode(self.record_format)
        self._hi = np.zeros((0, self.record_format.channels), np.float32)
        self._hi_pos = 0
        self._pos = 0
        self._t0 = time.monotonic()

    def _decode(self, fmt: AudioFormat | None = None) -> Iterator[np.ndarray]:
        while True:
            if fmt is None:
                yield from iter_audio(self.path)
            else:
                layout = "stereo" if fmt.channels == 2 else "mono"
                for block in iter_audio(self.path, fmt.sample_rate, layout, warn=False):  # warned once above
                    yield block.reshape(len(block), fmt.channels)
            if not self.loop:
                return

    def _original(self, start: int, end: int) -> np.ndarray:
        """The file's own audio for 16 kHz stream samples [start, end) (silence past its end)."""
        fmt = self.record_format
        lo, hi = fmt.position(start), fmt.position(end)
        while self._hi_pos + len(self._hi) < hi and self._hi_it is not None:
            block = next(self._hi_it, None)
            if block is None:
                self._hi_it = None
                break
            self._hi = np.concatenate([self._hi, np.nan_to_num(np.clip(block, -1, 1)).astype(np.float32)])
        out = np.zeros((hi - lo, fmt.channels), np.float32)
        a = max(0, lo - self._hi_pos)
        got = self._hi[a: a + (hi - lo)]
        out[: len(got)] = got
        self._hi = self._hi[a + len(got):]
        self._hi_pos = lo + len(got)
        return out

    def read(self) -> Piece | None:
        if not self._opened:
            raise RuntimeError("FileSource.read() before open()")
        limit = self.max_samples or None
        while len(self._buf) < self.piece and self._it is not None:
            if limit is not None and self._pos + len(self._buf) >= limit:
                break
            chunk = next(self._it, None)
            if chunk is None:
                self._it = None
                break
            self._buf = np.concatenate([self._buf, np.nan_to_num(np.clip(chunk, -1, 1)).astype(np.float32)])
        if limit is not None:
            self._buf = self._buf[: max(0, limit - self._pos)]
        if not len(self._buf):
            return None
        out = np.zeros(self.piece, np.float32)
        n = min(self.piece, len(self._buf))
        out[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        start = self._pos
        self._pos += self.piece
        self.samples_read += n
        original = self._original(start, self._pos)
        if limit is not None and start + n >= limit:  # --max-seconds: the original stops where the copy does
            original[self.record_format.position(start + n) - self.record_format.position(start):] = 0.0
        if self.realtime:  # a microphone delivers this piece when its last sample has been spoken
            due = self._t0 + self._pos / SAMPLE_RATE
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            return Piece(out, start, due, original)
        return Piece(out, start, time.monotonic(), original)

    def close(self) -> None:
        self._it = None
        self._hi_it = None
        self._opened = False
