"""Types of the models' registered configs, for the type checker.

Each model (`ModelMixin, ConfigMixin`) registers its constructor arguments with diffusers'
`@register_to_config`; `model.config` is then a FrozenDict whose keys are also read as attributes
(`student.config.chunk`), saved as config.json beside the safetensors weights. diffusers types it as a plain
dict; these classes name the attributes each model has (with their types), so a typo or a wrong type in
`model.config.x` is caught by the type checker. Nothing is ever constructed from them at run time.
"""

from __future__ import annotations

from typing import Any


class RegisteredConfig(dict[str, Any]):
    """A registered model config: a dict whose keys are attributes too (declared by subclasses)."""


class AudioEncoderConfig(RegisteredConfig):
    n_mels: int
    mels_per_frame: int
    channels: int
    dim: int
    kernel: int
    dilations: tuple[int, ...]
    lookahead: int
    dropout: float
    features: str
    feature_chunk: int
    feature_lookahead: int
    feature_window: int


class MotionModelConfig(RegisteredConfig):
    """What teachers and students share (`engine.models.trunk.MotionTrunk`)."""

    motion_dim: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    dropout: float
    window: int
    shape_dim: int
    style_vocab: int
    audio: dict[str, Any] | None


class TeacherConfig(MotionModelConfig):
    pass


class StudentConfig(MotionModelConfig):
    chunk: int
    sink_frames: int
    train_frames: int


class RefinerConfig(RegisteredConfig):
    motion_dim: int
    channels: tuple[int, int, int]
    bottleneck_blocks: int
    motion_hidden: int
    crop_scale: float
    feather: float
    work: int
    gate: float
