"""The student's chunk step as an exportable module, and the call that runs any backend of it on a cache.

`StudentStep` wraps `MotionStudent.step` (the one implementation of a chunk step: sample the chunk in
`steps` Euler steps on the cache, then write it; no Python state and no data-dependent control flow) with
its tensors as named inputs and outputs, so it exports to ONNX (and from there to TensorRT) with the KV
cache as explicit inputs and outputs. `run_step` runs a step on any backend (torch eager / compiled / CUDA
graph, onnxruntime, TensorRT) against a `StudentCache`, which stays the one streaming state: the stream can
switch between a backend and the eager methods (`MotionStudent.generate_chunk`) at any chunk.
`tests/runtime/test_backends.py` checks each backend against `generate_chunk`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from engine.models.student import CACHE_NAMES, MotionStudent, StudentCache

INPUT_NAMES = ("noise", "tokens", "guidance", "frame", "fused", "prefix_k", "prefix_v") + CACHE_NAMES
OUTPUT_NAMES = ("x",) + tuple(f"new_{n}" for n in CACHE_NAMES)

StepFn = Callable[..., Sequence[torch.Tensor]]
"""A chunk step on some backend: called with the tensors of `INPUT_NAMES`, returns those of `OUTPUT_NAMES`."""


class StudentStep(nn.Module):
    """forward(noise [B, n, M], tokens [B, n, D], guidance [B], frame [1] (float: index of the chunk's first
    frame), fused [B, D], prefix_k/v [L, B, H, P, Dh], sink_k/v [L, B, H, S, Dh], sink_valid [B, S] (0/1
    float), win_k/v [L, B, H, W, Dh], win_valid [B, W] (0/1), win_pos [W]) -> (x [B, n, M] model space,
    new sink_k, sink_v, sink_valid, win_k, win_v, win_valid, win_pos): `MotionStudent.step`."""

    def __init__(self, student: MotionStudent, steps: int = 1) -> None:
        super().__init__()
        self.student = student.eval()
        self.steps = steps

    def forward(self, noise: torch.Tensor, tokens: torch.Tensor, guidance: torch.Tensor, frame: torch.Tensor,
                fused: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor, sink_k: torch.Tensor,
                sink_v: torch.Tensor, sink_valid: torch.Tensor, win_k: torch.Tensor, win_v: torch.Tensor,
                win_valid: torch.Tensor, win_pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.student.step(noise, tokens, guidance, frame, fused, prefix_k, prefix_v, sink_k, sink_v,
                                 sink_valid, win_k, win_v, win_valid, win_pos, steps=self.steps)


def run_step(fn: StepFn, cache: StudentCache, tokens: torch.Tensor, noise: torch.Tensor,
             guidance: torch.Tensor) -> torch.Tensor:
    """One chunk through the step `fn` on `cache` (updated: new tensors, frame advanced). Returns x [B, n, M]
    (model space). A backend that fails raises before the cache is touched, so the stream can continue on
    another one."""
    out = fn(noise, tokens, guidance, cache.frame_tensor().to(noise.device), cache.fused, cache.prefix_k,
             cache.prefix_v, *cache.tensors())
    cache.update(tuple(out[1:]), noise.shape[1])
    return out[0]
