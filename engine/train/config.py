"""Training configurations (plain dataclasses: importing them costs nothing, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Training arithmetic (auto: bf16 on a GPU that has it, else fp32)."""

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
    """Audio lookahead, in frames (80 ms): inside the speech features' window, or the log-mel encoder's
    convolutions."""
    features: Literal["logmel", "speech"] = "speech"
    """Audio input: the pretrained speech encoder's features (Whisper tiny.en, windowed: engine.audio.speech),
    or the project's own log-mel (the ablation)."""
    feature_window: int = 30
    """Speech features: video frames of audio per encoder window (1.2 s)."""
    feature_chunk: int = 3
    """Speech features: the chunk grid of the windows (the student's chunk)."""

    def audio_config(self) -> dict:
        """The AudioEncoder arguments for this choice."""
        if self.features == "speech":
            return {"features": "speech", "n_mels": 384, "mels_per_frame": 2, "lookahead": 0,
                    "feature_lookahead": self.lookahead, "feature_window": self.feature_window,
                    "feature_chunk": self.feature_chunk, "dropout": self.dropout}
        return {"lookahead": self.lookahead, "dropout": self.dropout}


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
    precision: Precision = "auto"
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
    """Random input gain (+-) applied to the log-mel (robustness to microphone levels; log-mel models only:
    the speech encoder normalises its input level itself)."""
    real_weight: float = 1.0
    """Share of the "real" scenario (ingested real talking people) relative to each TTS scenario; scenarios
    are otherwise drawn equally often."""


@dataclass
class StudentModelConfig:
    """Streaming shape of the student (its width and depth are the teacher's: it starts from its weights)."""

    chunk: int = 3
    """Frames per chunk (120 ms at 25 fps): bidirectional inside, causal across chunks. 1 = frame by frame."""
    window: int = 48
    """Sliding window of the KV cache, in frames (1.9 s)."""
    sink_frames: int = 1
    """First frames kept in the cache for ever (the sink, with the identity/style tokens)."""


@dataclass
class DistillConfig:
    corpus: Path
    """Training corpus (`talkcam data build --split train`)."""
    out: Path
    """Run folder: model/, checkpoint/, log.jsonl."""
    stage: Literal["ode", "dmd"] = "ode"
    """ode: regression onto the teachers' sampling trajectories (teacher forcing). dmd: distribution
    matching on the student's own rollouts (self-rollout), with a critic, and tail forcing."""
    teachers: Path | None = None
    """Folder of teachers: generalist/ and one folder per scenario specialist (default: the shipped ones)."""
    routing: bool = True
    """Each sample is taught by the specialist of its scenario (the generalist where there is none);
    --no-routing: the generalist teaches everything."""
    calibration: Path | None = None
    """Guidance calibration (calibration.json of `talkcam train calibrate`): per step and motion group,
    how much of the audio guidance the target gets. None: uniform guidance."""
    init: Path | None = None
    """Start from this student folder (the dmd stage starts from the ode stage); None: from the generalist."""
    heldout: Path | None = None
    """Held-out corpus for periodic evaluation."""
    steps: int = 1500
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 25
    eval_every: int = 500
    eval_clips: int = 3
    device: str = "auto"
    precision: Precision = "auto"
    threads: int = 0
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    guidance_min: float = 1.0
    guidance_max: float = 4.0
    """Audio guidance scales the student learns (an input; sampled uniformly per sample)."""
    critic_lr: float = 2e-4
    """dmd: learning rate of the critic (the fake score: a teacher copy trained on the student's rollouts)."""
    critic_updates: int = 1
    """dmd: critic updates per student update."""
    rollout_steps: tuple[int, ...] = (1, 2, 4)
    """dmd: denoising steps the rollouts use (drawn per batch)."""
    regression_weight: float = 0.0
    """dmd: weight of an extra teacher-forced ODE regression term (keeps the ode stage's anchor)."""
    tail_forcing: bool = True
    """dmd: correct the tail frame of every chunk in the rollouts (as at inference) and align the student's
    tail frame to that correction."""
    tail_weight: float = 1.0
    tail_noise: float = 0.4
    """Noise level the tail correction re-denoises the chunk from."""
    tail_steps: int = 2
    tail_context: int = 24
    """Recent frames the tail correction sees besides the sink frames and the chunk."""
    p_drop_audio: float = 0.05
    p_drop_style: float = 0.1
    p_drop_identity: float = 0.5
    p_controls: float = 0.3
    p_context: float = 0.0
    p_steer: float = 0.15
    p_listen: float = 0.1
    closure_weight: float = 2.0
    gain_db: float = 12.0
    real_weight: float = 1.0
    """Share of the "real" scenario (ingested real talking people) relative to each TTS scenario."""


@dataclass
class CalibrateConfig:
    heldout: Path
    """Held-out corpus (its phonemes give the lip-sync ground truth)."""
    out: Path = Path("calibration")
    teacher: Path | None = None
    """Teacher to measure (default: the shipped generalist)."""
    guidance: float = 3.0
    """The audio guidance scale being calibrated."""
    steps: int = 4
    clips: int = 6
    """Clips per scenario."""
    scenarios: tuple[str, ...] = ("speech", "singing", "hard")
    keep: float = 0.8
    """A (step, group) cell keeps guidance when it brings at least this share of the lip-sync gain
    that full guidance brings (or when its effect on the prediction is at least this share of the
    largest cell's)."""
    seed: int = 0


@dataclass
class RefinerTrainConfig:
    """Train the decoder refiner on pairs from `talkcam data refiner` (self-reconstruction of real video)."""

    data: Path
    """Folder written by `talkcam data refiner` (train.safetensors, heldout.safetensors)."""
    out: Path
    """Run folder: checkpoint/ (resumable), model/ (final), train.json, log."""
    channels: tuple[int, int, int] = (24, 48, 96)
    """U-Net widths at 1/2, 1/4 and 1/8 of the crop resolution."""
    bottleneck_blocks: int = 2
    steps: int = 3000
    batch: int = 16
    lr: float = 5e-4
    """Peak learning rate (2e-3 diverged at the end of warm-up and the network collapsed to zero output)."""
    warmup: int = 200
    weight_decay: float = 1e-4
    ssim_weight: float = 0.5
    """Weight of the structural term (1 - SSIM)."""
    grad_weight: float = 1.0
    """Weight of the image-gradient term (edges: lip lines, teeth gaps)."""
    hf_weight: float = 0.5
    """Weight of the high-frequency (Laplacian) term that keeps the mouth sharp."""
    detail_weight: float = 10.0
    """Weight of the detail-energy term: the local amount of high frequency (blurred |Laplacian|) must match
    the real frame's. Unlike the pixel terms it does not care where exactly an edge is, so a target that
    lines up only approximately still asks for sharp output instead of the blurred average."""
    identity_share: float = 0.1
    """Share of each batch drawn from the identity pairs (zero motion: the portrait must come out unchanged)."""
    init: Path | None = None
    """Start from these weights (a refiner model folder), e.g. to fine-tune with other loss weights."""
    mouth_weight: float = 3.0
    """Extra weight of the pixel losses inside and around the mouth opening."""
    gate: float = 0.0
    """Confine the correction to the mouth opening grown by this share of the crop side (0 = the whole crop);
    stored in the model's config and applied at run time too."""
    adv_weight: float = 0.0
    """Weight of the adversarial term: a patch discriminator on the mouth region, real frames against
    refined renderings, both through DiffAugment (0 = no discriminator)."""
    fm_weight: float = 2.0
    """Weight of discriminator feature matching (refined against the real frame, layer by layer)."""
    temporal_weight: float = 0.0
    """Weight of the temporal-consistency term: shifting the inputs by 1-2 px must shift the output the same
    way (a refiner that does not is what flickers on a moving mouth)."""
    d_lr: float = 2e-4
    """Discriminator learning rate."""
    augment: bool = True
    """Random colour transforms, blur (soft portraits), mirror (with the motion mirrored) and crop shifts."""
    eval_every: int = 250
    checkpoint_every: int = 250
    threads: int = 0
    """CPU threads (0 = torch's default)."""
    device: str = "auto"
    seed: int = 0
