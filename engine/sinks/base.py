"""What the pipeline hands to its outputs: `Frame`, and the `Sink` protocol every output implements (the
preview's frame bus, the virtual camera, the recorder, the synced microphone, VMC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.audio.sources import Piece


@dataclass
class Frame:
    """One output frame."""

    index: int
    """Frame number on the audio clock: it shows the audio of [index / fps, (index + 1) / fps)."""
    image: np.ndarray
    """RGB uint8 [H, W, 3]."""
    motion: np.ndarray
    captured: float
    """Monotonic time the frame's own audio was captured (its last sample)."""
    needed: float
    """Capture time of the newest audio the frame waited for (its chunk + the encoder's lookahead)."""
    out: float = 0.0
    """Monotonic time the frame left the renderer."""

    @property
    def latency(self) -> float:
        """Seconds from the capture of the frame's audio to the frame being ready (what a viewer sees)."""
        return self.out - self.captured

    @property
    def processing(self) -> float:
        """Seconds from the last audio the frame needed to the frame being ready (compute + queues)."""
        return self.out - self.needed


class Sink(Protocol):
    """Where frames go: the preview's frame bus, the virtual camera, the recorder. `write_frame` and
    `write_audio` are called from the pipeline's threads and must return quickly in live mode."""

    name: str

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        """`sample_rate` and `channels`: the source's own audio format (`Piece.original`; a piece without it
        carries only its 16 kHz mono copy, `Piece.samples`)."""
        ...

    def write_frame(self, frame: Frame) -> None: ...

    def write_audio(self, piece: Piece) -> None: ...

    def close(self) -> None: ...


class SinkBase:
    """A sink that ignores what it is not interested in: subclasses override only the calls they use."""

    name = "sink"

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        pass

    def write_frame(self, frame: Frame) -> None:
        pass

    def write_audio(self, piece: Piece) -> None:
        pass

    def close(self) -> None:
        pass
