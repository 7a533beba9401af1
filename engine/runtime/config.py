"""Runtime settings (plain dataclasses: importing them costs nothing, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from engine.backends import StudentBackendName
from engine.limits import Range

CHUNK_RANGE = (1, 3)
"""Session chunk sizes (video frames) a session may run: the shipped student was trained on 3."""
LOOKAHEAD_RANGE = (0, 2)
"""Feature lookaheads (video frames of audio after a chunk) a session may run: the shipped student was
trained on 2."""


class Latency(str, Enum):
    """Latency presets of the live session: the chunk size and audio lookahead it runs with
    (`LATENCY_PRESETS`; measured trade-off in docs/latency.md)."""

    STANDARD = "standard"
    """The geometry the model was trained with (the shipped student: chunks of 3 frames, 2 frames of lookahead;
    a chunk's first frame waits for 175 ms of audio)."""
    LOW = "low"
    """Chunks of 2 frames with 1 frame of lookahead: a chunk's first frame waits for 80 ms of audio, its last
    for 40 ms (standard: 160 / 80). Lip sync on held-out real speakers within 0.02 of standard; chunks of 1
    cost a speech-encoder window per frame, more than these 2 CPU cores can do in real time (docs/latency.md)."""


LATENCY_PRESETS: dict[Latency, tuple[int | None, int | None]] = {
    Latency.STANDARD: (None, None),
    Latency.LOW: (2, 1),
}
"""(chunk, lookahead) per preset; None = the model's own."""


@dataclass
class SessionConfig:
    """How the student streams."""

    steps: int = 1
    """Denoising steps per chunk (1, 2 or 4; one network pass each). 1 scored best (docs/student.md)."""
    guidance: Annotated[float, Range(0, 20)] = 3.0
    """Audio guidance scale (an input of the student: costs nothing)."""
    tail_forcing: bool = False
    """Correct the tail frame of each chunk with the generalist teacher, anchored to the sink frame (as in
    training). Off by default: on 1000 s runs the student does not drift without it, and with it the
    head pose wanders more and the student costs 2.3x the time (docs/student.md)."""
    tail_noise: Annotated[float, Range(0, 1)] = 0.4
    tail_steps: Annotated[int, Range(1, 8)] = 2
    tail_context: Annotated[int, Range(1, None)] = 24
    tail_every: Annotated[int, Range(1, None)] = 1
    """Correct every Nth chunk (1 = all)."""
    voice_activity: bool = True
    """Close the mouth where the voice-activity detector (silero-vad) hears no speech: silence, breathing,
    background noise. Applies to audio pushed as samples (live, render); off for precomputed feature rows."""
    seed: int = 0
    backend: StudentBackendName = "auto"
    """Where the student runs: auto (best available: tensorrt on an NVIDIA GPU, else onnxruntime, else torch),
    torch, onnxruntime or tensorrt. A backend that fails falls back to the next, with the reason logged."""
    latency: Latency = Latency.STANDARD
    """Latency preset: standard (the model's trained chunk and lookahead) or low (chunks of 2 frames, 1 frame
    of lookahead: 80 ms less delay for a chunk's first frame, slightly weaker lip sync; docs/latency.md)."""
    chunk: Annotated[int | None, Range(*CHUNK_RANGE)] = None
    """Video frames generated per student step (1-3; default: from --latency). A chunk size other than the
    model's gets its own export of the student's step the first time (about 25 s, then cached on disk)."""
    lookahead: Annotated[int | None, Range(*LOOKAHEAD_RANGE)] = None
    """Video frames of audio after a chunk that its speech features and voice-activity flags read (0-2;
    default: from --latency)."""

    def __post_init__(self) -> None:
        try:
            self.latency = Latency(self.latency)
        except ValueError:
            raise ValueError(f"latency must be one of {', '.join(v.value for v in Latency)} "
                             f"(got {self.latency!r})") from None
        for name, (lo, hi) in (("chunk", CHUNK_RANGE), ("lookahead", LOOKAHEAD_RANGE)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"session {name} must be a whole number of video frames from {lo} to {hi} "
                                 f"(got {value!r})")

    def geometry(self, model_chunk: int, model_lookahead: int) -> tuple[int, int]:
        """(chunk, lookahead) in video frames that a session of a model trained with `model_chunk` and
        `model_lookahead` runs: explicit `chunk` / `lookahead` first, then the `latency` preset, then the
        model's own."""
        p_chunk, p_look = LATENCY_PRESETS[self.latency]
        chunk = self.chunk if self.chunk is not None else p_chunk if p_chunk is not None else model_chunk
        look = self.lookahead if self.lookahead is not None else p_look if p_look is not None else model_lookahead
        return int(chunk), int(look)
