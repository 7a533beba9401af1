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

from engine import paths
from engine.audio.io import FPS
from engine.data.animator import ProceduralAnimator
from engine.data.tts import EspeakTTS
from engine.render.avatar import build_avatar, prepare_portrait
from engine.render.renderer import RendererConfig
from engine.sinks.base import SinkBase

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
    renderer = build_avatar(portrait, render, cache_dir=cache_dir).renderer
    motion = _bench_motion(fps)
    n_motion = len(motion)
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

    from engine.backends.runners import refiner_runner
    from engine.render.refiner import FrameRefiner

    avatar = build_avatar(portrait, dataclasses.replace(render, refiner=True, refiner_backend="torch"),
                          cache_dir=cache_dir)
    renderer = avatar.renderer
    motion = _bench_motion(25)
    rendered = renderer.render(motion[:50], refine=False)
    assert renderer.refiner is not None  # refiner=True
    net = renderer.refiner.net
    out = {"size": list(render.size), "crop_side": renderer.refiner.geometry.side, "work_side": net.config.work,
           "frames": frames, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:  # as the product runs it (a fresh export for onnxruntime)
            runner = refiner_runner(net, backend, cache_dir=Path(tmp))
            ref = FrameRefiner(runner, renderer.rig.frame, avatar.framed.landmarks, renderer.rig.basis)
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

    from engine.audio.io import SAMPLE_RATE
    from engine.runtime.stream import StudentStream, load_session_models

    rc = render or RendererConfig()
    framed = prepare_portrait(portrait, rc.size, rc.max_upscale, cache_dir=cache_dir)
    student, corrector, schedule = load_session_models(student_dir, tail_forcing=session.tail_forcing)
    sess = StudentStream(student, session, corrector, schedule, framed.shape)
    renderer = build_avatar(framed, render).renderer if render is not None else None
    piece = SAMPLE_RATE // fps
    audio = _bench_speech((frames + warmup_chunks * student.config.chunk + 10) * piece)
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
                       algorithmic_latency_ms=1e3 * (k + student.audio_encoder.audio_lookahead) / fps, frames=n,
                       stages_ms_per_frame={s: round(v, 3) for s, v in stages.items()}, stages_ms=stage_lat,
                       config={**asdict(session), "chunk": k, "window": student.config.window,
                               "size": list(render.size) if render is not None else None},
                       refiner=renderer is not None and renderer.refiner is not None,
                       refiner_backend=renderer.refiner.backend if renderer is not None and renderer.refiner else None)


# ------------------------------------------------------------------------------------------------
# The live pipeline (`talkcam bench`, the default stage): throughput, live latency, memory, baselines.

def _rss_mb() -> float:
    """Resident memory now (Linux /proc; elsewhere the peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Probe(SinkBase):
    """A sink sampling memory every `every` frames."""

    name = "probe"

    def __init__(self, every: int) -> None:
        self.every = every
        self.samples: list[tuple[int, float]] = []

    def write_frame(self, frame):
        if frame.index % self.every == 0:
            self.samples.append((frame.index, _rss_mb()))


def _bench_speech(samples: int) -> np.ndarray:
    """The benchmark sentence (espeak-ng) at 16 kHz, repeated to `samples` samples."""
    from engine.audio.io import SAMPLE_RATE, resample

    utt = EspeakTTS().synthesize(BENCH_TEXT)
    a = resample(utt.audio, utt.sample_rate, SAMPLE_RATE)
    return np.tile(a, samples // len(a) + 1)[:samples]


def _bench_audio(seconds: float, folder: Path) -> Path:
    """The benchmark speech for `seconds`, as a WAV (what the pipeline benchmark reads like a file)."""
    from engine.audio.io import SAMPLE_RATE
    from engine.sinks.wav import write_wav

    path = folder / "bench.wav"
    write_wav(path, _bench_speech(int(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    return path


def bench_pipeline(portrait: Path, render: RendererConfig, session, frames: int = 250, latency_seconds: float = 10.0,
                   baselines: bool = True, long_run_seconds: float = 0.0, cache_dir: Path | None = None) -> dict:
    """The live path as it runs: the threaded pipeline (student stage || renderer + refiner stage).

    - throughput: a file at full speed (`frames` frames): fps, real-time factor, ms per frame per stage,
      memory growth over the run;
    - latency: the same audio paced like a microphone for `latency_seconds`: per-frame latency from the
      capture of the frame's audio to the frame out (p50/p95), and from the newest audio it needed;
    - baselines in the same process on the same audio, each with the same renderer: a bidirectional
      chunked sampler (the generalist teacher re-denoising the whole window every chunk, 4 steps with
      full classifier-free guidance: 2 passes a step) and the teacher offline on the whole clip;
    - long run (`long_run_seconds` > 0): that many seconds of audio at full speed, memory sampled every
      50 s of audio.
    """
    import tempfile

    from engine.audio.sources import FileSource
    from engine.runtime.live import LIVE_PIECE, PIECE, AvatarEngine

    fps = FPS
    out: dict = {"stage": "pipeline"}
    with tempfile.TemporaryDirectory() as tmp:
        wav = _bench_audio(max(frames / fps, latency_seconds) + 1.0, Path(tmp))
        engine = AvatarEngine(render, session, cache_dir=cache_dir)
        avatar = engine.avatar(portrait)
        # warm-up (first calls allocate, onnxruntime plans)
        engine.pipeline_for(FileSource(wav, PIECE, max_seconds=1.0), avatar, []).run()
        gc.collect()
        rss0 = _rss_mb()
        probe = _Probe(25)
        pipe = engine.pipeline_for(FileSource(wav, PIECE, max_seconds=frames / fps), avatar, [probe])
        t0 = time.perf_counter()
        stats = pipe.run()
        wall = time.perf_counter() - t0
        gc.collect()
        s = stats.summary()
        out.update({"fps": stats.frames / wall, "rtf": wall / (stats.frames / fps), "frames": stats.frames,
                    "size": list(render.size), "refiner": avatar.renderer.refiner is not None,
                    "refiner_backend": avatar.renderer.refiner.backend if avatar.renderer.refiner else None,
                    "backend": engine.step.name if engine.step is not None else "torch",
                    "stages_ms_per_frame": {"student": round(s["student_ms_per_frame"], 3),
                                            "renderer+refiner": round(s["render_ms_per_frame"], 3)},
                    "memory_mb": {"start": round(rss0, 1), "end": round(_rss_mb(), 1),
                                  "growth": round(_rss_mb() - rss0, 1)}})
        if latency_seconds > 0:
            pipe = engine.pipeline_for(FileSource(wav, LIVE_PIECE, realtime=True, max_seconds=latency_seconds),
                                       avatar, [])
            lstats = pipe.run()
            ls = lstats.summary()
            out.update({"latency_ms_p50": ls["latency_ms_p50"], "latency_ms_p95": ls["latency_ms_p95"],
                        "processing_ms_p50": ls["processing_ms_p50"], "processing_ms_p95": ls["processing_ms_p95"],
                        "live_dropped_frames": ls["dropped_frames"], "live_frames": ls["frames"],
                        "algorithmic_latency_ms": _algorithmic_ms(engine)})
        if baselines:
            from engine.models.loading import load_teacher

            teacher = load_teacher(paths.teachers_dir() / "generalist")  # loaded once for both baselines
            out["baselines"] = {
                "bidirectional_chunked_cfg": _baseline_chunked(engine, teacher, avatar, wav, frames, latency_seconds),
                "teacher_offline": _baseline_teacher(teacher, avatar, wav, frames, s["render_ms_per_frame"])}
            for b in out["baselines"].values():
                b["fps_ratio_vs_student"] = round(out["fps"] / b["fps"], 2)
        if long_run_seconds > 0:
            out["long_run"] = _long_run(engine, avatar, wav, long_run_seconds)
    env = environment()
    env.pop("backend")
    out.update(env)
    out["device"] = str(next(engine.models.student.parameters()).device)
    return out


def _algorithmic_ms(engine) -> dict:
    st = engine.models.student
    la = st.audio_encoder.audio_lookahead
    k = st.config.chunk
    return {"first_frame_of_chunk": (k - 1 + la) * 40 + 15, "last_frame_of_chunk": la * 40 + 15}


def _mel(wav: Path, frames: int, encoder) -> np.ndarray:
    from engine.audio.frontend import front_end
    from engine.audio.io import load_audio

    return front_end(encoder.config).offline(load_audio(wav)[: frames * 640], frames)


def _baseline_chunked(engine, teacher, avatar, wav: Path, frames: int, latency_seconds: float, steps: int = 4,
                      guidance: float = 3.0, window: int = 48) -> dict:
    """The bidirectional chunked sampler (engine.eval.baselines.ChunkedTeacherStream: the generalist
    re-denoising its whole window every chunk, full CFG) in the same pipeline, with the same renderer and
    refiner, measured the same way: full speed for fps, paced like a microphone for latency."""
    from engine.audio.sources import FileSource
    from engine.eval.baselines import ChunkedTeacherStream
    from engine.runtime.live import LIVE_PIECE, PIECE
    from engine.runtime.pipeline import Pipeline

    k = engine.models.student.config.chunk

    def stream():
        return ChunkedTeacherStream(teacher, k, steps, guidance, window, avatar.shape, engine.style)

    t0 = time.perf_counter()
    stats = Pipeline(FileSource(wav, PIECE, max_seconds=frames / 25), stream(), avatar.renderer).run()
    wall = time.perf_counter() - t0
    s = stats.summary()
    out = {"fps": stats.frames / wall, "rtf": wall / (stats.frames / 25),
           "stages_ms_per_frame": {"motion": round(s["student_ms_per_frame"], 3),
                                   "renderer+refiner": round(s["render_ms_per_frame"], 3)},
           "steps": steps, "passes_per_step": 2, "window": window}
    if latency_seconds > 0:
        ls = Pipeline(FileSource(wav, LIVE_PIECE, realtime=True, max_seconds=latency_seconds), stream(),
                      avatar.renderer).run().summary()
        out.update({"latency_ms_p50": ls["latency_ms_p50"], "latency_ms_p95": ls["latency_ms_p95"],
                    "live_dropped_frames": ls["dropped_frames"], "live_frames": ls["frames"]})
    return out


def _baseline_teacher(teacher, avatar, wav: Path, frames: int, render_ms: float) -> dict:
    """The generalist teacher offline on the whole clip (its own windows, 4 steps, CFG): the quality
    reference; it cannot stream (the first frame needs the whole clip)."""
    from engine.models.sampling import SampleConfig, generate

    mel = _mel(wav, frames, teacher.audio_encoder)
    with torch.inference_mode():
        t0 = time.perf_counter()
        generate(teacher, mel, frames, SampleConfig(steps=4), shape=avatar.shape)
        dt = time.perf_counter() - t0
    motion_ms = 1e3 * dt / frames
    total = motion_ms + render_ms
    return {"fps": 1e3 / total, "rtf": total / 40.0,
            "stages_ms_per_frame": {"motion": round(motion_ms, 3), "renderer+refiner": round(render_ms, 3)},
            "latency_ms_p50": 1e3 * frames / 25 + 1e3 * dt, "latency_ms_p95": 1e3 * frames / 25 + 1e3 * dt,
            "latency_note": "offline, renderer serial after it: the first frame waits for the whole clip",
            "steps": 4, "passes_per_step": 2}


def _long_run(engine, avatar, wav: Path, seconds: float) -> dict:
    from engine.audio.sources import FileSource
    from engine.runtime.live import PIECE
    from engine.sinks.bus import FrameBus

    probe = _Probe(25 * 50)
    pipe = engine.pipeline_for(FileSource(wav, PIECE, max_seconds=seconds, loop=True), avatar, [FrameBus(), probe])
    t0 = time.perf_counter()
    stats = pipe.run()
    wall = time.perf_counter() - t0
    rss = [m for _, m in probe.samples]
    settled = rss[2:] if len(rss) > 4 else rss  # after the first 100 s
    slope = float(np.polyfit(np.arange(len(settled)) * 50.0, settled, 1)[0]) if len(settled) > 1 else 0.0
    return {"audio_seconds": seconds, "frames": stats.frames, "fps": stats.frames / wall, "wall_seconds": wall,
            "rss_mb_every_50s": [round(m, 1) for m in rss],
            "growth_mb_after_100s": round(settled[-1] - settled[0], 1) if settled else 0.0,
            "slope_mb_per_1000s": round(slope * 1000, 2)}
