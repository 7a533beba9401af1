"""Benchmarks that print JSON. Stage: the renderer (portrait + motion -> frame) at a given size."""

from __future__ import annotations

import gc
import math
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.animator import ProceduralAnimator
from engine.data.tts import EspeakTTS
from engine.face import frame_avatar, prepare_avatar
from engine.render.renderer import AvatarRenderer, RendererConfig

BENCH_TEXT = ("The quick brown fox jumps over the lazy dog. Peter Piper picked a peck of pickled peppers, "
              "and we measure how fast the avatar can be drawn.")


@dataclass
class RendererBench:
    fps: float
    rtf: float
    latency_ms_p50: float
    latency_ms_p95: float
    size: list[int]
    frames: int


def bench_renderer(portrait: Path, render: RendererConfig, frames: int = 250, fps: int = 25,
                   cache_dir: Path | None = None, warmup: int = 10) -> RendererBench:
    """Render `frames` frames one at a time (as live does) from animator motion on real TTS."""
    framed = frame_avatar(prepare_avatar(portrait, cache_dir=cache_dir), render.size)
    utt = EspeakTTS().synthesize(BENCH_TEXT)
    n_motion = max(1, math.ceil(utt.duration * fps))
    motion = ProceduralAnimator().animate(utt.phonemes, n_motion, fps, utt.audio, utt.sample_rate)
    renderer = AvatarRenderer(framed, render)
    for i in range(warmup):
        renderer.render(motion[i % n_motion])
    gc.collect()
    times = np.empty(frames)
    for i in range(frames):
        t0 = time.perf_counter()
        renderer.render(motion[i % n_motion])
        times[i] = time.perf_counter() - t0
    total = float(times.sum())
    return RendererBench(fps=frames / total, rtf=total / (frames / fps),
                         latency_ms_p50=float(np.percentile(times, 50) * 1e3),
                         latency_ms_p95=float(np.percentile(times, 95) * 1e3),
                         size=list(render.size), frames=frames)


def environment() -> dict:
    return {"device": "cpu", "backend": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
