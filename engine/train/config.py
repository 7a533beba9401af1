"""Training configurations (plain dataclasses: importing them costs nothing, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TeacherModelConfig:
    """Network size (the default is small enough to train on a 2-core CPU)."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.5
    dropout: float = 0.1
    window: int = 75
    """Frames per training window (3 s at 25 fps)."""
    lookahead: int = 2
    """Audio lookahead of the audio encoder, in frames (80 ms)."""


@dataclass
class TeacherTrainConfig:
    corpus: Path
    """Training corpus (`talkcam data build --split train`)."""
    out: Path
    """Run folder: model/, checkpoint/, log.jsonl."""
    heldout: Path | None = None
    """Held-out corpus for periodic evaluation."""
    scenarios: tuple[str, ...] = ()
    """Train only on these scenarios (a specialist); empty = all (the generalist)."""
    scenario_share: float = 1.0
    """With --scenarios: the share of windows drawn from those scenarios; the rest come from all the
    others in equal parts (replay, so a specialist keeps what the generalist knows). 1 = only them."""
    init: Path | None = None
    """Start from this model folder (specialists start from the generalist)."""
    steps: int = 3000
    batch: int = 24
    lr: float = 3e-4
    warmup: int = 150
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50
    """Steps between lines of log.jsonl (mean loss over them)."""
    eval_every: int = 500
    eval_clips: int = 4
    """Held-out clips per scenario in the periodic evaluation."""
    device: str = "auto"
    precision: str = "auto"
    """fp32, bf16 or fp16 (auto: bf16 on a GPU that has it, else fp32)."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    p_drop_audio: float = 0.1
    p_drop_style: float = 0.2
    p_drop_identity: float = 0.5
    p_controls: float = 0.3
    """Per control channel: probability that it is given (on a random span of frames)."""
    p_context: float = 0.5
    """Probability that the window's first frames are given as known motion."""
    p_steer: float = 0.15
    """Per steerable control (smile, head pose, gaze): probability of moving the target motion to a random
    value on a span and showing that as the control (teaches controls beyond the corpus's range)."""
    p_listen: float = 0.1
    """Probability of a listening sample (speak = 0, mouth closed whatever the audio)."""
    closure_weight: float = 1.0
    """Loss weight of frames on a bilabial or labiodental viseme (p/b/m, f/v) and their neighbours
    (the hard-viseme specialist raises it: these closures last one or two frames)."""
    gain_db: float = 12.0
    """Random input gain (+-) applied to the log-mel (robustness to microphone levels)."""
