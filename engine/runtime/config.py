"""Runtime settings (plain dataclasses: importing them costs nothing, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from engine.backends import StudentBackendName
from engine.limits import Range


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
