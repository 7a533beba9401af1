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

from engine.audio.io import SAMPLE_RATE, iter_audio

log = logging.getLogger(__name__)


@dataclass
class Piece:
    """`samples` (float32 mono at 16 kHz) that start at sample `start` of the stream; `captured` is the
    monotonic time the last of them was captured."""

    samples: np.ndarray
    start: int
    captured: float


class AudioSource(Protocol):
    """What the pipeline reads: `read()` blocks for the next piece and returns None at the end."""

    piece: int
    live: bool
    """True for a microphone (or a file paced like one): the pipeline then prefers the newest frames."""

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
        self._opened = False
        self._buf = np.zeros(0, np.float32)
        self._pos = 0
        self._t0 = 0.0
        self.samples_read = 0

    def open(self) -> None:
        self._opened = True
        self._it = self._decode()
        first = next(self._it, None)  # a bad file fails here, in the caller, with its message
        self._buf = np.zeros(0, np.float32) if first is None else np.clip(first, -1, 1).astype(np.float32)
        self._pos = 0
        self._t0 = time.monotonic()

    def _decode(self) -> Iterator[np.ndarray]:
        while True:
            yield from iter_audio(self.path)
            if not self.loop:
                return

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
        if self.realtime:  # a microphone delivers this piece when its last sample has been spoken
            due = self._t0 + self._pos / SAMPLE_RATE
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            return Piece(out, start, due)
        return Piece(out, start, time.monotonic())

    def close(self) -> None:
        self._it = None
        self._opened = False
