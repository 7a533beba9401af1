"""Benchmarks that print JSON: the renderer (+ refiner), the refiner per backend, the student, the live path."""

from __future__ import annotations

import dataclasses
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
    refiner: bool = False
    refiner_backend: str | None = None
    stages_ms: dict = dataclasses.field(default_factory=dict)


def bench_renderer(portrait: Path, render: RendererConfig, frames: int = 250, fps: int = 25,
                   cache_dir: Path | None = None, warmup: int = 10) -> RendererBench:
    """Render `frames` frames one at a time (as live does) from animator motion on real TTS."""
    framed = frame_avatar(prepare_avatar(portrait, cache_dir=cache_dir), render.size)
    motion = _bench_motion(fps)
    n_motion = len(motion)
    renderer = AvatarRenderer(framed, render)
    for i in range(warmup):
        renderer.render(motion[i % n_motion])
    gc.collect()
    times, refine = np.empty(frames), np.zeros(frames)
    for i in range(frames):
        m = motion[i % n_motion][None]
        t0 = time.perf_counter()
        out = renderer.render(m, refine=False)
        t1 = time.perf_counter()
        if renderer.refiner is not None:
            renderer.refiner.refine(out, m)
        t2 = time.perf_counter()
        times[i], refine[i] = t2 - t0, t2 - t1
    total = float(times.sum())
    stages = {"renderer": _pct(times - refine)}
    if renderer.refiner is not None:
        stages["refiner"] = _pct(refine)
    return RendererBench(fps=frames / total, rtf=total / (frames / fps),
                         latency_ms_p50=float(np.percentile(times, 50) * 1e3),
                         latency_ms_p95=float(np.percentile(times, 95) * 1e3),
                         size=list(render.size), frames=frames, refiner=renderer.refiner is not None,
                         refiner_backend=renderer.refiner.backend if renderer.refiner else None, stages_ms=stages)


def _bench_motion(fps: int) -> np.ndarray:
    """Animator motion [T, DIM] for the benchmark sentence spoken by espeak-ng."""
    utt = EspeakTTS().synthesize(BENCH_TEXT)
    n_motion = max(1, math.ceil(utt.duration * fps))
    return ProceduralAnimator().animate(utt.phonemes, n_motion, fps, utt.audio, utt.sample_rate)


def _pct(times: np.ndarray) -> dict:
    return {"mean": float(times.mean() * 1e3), "p50": float(np.percentile(times, 50) * 1e3),
            "p95": float(np.percentile(times, 95) * 1e3)}


def bench_refiner(portrait: Path, render: RendererConfig, frames: int = 250, cache_dir: Path | None = None,
                  warmup: int = 10, backends: tuple[str, ...] = ("torch", "onnxruntime")) -> dict:
    """The refiner alone, one frame at a time, per backend: crop + network + paste-back (ms per frame)."""
    import tempfile

    from engine.render.refiner import FrameRefiner
    from engine.runtime.backends import refiner_runner

    framed = frame_avatar(prepare_avatar(portrait, cache_dir=cache_dir), render.size)
    renderer = AvatarRenderer(framed, dataclasses.replace(render, refiner=True, refiner_backend="torch"))
    motion = _bench_motion(25)
    rendered = renderer.render(motion[:50], refine=False)
    net = renderer.refiner.net
    out = {"size": list(render.size), "crop_side": renderer.refiner.geometry.side, "work_side": net.config.work,
           "frames": frames, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:  # as the product runs it (a fresh export for onnxruntime)
            runner = refiner_runner(net, backend, cache_dir=Path(tmp))
            ref = FrameRefiner(runner, renderer.rig.frame, framed.landmarks, renderer.rig.basis)
            for i in range(warmup):
                ref.refine(rendered[i % 50][None].copy(), motion[i % 50][None])
            times = np.empty(frames)
            for i in range(frames):
                f = rendered[i % 50][None].copy()
                t0 = time.perf_counter()
                ref.refine(f, motion[i % 50][None])
                times[i] = time.perf_counter() - t0
            out["backends"][backend] = {**_pct(times), "fps": frames / float(times.sum())}
    return out


def environment() -> dict:
    return {"device": "cpu", "backend": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@dataclass
class StreamBench:
    fps: float
    """Frames per second of the measured stages run one after the other (no pipelining)."""
    rtf: float
    """Real-time factor: processing time / audio time (< 1 is faster than real time)."""
    latency_ms_p50: float
    latency_ms_p95: float
    """Per-chunk latency (time to turn one chunk's audio into its frames)."""
    algorithmic_latency_ms: float
    """Audio the student waits for before a chunk: chunk + lookahead frames."""
    frames: int
    stages_ms_per_frame: dict
    stages_ms: dict
    config: dict
    refiner: bool = False
    refiner_backend: str | None = None


def bench_stream(portrait: Path, render: RendererConfig | None, session, student_dir: Path | None = None,
                 frames: int = 250, fps: int = 25, cache_dir: Path | None = None, warmup_chunks: int = 5) -> StreamBench:
    """The live path on real TTS audio pushed in 40 ms pieces: student session (+ renderer when `render`
    is given), timed per chunk. `session` is a SessionConfig."""
    from dataclasses import asdict

    from engine.audio.io import SAMPLE_RATE, resample
    from engine.eval.evaluate import portrait_shape
    from engine.runtime.session import StudentSession, load_session_models

    framed = frame_avatar(prepare_avatar(portrait, cache_dir=cache_dir), (render or RendererConfig()).size)
    utt = EspeakTTS().synthesize(BENCH_TEXT)
    audio = resample(utt.audio, utt.sample_rate, SAMPLE_RATE)
    student, corrector, schedule = load_session_models(student_dir, tail_forcing=session.tail_forcing)
    sess = StudentSession(student, session, corrector, schedule, portrait_shape(framed))
    renderer = AvatarRenderer(framed, render) if render is not None else None
    piece = SAMPLE_RATE // fps
    need = (frames + warmup_chunks * student.config.chunk + 10) * piece
    audio = np.tile(audio, int(np.ceil(need / len(audio))))[:need]
    t_sess, t_rend, t_refine, chunk_times, done = [], [], [], [], 0
    warm = warmup_chunks * student.config.chunk
    with torch.inference_mode():
        chunks = sess.stream(audio, piece)
        while True:
            t0 = time.perf_counter()
            mo = next(chunks, None)  # includes the pushes that completed no chunk
            t1 = time.perf_counter()
            if mo is None:
                break
            t_ref = 0.0
            if renderer is not None:
                imgs = renderer.render(mo, refine=False)
                if renderer.refiner is not None:
                    tr = time.perf_counter()
                    renderer.refiner.refine(imgs, mo)
                    t_ref = time.perf_counter() - tr
            t2 = time.perf_counter()
            done += len(mo)
            if done > warm:
                t_sess.append((t1 - t0, len(mo)))
                t_rend.append(t2 - t1 - t_ref)
                t_refine.append(t_ref)
                chunk_times.append(t2 - t0)
            if done >= warm + frames:
                break
    n = sum(k for _, k in t_sess)
    total = sum(t for t, _ in t_sess) + sum(t_rend) + sum(t_refine)
    ct = np.array(chunk_times)
    k = student.config.chunk
    stages = {"student": 1e3 * sum(t for t, _ in t_sess) / n}
    stage_lat = {"student": {"p50": float(np.percentile([t for t, _ in t_sess], 50) * 1e3),
                             "p95": float(np.percentile([t for t, _ in t_sess], 95) * 1e3)}}
    if renderer is not None:
        stages["renderer"] = 1e3 * sum(t_rend) / n
        stage_lat["renderer"] = {"p50": float(np.percentile(t_rend, 50) * 1e3), "p95": float(np.percentile(t_rend, 95) * 1e3)}
        if renderer.refiner is not None:
            stages["refiner"] = 1e3 * sum(t_refine) / n
            stage_lat["refiner"] = {"p50": float(np.percentile(t_refine, 50) * 1e3),
                                    "p95": float(np.percentile(t_refine, 95) * 1e3)}
    return StreamBench(fps=n / total, rtf=total / (n / fps), latency_ms_p50=float(np.percentile(ct, 50) * 1e3),
                       latency_ms_p95=float(np.percentile(ct, 95) * 1e3),
                       algorithmic_latency_ms=1e3 * (k + student.audio_encoder.config.lookahead) / fps, frames=n,
                       stages_ms_per_frame={s: round(v, 3) for s, v in stages.items()}, stages_ms=stage_lat,
                       config={**asdict(session), "chunk": k, "window": student.config.window,
                               "size": list(render.size) if render is not None else None},
                       refiner=renderer is not None and renderer.refiner is not None,
                       refiner_backend=renderer.refiner.backend if renderer is not None and renderer.refiner else None)
