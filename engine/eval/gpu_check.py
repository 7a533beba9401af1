"""GPU check: CUDA against CPU equivalence, benchmarks beside CPU baselines, and a long run, as one
prepared command for a CUDA machine whose image has torch, numpy and onnxruntime but not the rest of the
engine's dependencies (docs/gpu-check.md).

Two steps:

- ``prepare`` (here, on a CPU machine with the full install): writes a folder (default ``.gpucheck/``)
  with the benchmark speech (espeak-ng), the speech encoder's outputs for every window the run will
  need (Whisper tiny.en through CTranslate2: its weights are too large to carry to the device), the
  portrait's landmarks (MediaPipe) in the avatar cache, CPU reference outputs, the CPU baseline
  benchmark, and the wheels of the few pure-Python packages the device image lacks.
- ``run --device cuda`` (on the device) or ``run --device cpu`` (a dry run: short durations): the
  equivalence checks (student chunk step, streaming session, renderer, refiner, the whole pipeline on a
  short clip), the benchmark per frame size, and a long run; writes ``gpu-check.json``, ``report.md``
  and ``log.txt`` to ``--out``.

The speech encoder is the one stage that does not run on the device: `ReplayEncoder` stands in for
Whisper's encoder inside the real streaming front end (`engine.audio.speech.StreamingSpeechFeatures`,
whose windowing, chunk grid, lookahead and end-of-stream padding all run as in the product). It returns
the encoder's output for each window looked up by the window's exact samples, as computed on the
prepare machine; a window that was not prepared is an error, never a guess. Rows the front end does
not read are NaN, so a stray read would poison the motion and fail the checks. `prepare` verifies the
replay: the motion of a session on replayed features equals that of a session on the live encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from engine.audio.io import FPS
from engine.audio.sources import AudioFormat, Piece
from engine.runtime.config import SessionConfig
from engine.runtime.stream import StudentStream
from engine.sinks.base import SinkBase

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "fp16"]
StudentBackendName = Literal["auto", "torch", "onnxruntime", "tensorrt"]
RefinerBackendName = Literal["auto", "torch", "onnxruntime"]

SCHEMA = 1
SAMPLE_RATE = 16000
PIECE = SAMPLE_RATE // FPS  # 40 ms: a file at full speed (engine.runtime.live.PIECE)
LIVE_PIECE = SAMPLE_RATE // 50  # 20 ms: live audio (engine.runtime.live.LIVE_PIECE)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / ".gpucheck"

MOTION_TOL: dict[Precision, float] = {"fp32": 1e-3, "fp16": 1e-2}
"""Largest allowed |CUDA - CPU| of motion (engine.motion units), by precision."""
FRAME_TOL_LEVELS = 2
"""Largest allowed |CUDA - CPU| of any frame pixel channel, in uint8 levels."""

# files of the prepared folder
MANIFEST = "manifest.json"
AUDIO = "audio.npy"
SPEECH_TABLE = "speech_rows.npz"
REFERENCE = "reference.npz"
CPU_BENCH = "bench_cpu.json"
AVATAR_CACHE = "cache"
WHEELS = "wheels"
WHEEL_PINS = ("diffusers", "platformdirs", "silero-vad")
"""Pure-Python packages the engine imports that the device image lacks (docs/gpu-check.md)."""


@dataclass
class Plan:
    """What the run measures. Fixed at prepare time: the speech windows are prepared for these streams."""

    sizes: list[int] = dataclasses.field(default_factory=lambda: [512, 1024])
    """Square frame sides benchmarked (and checked for renderer/refiner equivalence)."""
    eq_seconds: float = 4.0
    """The short clip of the session and pipeline equivalence checks."""
    eq_render_frames: int = 25
    """Frames of the clip compared for the renderer and the refiner (spread over the clip)."""
    step_chunks: int = 30
    """Chunks of the student step check (90 frames: past the first window eviction at 48)."""
    bench_frames: int = 250
    """Frames of the full-speed pipeline run per size."""
    stage_frames: int = 100
    """Frames of the per-stage timings per size."""
    latency_seconds: float = 10.0
    """Seconds of audio paced like a microphone per size (mic-to-frame latency)."""
    warmup_seconds: float = 1.0
    long_run_seconds: float = 300.0
    """Default length (wall seconds, full speed) of the long run on CUDA."""
    long_run_interval: float = 10.0
    """Seconds between samples of fps and memory in the long run."""
    reference_frames: int = 4
    """CPU frames stored at prepare time (first size) for the cross-machine comparison."""
    audio_seconds: float | None = None
    """The looped speech: the benchmark sentence, cut to this many seconds (None: all of it, 8.3 s)."""


DRY_PLAN = Plan(sizes=[128], eq_seconds=1.2, eq_render_frames=4, step_chunks=6, bench_frames=15, stage_frames=6,
                latency_seconds=0.8, warmup_seconds=0.24, long_run_seconds=2.0, long_run_interval=0.5,
                reference_frames=2, audio_seconds=2.4)
"""Tiny sizes and short durations: proves the plumbing on a CPU in well under a minute."""


# ------------------------------------------------------------------------------------------------
# Speech features replayed: the real streaming front end around a prepared encoder output table.

def window_key(window: np.ndarray) -> str:
    """The key of one encoder window: a digest of its exact float32 samples."""
    return hashlib.sha1(np.ascontiguousarray(window, np.float32).tobytes()).hexdigest()[:24]


def _used_rows(cfg) -> tuple[int, int]:
    """The rows of an encoder window that StreamingSpeechFeatures reads: [first, first + 2 * chunk)."""
    first = 2 * (cfg.window - cfg.chunk - cfg.lookahead)
    return first, first + 2 * cfg.chunk


class ReplayMiss(KeyError):
    """A window the prepare step did not record (the stream differs from the prepared plan)."""


class ReplayEncoder:
    """Stands in for `engine.audio.speech.WhisperEncoder`: `encode(windows)` returns the outputs the real
    encoder gave for the same windows on the prepare machine; rows the front end does not read are NaN."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray, config) -> None:
        self.config = config
        self.first, self.end = _used_rows(config)
        if rows.shape[1:] != (self.end - self.first, rows.shape[2]):
            raise ValueError(f"speech table rows {rows.shape} do not match the window geometry {config}")
        self.table = {str(k): r for k, r in zip(keys, rows)}
        self.dim = rows.shape[2]
        self.calls = 0

    @classmethod
    def load(cls, file: Path, config) -> ReplayEncoder:
        with np.load(file) as z:
            return cls(z["keys"], z["rows"].astype(np.float32), config)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        cfg = self.config
        out = np.full((len(windows), 2 * cfg.window, self.dim), np.nan, np.float32)
        for i, w in enumerate(windows):
            k = window_key(w)
            if k not in self.table:
                raise ReplayMiss(f"speech window {k} was not prepared: the stream differs from the prepared plan "
                                 "(run `installers/gpu-check.sh --prepare` again with the same settings)")
            out[i, self.first:self.end] = self.table[k]
        self.calls += len(windows)
        return out


class RecordingEncoder:
    """Prepare side: the real encoder, each new window's used rows recorded (a repeated window is served
    from the record)."""

    def __init__(self, inner, config) -> None:
        self.inner, self.config = inner, config
        self.first, self.end = _used_rows(config)
        self.table: dict[str, np.ndarray] = {}
        self.encode_s: list[float] = []

    def encode(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for w in windows:
            k = window_key(w)
            if k not in self.table:
                t0 = time.perf_counter()
                feats = self.inner.encode(w[None])[0]
                self.encode_s.append(time.perf_counter() - t0)
                self.table[k] = feats[self.first:self.end].copy()
                out.append(feats)
            else:
                f = np.full((2 * self.config.window, self.table[k].shape[1]), np.nan, np.float32)
                f[self.first:self.end] = self.table[k]
                out.append(f)
        return np.stack(out)

    def save(self, file: Path) -> None:
        keys = np.array(sorted(self.table))
        np.savez_compressed(file, keys=keys, rows=np.stack([self.table[k] for k in keys]).astype(np.float32))


class ReplayStream(StudentStream):
    """A `StudentStream` whose speech front end is the real `StreamingSpeechFeatures` with `encoder` (a
    `ReplayEncoder`) in place of the CTranslate2 model; everything else is the session as the product runs
    it (voice activity included). A log-mel student needs no replay and runs unchanged."""

    def __init__(self, *args, encoder, **kwargs) -> None:
        self._speech_encoder = encoder
        super().__init__(*args, **kwargs)

    def _init_mel(self, encoder) -> None:
        from engine.audio.speech import StreamingSpeechFeatures
        from engine.models.conditions import N_CONTROLS

        front = self._front_end(encoder)
        if front.kind != "speech":
            super()._init_mel(encoder)
            return
        # as MelChunker._init_mel, with the front end's encoder given
        self.past, self.lookahead = encoder.context()
        self.audio_lookahead = self.lookahead + front.lookahead
        self.front = front
        self.mpf = front.rows_per_frame
        self.n_mels = front.dim
        self.mel_front = StreamingSpeechFeatures(front.speech, encoder=self._speech_encoder)
        self.controls = np.zeros(N_CONTROLS, np.float32)
        self.control_mask = np.zeros(N_CONTROLS, np.float32)
        self._reset_mel()


class ArraySource:
    """An audio array as a pipeline source (`engine.audio.sources.AudioSource`), like `FileSource` on a WAV
    of it: `piece`-sample pieces, the last padded with silence; `realtime` paces it like a microphone;
    `loop` repeats it until the pipeline is stopped."""

    def __init__(self, audio: np.ndarray, piece: int = PIECE, realtime: bool = False, loop: bool = False) -> None:
        self.audio = np.asarray(audio, np.float32)
        self.piece, self.realtime, self.live, self.loop = piece, realtime, realtime, loop
        self.sample_rate = SAMPLE_RATE
        self.record_format = AudioFormat()  # 16 kHz mono, what the pipeline assumes without one
        self._pos = 0
        self._t0 = 0.0
        self._halt: tuple[int, int] | None = None

    def halt(self, align: int, min_samples: int = 0) -> None:
        """End the stream at the next multiple of `align` samples at or after `min_samples` (callable from
        another thread): a looped stream then ends where the prepare step prepared its end, and the
        pipeline finishes it as a file's end, dropping nothing (a stop would drop queued audio)."""
        self._halt = (align, min_samples)

    def open(self) -> None:
        self._pos = 0
        self._t0 = time.monotonic()

    def read(self) -> Piece | None:
        n = len(self.audio)
        if not self.loop and self._pos >= n:
            return None
        halt = self._halt
        if halt is not None and self._pos >= halt[1] and self._pos % halt[0] == 0:
            return None
        if self.loop:
            idx = (self._pos + np.arange(self.piece)) % n
            out = self.audio[idx]
        else:
            out = np.zeros(self.piece, np.float32)
            chunk = self.audio[self._pos:self._pos + self.piece]
            out[:len(chunk)] = chunk
        start = self._pos
        self._pos += self.piece
        if self.realtime:
            due = self._t0 + self._pos / SAMPLE_RATE
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            return Piece(out, start, due)
        return Piece(out, start, time.monotonic())

    def close(self) -> None:
        pass


def stream_audio(base: np.ndarray, seconds: float) -> np.ndarray:
    """The first `seconds` (whole video frames) of `base` repeated: every stream of the check is one."""
    n = int(round(seconds * FPS)) * PIECE
    return np.resize(np.asarray(base, np.float32), n)


# ------------------------------------------------------------------------------------------------
# Comparisons

def motion_diff(ref: np.ndarray, got: np.ndarray, precision: Precision = "fp32") -> dict:
    tol = MOTION_TOL[precision]
    if ref.shape != got.shape:
        return {"pass": False, "error": f"shapes differ: {list(ref.shape)} vs {list(got.shape)}", "tolerance": tol}
    d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    finite = bool(np.isfinite(got).all())
    mx = float(d.max()) if d.size else 0.0
    return {"frames": int(len(ref)), "max_abs": mx, "mean_abs": float(d.mean()) if d.size else 0.0,
            "precision": precision, "tolerance": tol, "finite": finite, "pass": finite and mx <= tol}


def frame_diff(ref: np.ndarray, got: np.ndarray, tol: int = FRAME_TOL_LEVELS) -> dict:
    """|a - b| of uint8 frames in levels: max, mean, 99.9th percentile, share of values over `tol`."""
    if ref.shape != got.shape:
        return {"pass": False, "error": f"shapes differ: {list(ref.shape)} vs {list(got.shape)}",
                "tolerance_levels": tol}
    d = np.abs(ref.astype(np.int16) - got.astype(np.int16)).astype(np.uint8).reshape(-1)
    hist = np.bincount(d, minlength=256).astype(np.float64)
    cum = np.cumsum(hist) / max(d.size, 1)
    return {"frames": int(len(ref)), "max_levels": int(d.max()) if d.size else 0,
            "mean_levels": float((hist * np.arange(256)).sum() / max(d.size, 1)),
            "p999_levels": int(np.searchsorted(cum, 0.999)), "share_over_tolerance": float(hist[tol + 1:].sum() / max(d.size, 1)),
            "tolerance_levels": tol, "pass": bool(d.size == 0 or d.max() <= tol)}


# ------------------------------------------------------------------------------------------------
# Helpers

def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _pct(times) -> dict:
    t = np.asarray(times, np.float64)
    if not t.size:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "n": 0}
    return {"mean": float(t.mean() * 1e3), "p50": float(np.percentile(t, 50) * 1e3),
            "p95": float(np.percentile(t, 95) * 1e3), "n": int(t.size)}


def _autocast(device: str, precision: Precision):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.float16)


def _cuda_mem() -> dict:
    if not torch.cuda.is_available():
        return {}
    mb = 1024 * 1024
    return {"allocated_mb": torch.cuda.memory_allocated() / mb, "max_allocated_mb": torch.cuda.max_memory_allocated() / mb,
            "reserved_mb": torch.cuda.memory_reserved() / mb, "max_reserved_mb": torch.cuda.max_memory_reserved() / mb}


def environment(device: Device) -> dict:
    """Versions, processor, GPU and the settings that change CUDA numerics."""
    from engine.backends.runners import available_student_backends
    from engine.eval.bench import environment as bench_env

    env = bench_env()
    env.pop("backend", None)
    env.update({"device": device, "python": platform.python_version(), "numpy": np.__version__,
                "cpu_count": os.cpu_count(), "machine": platform.machine(),
                "student_backends_available": available_student_backends(device)})
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError as exc:
        env["onnxruntime"] = f"missing: {exc}"
    try:
        import tensorrt  # noqa: F401

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update({"gpu": p.name, "capability": f"{p.major}.{p.minor}", "gpu_memory_gb": round(p.total_memory / 2**30, 1),
                    "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(),
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                    "float32_matmul_precision": torch.get_float32_matmul_precision()})
    return env


class Budget:
    """Wall-clock budget of the run (the device check must end within 8 minutes)."""

    def __init__(self, seconds: float | None) -> None:
        self.t0 = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()


class Report:
    """The JSON being built; `section` runs one part, and a failure is logged with its traceback, recorded
    under ``errors`` and fails the check, while the other parts still run (device time is scarce)."""

    def __init__(self, data: dict, checkpoint: Callable[[dict], None] | None = None) -> None:
        self.data = data
        self.data.setdefault("errors", [])
        self.checkpoint = checkpoint

    def result(self) -> dict:
        """`data` with the verdicts so far (a run cut short still leaves a readable report)."""
        eq = [v.get("pass", False) if isinstance(v, dict) else False for v in self.data.get("equivalence", {}).values()]
        self.data["equivalence_pass"] = bool(eq) and all(eq)
        self.data["pass"] = self.data["equivalence_pass"] and not self.data["errors"]
        return self.data

    def section(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        log.info("== %s", name)
        try:
            out = fn()
        except Exception as exc:
            log.exception("%s failed", name)
            self.data["errors"].append({"section": name, "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc(limit=12)})
            return None
        finally:
            log.info("   %s: %.1f s", name, time.monotonic() - t0)
        if self.checkpoint is not None:
            self.checkpoint(self.result())
        return out


# ------------------------------------------------------------------------------------------------
# The stack on one device

class Stack:
    """The student, its chunk-step backend, and renderers per size on one device (loaded once: a compiled
    CUDA step is built once per process)."""

    def __init__(self, device: str, student_backend: StudentBackendName, refiner_backend: RefinerBackendName,
                 cache_dir: Path, portrait: Path,
                 replay: ReplayEncoder | None, session: SessionConfig | None = None) -> None:
        from engine.render.renderer import RendererConfig
        from engine.runtime.live import AvatarEngine

        self.device = device
        self.session_config = session or SessionConfig(backend=student_backend)
        # with the refiner (off by default since issue 17): the check measures every stage the product can run
        self.engine = AvatarEngine(RendererConfig(refiner=True, refiner_backend=refiner_backend), self.session_config,
                                   cache_dir=cache_dir, device=device)
        if self.engine.device != device:
            raise RuntimeError(f"the engine moved to {self.engine.device} (out of memory on {device}?)")
        self.student = self.engine.models.student
        self.portrait = portrait
        self.replay = replay
        self._avatars: dict[int, Any] = {}

    @property
    def backend(self) -> str:
        return self.engine.step.name if self.engine.step is not None else "torch"

    def avatar(self, size: int):
        """The portrait at `size` x `size`: its renderer with the refiner, as the product runs it."""
        if size not in self._avatars:
            self.engine.render_config = dataclasses.replace(self.engine.render_config, size=(size, size))
            self._avatars[size] = self.engine.avatar(self.portrait)
        return self._avatars[size]

    def stream(self, shape: np.ndarray | None, step=True) -> StudentStream:
        """A streaming session as the product's (its chunk step on this stack's backend; `step=None`: the
        torch `generate_chunk` path)."""
        m = self.engine.models
        st = self.engine.step if step is True else step
        if self.replay is None:
            return StudentStream(m.student, self.session_config, m.corrector, m.schedule, shape, self.engine.style, st)
        return ReplayStream(m.student, self.session_config, m.corrector, m.schedule, shape, self.engine.style, st,
                             encoder=self.replay)


def session_motion(sess: StudentStream, audio: np.ndarray, piece: int = PIECE) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(list(sess.stream(audio, piece)))


class _Collect(SinkBase):
    """A sink keeping every frame (image and motion) by index."""

    name = "collect"

    def __init__(self) -> None:
        self.frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def write_frame(self, frame) -> None:
        self.frames[frame.index] = (frame.image.copy(), frame.motion.copy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        idx = sorted(self.frames)
        if idx != list(range(len(idx))):
            raise RuntimeError(f"pipeline frames are not 0..n-1 in order: {idx[:5]}... ({len(idx)} frames)")
        return np.stack([self.frames[i][0] for i in idx]), np.stack([self.frames[i][1] for i in idx])


def pipeline_frames(stack: Stack, size: int, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the whole pipeline (threads, queues, student + renderer + refiner) on a clip at full
    speed (offline: nothing is dropped)."""
    from engine.runtime.pipeline import Pipeline

    av = stack.avatar(size)
    sink = _Collect()
    Pipeline(ArraySource(audio), stack.stream(av.shape), av.renderer, [sink]).run()
    return sink.arrays()


# ------------------------------------------------------------------------------------------------
# Equivalence checks

def step_inputs(student, rows: np.ndarray, n_chunks: int, shape: np.ndarray | None, style: str = "speaking",
                seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tokens, noise) per chunk on the CPU, as a session makes them from the clip's speech rows."""
    from engine.audio.frontend import front_end
    from engine.models.sampling import conditions_for

    st = student
    enc = st.audio_encoder
    past, la = enc.context()
    front = front_end(enc.config)
    k, mpf = st.config.chunk, front.rows_per_frame
    need = n_chunks * k
    body = rows[: need * mpf]
    if len(body) < need * mpf:
        body = np.concatenate([body, front.pad_rows(need - len(body) // mpf)])
    padded = np.concatenate([front.pad_rows(past), body, front.pad_rows(la)]).astype(np.float32)
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.inference_mode():
        for c in range(n_chunks):
            a = c * k
            mel = torch.from_numpy(padded[a * mpf:(a + past + k + la) * mpf])[None]
            cond = conditions_for(st, enc(mel), shape, style)
            out.append((st.frame_tokens(cond), torch.randn(1, k, st.config.motion_dim, generator=gen)))
    return out


def run_steps(student, fn, inputs, shape: np.ndarray | None, device: str, precision: Precision,
              guidance: float = 3.0, style: str = "speaking") -> tuple[np.ndarray, dict]:
    """Chunk after chunk through a step function (its own KV cache): motion [frames, M] and the final cache."""
    from engine.models.sampling import conditions_for
    from engine.models.student import CACHE_NAMES
    from engine.models.student_step import run_step

    st = student
    with torch.inference_mode():
        cache = st.new_cache(conditions_for(st, torch.zeros(1, 1, st.config.dim, device=device), shape, style))
        g = torch.tensor([guidance], device=device)
        xs = []
        for tokens, noise in inputs:
            with _autocast(device, precision):
                x = run_step(fn, cache, tokens.to(device), noise.to(device), g)
            xs.append(st.from_model(x[0].float()).cpu().numpy())
        state = {n: t.float().cpu().numpy() for n, t in zip(CACHE_NAMES, cache.tensors())}
    return np.concatenate(xs), state


def check_student_step(ref: Stack, tgt: Stack, rows: np.ndarray, plan: Plan, shape: np.ndarray | None) -> dict:
    from engine.models.student_step import StudentStep

    inputs = step_inputs(ref.student, rows, plan.step_chunks, shape)
    ref_motion, ref_state = run_steps(ref.student, StudentStep(ref.student).eval(), inputs, shape, "cpu", "fp32")
    variants: dict[str, dict] = {}
    eager = StudentStep(tgt.student).eval()
    todo: list[tuple[str, Callable, Precision]] = [("eager_fp32", eager, "fp32"), ("eager_fp16_autocast", eager, "fp16")]
    if tgt.engine.step is not None:
        todo.append((f"backend_{tgt.backend}_fp32", tgt.engine.step, "fp32"))
    for name, fn, prec in todo:
        try:
            motion, state = run_steps(tgt.student, fn, inputs, shape, tgt.device, prec)
        except Exception as exc:
            log.exception("student step variant %s failed", name)
            variants[name] = {"pass": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        r = motion_diff(ref_motion, motion, prec)
        r["cache_max_abs"] = {k: float(np.abs(ref_state[k] - state[k]).max()) for k in ("win_k", "win_v", "sink_k")}
        variants[name] = r
    return {"chunks": plan.step_chunks, "frames": len(ref_motion), "reference": "cpu eager StudentStep, fp32",
            "variants": variants, "pass": all(v.get("pass", False) for v in variants.values())}


def check_session(ref: Stack, tgt: Stack, audio: np.ndarray, shape: np.ndarray | None,
                  prepared: np.ndarray | None) -> tuple[dict, np.ndarray]:
    from engine.backends.runners import StudentBackend

    ref_motion = session_motion(ref.stream(shape, StudentBackend(ref.student, "torch")), audio)
    got = session_motion(tgt.stream(shape), audio)
    out = {"frames": len(ref_motion), "reference": "cpu session, torch StudentStep, replayed speech features",
           "target": f"{tgt.device} session, student backend {tgt.backend}", **motion_diff(ref_motion, got, "fp32")}
    if prepared is not None:
        out["cpu_vs_prepared"] = {"note": "this run's CPU session (replayed features) against the prepare "
                                          "machine's CPU session on the live speech encoder",
                                  **motion_diff(prepared, ref_motion, "fp32")}
        out["pass"] = out["pass"] and out["cpu_vs_prepared"]["pass"]
    return out, ref_motion


def _spread(n_total: int, n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(int))


def check_renderer(ref: Stack, tgt: Stack, motion: np.ndarray, plan: Plan) -> tuple[dict, dict]:
    """Renderer alone (no refiner), one frame at a time as live; returns the CPU frames per size too."""
    out, cpu_frames = {}, {}
    idx = _spread(len(motion), plan.eq_render_frames)
    for size in plan.sizes:
        a = np.concatenate([ref.avatar(size).renderer.render(motion[i][None], refine=False) for i in idx])
        b = np.concatenate([tgt.avatar(size).renderer.render(motion[i][None], refine=False) for i in idx])
        out[str(size)] = frame_diff(a, b)
        cpu_frames[size] = a
    return {"sizes": out, "frames": idx.tolist(), "pass": all(v["pass"] for v in out.values())}, cpu_frames


def check_refiner(ref: Stack, tgt: Stack, motion: np.ndarray, rendered: dict, plan: Plan) -> dict:
    """The refiner on the same rendered CPU frames: CPU torch network against the target, fp32 and fp16."""
    from engine.models.loading import load_refiner
    from engine.render.refiner import FrameRefiner

    idx = _spread(len(motion), plan.eq_render_frames)
    mo = motion[idx]
    sizes: dict[str, dict] = {}
    folder = _refiner_dir(ref)
    for size in plan.sizes:
        av = ref.avatar(size)
        rig, framed = av.renderer.rig, av.framed
        cpu = FrameRefiner(load_refiner(folder, "cpu"), rig.frame, framed.landmarks, rig.basis, device="cpu")
        dev = FrameRefiner(load_refiner(folder, tgt.device), rig.frame, framed.landmarks, rig.basis, device=tgt.device)
        a = cpu.refine(rendered[size].copy(), mo)
        res = {}
        for prec in get_args(Precision):
            with _autocast(tgt.device, prec):
                b = dev.refine(rendered[size].copy(), mo)
            res[prec] = frame_diff(a, b)
        sizes[str(size)] = res
    return {"sizes": sizes, "frames": idx.tolist(), "crop_side": cpu.geometry.side,
            "pass": all(r["pass"] for s in sizes.values() for r in s.values())}


def _refiner_dir(stack: Stack) -> Path:
    from engine import paths

    return Path(stack.engine.render_config.refiner_model or paths.refiner_dir())


def check_pipeline(ref: Stack, tgt: Stack, audio: np.ndarray, size: int,
                   prepared_frames: np.ndarray | None, prepared_idx: np.ndarray | None) -> dict:
    a_img, a_mo = pipeline_frames(ref, size, audio)
    b_img, b_mo = pipeline_frames(tgt, size, audio)
    out: dict[str, Any]  # JSON report
    out = {"size": size, "frames": len(a_img), "reference": "cpu pipeline: torch StudentStep, torch renderer + refiner",
           "target": f"{tgt.device} pipeline: student backend {tgt.backend}, renderer + refiner on {tgt.device}",
           "motion": motion_diff(a_mo, b_mo, "fp32"), "frames_levels": frame_diff(a_img, b_img)}
    out["pass"] = out["motion"]["pass"] and out["frames_levels"]["pass"]
    if prepared_frames is not None and prepared_idx is not None and len(prepared_idx) and prepared_idx.max() < len(a_img):
        out["cpu_vs_prepared_frames"] = frame_diff(prepared_frames, a_img[prepared_idx])
    return out


# ------------------------------------------------------------------------------------------------
# Benchmarks

def bench_size(stack: Stack, size: int, base: np.ndarray, plan: Plan) -> dict:
    """One frame size on one stack: the pipeline at full speed, each stage alone, the live latency, memory."""
    from engine.eval.bench import _algorithmic_ms, _Probe, _rss_mb
    from engine.runtime.pipeline import Pipeline

    dev = stack.device
    av = stack.avatar(size)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out: dict = {"size": [size, size], "device": dev, "student_backend": stack.backend,
                 "refiner": av.renderer.refiner is not None,
                 "refiner_backend": av.renderer.refiner.backend if av.renderer.refiner is not None else None}
    # warm-up (first calls allocate; CUDA graphs record; onnxruntime plans)
    Pipeline(ArraySource(stream_audio(base, plan.warmup_seconds)), stack.stream(av.shape), av.renderer).run()
    gc.collect()
    rss0 = _rss_mb()
    probe = _Probe(25)
    t0 = time.perf_counter()
    stats = Pipeline(ArraySource(stream_audio(base, plan.bench_frames / FPS)), stack.stream(av.shape), av.renderer,
                     [probe]).run()
    wall = time.perf_counter() - t0
    s = stats.summary()
    out.update({"fps": stats.frames / wall, "rtf": wall / (stats.frames / FPS), "frames": stats.frames,
                "pipeline_ms_per_frame": {"student": s["student_ms_per_frame"], "renderer+refiner": s["render_ms_per_frame"]},
                "rss_mb": {"start": rss0, "end": _rss_mb()}})
    out["stages_ms"] = stage_times(stack, size, base, plan)
    # live: paced like a microphone, 20 ms pieces, newest-wins queues
    lstats = Pipeline(ArraySource(stream_audio(base, plan.latency_seconds), LIVE_PIECE, realtime=True),
                      stack.stream(av.shape), av.renderer).run()
    ls = lstats.summary()
    out["latency_ms"] = {"p50": ls["latency_ms_p50"], "p95": ls["latency_ms_p95"],
                         "processing_p50": ls["processing_ms_p50"], "processing_p95": ls["processing_ms_p95"],
                         "frames": ls["frames"], "dropped_frames": ls["dropped_frames"],
                         "dropped_audio_pieces": ls["dropped_audio_pieces"],
                         "algorithmic": _algorithmic_ms(stack.engine)}
    if dev == "cuda":
        out["gpu_memory_mb"] = {"max_allocated": torch.cuda.max_memory_allocated() / 2**20,
                                "max_reserved": torch.cuda.max_memory_reserved() / 2**20}
    return out


def stage_times(stack: Stack, size: int, base: np.ndarray, plan: Plan) -> dict:
    """Each stage alone, one call at a time as live: student per chunk (40 ms pushes), renderer per frame,
    refiner per frame (ms; the device is synchronised before each clock read)."""
    dev = stack.device
    av = stack.avatar(size)
    k = stack.student.config.chunk
    audio = stream_audio(base, (plan.stage_frames + 6 * k) / FPS)
    sess = stack.stream(av.shape)
    chunk_t, pieces = [], []
    with torch.inference_mode():
        for i in range(0, len(audio), PIECE):
            _sync(dev)
            t0 = time.perf_counter()
            mo = sess.push_audio(audio[i:i + PIECE])
            _sync(dev)
            if len(mo):
                chunk_t.append(time.perf_counter() - t0)
                pieces.append(mo)
    chunk_t = chunk_t[5:]  # warm-up chunks
    motion = np.concatenate(pieces)
    rend, ref = [], []
    r = av.renderer
    for i in range(min(plan.stage_frames, len(motion))):
        m = motion[i][None]
        _sync(dev)
        t0 = time.perf_counter()
        img = r.render(m, refine=False)
        _sync(dev)
        t1 = time.perf_counter()
        if r.refiner is not None:
            r.refiner.refine(img, m)
            _sync(dev)
        t2 = time.perf_counter()
        rend.append(t1 - t0)
        ref.append(t2 - t1)
    out = {"student_per_chunk": _pct(chunk_t), "student_per_frame_mean": _pct(chunk_t)["mean"] / k,
           "renderer_per_frame": _pct(rend)}
    if r.refiner is not None:
        out["refiner_per_frame"] = _pct(ref)
    return out


def ratios(dev: dict, cpu: dict) -> dict:
    """Device figures over the CPU baseline's (speed-ups > 1 mean the device is faster)."""
    def q(a, b):
        return float(a / b) if a and b and math.isfinite(a) and math.isfinite(b) else None

    out = {"fps_speedup": q(dev.get("fps"), cpu.get("fps")),
           "latency_p50_ratio": q(dev["latency_ms"]["p50"], cpu["latency_ms"]["p50"]),
           "latency_p95_ratio": q(dev["latency_ms"]["p95"], cpu["latency_ms"]["p95"])}
    for stage in ("student_per_chunk", "renderer_per_frame", "refiner_per_frame"):
        if stage in dev["stages_ms"] and stage in cpu["stages_ms"]:
            out[f"{stage}_speedup"] = q(cpu["stages_ms"][stage]["mean"], dev["stages_ms"][stage]["mean"])
    return out


def long_run(stack: Stack, size: int, base: np.ndarray, seconds: float, interval: float) -> dict:
    """The pipeline at full speed on looped speech for `seconds` of wall time (stopped as live is): fps per
    interval, resident memory and GPU memory over time."""
    from engine.eval.bench import _rss_mb
    from engine.runtime.pipeline import Pipeline
    from engine.sinks.bus import FrameBus

    av = stack.avatar(size)
    src = ArraySource(base, loop=True)
    pipe = Pipeline(src, stack.stream(av.shape), av.renderer, [FrameBus()])
    speech = getattr(stack.replay, "config", None)
    align = stack.student.config.chunk * PIECE  # ends prepared for every chunk boundary of the loop
    samples: list[dict[str, Any]] = []

    def sample(t: float) -> None:
        cm = _cuda_mem()
        samples.append({"t": round(t, 3), "frames": pipe.stats.frames, "rss_mb": round(_rss_mb(), 1),
                        "gpu_allocated_mb": round(cm["allocated_mb"], 1) if cm else None})

    pipe.start()
    t0 = time.monotonic()
    try:
        sample(0.0)
        while pipe.running:
            left = seconds - (time.monotonic() - t0)
            if left <= 0:
                break
            time.sleep(min(interval, left))
            sample(time.monotonic() - t0)
        src.halt(align, (speech.window if speech is not None else 0) * PIECE)
        end = time.monotonic() + 60.0
        while pipe.running and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        if pipe.running:
            log.warning("Long run: the pipeline did not end by itself within 60 s of the halt; stopping it")
            pipe.stop()
        pipe.join()
    wall = time.monotonic() - t0
    fps = [(b["frames"] - a["frames"]) / max(b["t"] - a["t"], 1e-9) for a, b in zip(samples, samples[1:])]
    settled = fps[1:] if len(fps) > 2 else fps
    mem = samples[1:] if len(samples) > 2 else samples
    out = {"size": [size, size], "seconds": round(wall, 2), "frames": pipe.stats.frames,
           "audio_seconds": pipe.stats.frames / FPS, "fps": pipe.stats.frames / wall, "interval_s": interval,
           "fps_per_interval": [round(f, 2) for f in fps], "samples": samples,
           "fps_settled": {"mean": float(np.mean(settled)) if settled else None,
                           "min": float(np.min(settled)) if settled else None,
                           "max": float(np.max(settled)) if settled else None,
                           "cv": float(np.std(settled) / np.mean(settled)) if settled and np.mean(settled) > 0 else None},
           "rss_growth_mb_after_first_interval": round(mem[-1]["rss_mb"] - mem[0]["rss_mb"], 1),
           "dropped_frames": pipe.stats.dropped_frames}
    if samples[0]["gpu_allocated_mb"] is not None:
        out["gpu_allocated_growth_mb_after_first_interval"] = round(mem[-1]["gpu_allocated_mb"] - mem[0]["gpu_allocated_mb"], 1)
        out["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if len(mem) > 2:
        t = np.array([m["t"] for m in mem])
        out["rss_slope_mb_per_1000s"] = round(float(np.polyfit(t, [m["rss_mb"] for m in mem], 1)[0]) * 1000, 2)
    return out


# ------------------------------------------------------------------------------------------------
# prepare

def _bench_base(chunk: int, seconds: float | None = None) -> np.ndarray:
    """The benchmark sentence (espeak-ng, as `talkcam bench`) at 16 kHz, cut to whole chunks: repeated, the
    speech windows recur with its period, so a long looped run needs only one period of them."""
    from engine.audio.io import resample
    from engine.data.tts import EspeakTTS
    from engine.eval.bench import BENCH_TEXT

    utt = EspeakTTS().synthesize(BENCH_TEXT)
    a = resample(utt.audio, utt.sample_rate, SAMPLE_RATE)
    if seconds is not None:
        a = a[: int(seconds * SAMPLE_RATE)]
    period = chunk * PIECE
    if len(a) < period:
        raise RuntimeError(f"the benchmark speech is only {len(a)} samples long")
    return np.ascontiguousarray(a[: len(a) // period * period], np.float32)


def prepare(folder: Path, plan: Plan, portrait: Path, wheels: bool, student_backend: StudentBackendName,
            refiner_backend: RefinerBackendName) -> dict:
    """Write the prepared folder (see the module's doc). Returns the manifest."""
    from engine.audio.frontend import front_end
    from engine.audio.speech import StreamingSpeechFeatures, shared_encoder
    from engine.backends.runners import StudentBackend
    from engine.face import load_portrait

    folder.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST, SPEECH_TABLE, REFERENCE, CPU_BENCH, AUDIO):
        (folder / stale).unlink(missing_ok=True)
    cache = folder / AVATAR_CACHE
    log.info("Portrait %s", portrait)
    load_portrait(portrait, cache_dir=cache)  # landmarks (MediaPipe) into the avatar cache the device reads
    ref = Stack("cpu", "torch", "torch", cache, portrait, None)
    st = ref.student
    front = front_end(st.audio_encoder.config)
    k = st.config.chunk
    base = _bench_base(k, plan.audio_seconds)
    np.save(folder / AUDIO, base)
    manifest: dict = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "plan": dataclasses.asdict(plan), "portrait": _rel(portrait),
                      "audio": {"samples": len(base), "seconds": len(base) / SAMPLE_RATE},
                      "student": {"chunk": k, "window": st.config.window, "features": front.kind},
                      "environment": environment("cpu")}
    replay = None
    if front.kind == "speech":
        assert front.speech is not None  # the speech front end's window geometry
        log.info("Speech windows (the live encoder)")
        rec = RecordingEncoder(shared_encoder(front.speech.threads), front.speech)
        streams = {plan.eq_seconds, plan.warmup_seconds, plan.bench_frames / FPS, plan.latency_seconds,
                   (plan.stage_frames + 6 * k) / FPS}
        for seconds in sorted(streams):  # each stream as the run pushes it, then its end (padding)
            sf = StreamingSpeechFeatures(front.speech, encoder=rec)
            sf.push(stream_audio(base, seconds))
            sf.finish()
        period = k * PIECE
        for phase in range(len(base) // period):  # looped, ended at any chunk boundary of the loop (long run)
            sf = StreamingSpeechFeatures(front.speech, encoder=rec)
            sf.push(np.resize(base, len(base) + phase * period))
            sf.finish()
        rec.save(folder / SPEECH_TABLE)
        replay = ReplayEncoder.load(folder / SPEECH_TABLE, front.speech)
        manifest["speech"] = {"encoder": "Whisper tiny.en (CTranslate2 int8, CPU)", "windows": len(rec.table),
                              "window_frames": front.speech.window, "chunk": front.speech.chunk,
                              "lookahead": front.speech.lookahead,
                              "encoder_ms_per_window_cpu": _pct(rec.encode_s)}
        log.info("Speech windows prepared: %d (%.1f ms each on this CPU)", len(rec.table),
                 manifest["speech"]["encoder_ms_per_window_cpu"]["mean"])
    log.info("CPU references")
    # CPU references: the session on the LIVE encoder (the replay must reproduce it), and frames
    eq = stream_audio(base, plan.eq_seconds)
    av0 = ref.avatar(plan.sizes[0])
    live = StudentStream(st, ref.session_config, None, ref.engine.models.schedule, av0.shape, ref.engine.style,
                          StudentBackend(st, "torch"))
    ref_motion = session_motion(live, eq)
    replayed = ReplayStream(st, ref.session_config, None, ref.engine.models.schedule, av0.shape, ref.engine.style,
                             StudentBackend(st, "torch"), encoder=replay) if replay is not None else None
    if replayed is not None:
        check = motion_diff(ref_motion, session_motion(replayed, eq))
        manifest["replay_check"] = check
        if check["max_abs"] != 0.0:
            raise RuntimeError(f"replayed speech features do not reproduce the live encoder's motion: {check}")
    ref.replay = replay
    ref_img, _ = pipeline_frames(ref, plan.sizes[0], eq)
    idx = _spread(len(ref_img), plan.reference_frames)
    np.savez_compressed(folder / REFERENCE, motion=ref_motion, frames=ref_img[idx], frame_index=idx,
                        frame_size=np.array(plan.sizes[0]))
    # the CPU baseline: the product's CPU backends, the same measurements as the device's
    same = (student_backend, refiner_backend) == ("torch", "torch")  # the reference stack is that already
    base_stack = ref if same else Stack("cpu", student_backend, refiner_backend, cache, portrait, replay)
    bench: dict[str, Any] = {"device": "cpu", "environment": environment("cpu"), "sizes": {}}
    for size in plan.sizes:
        log.info("CPU baseline at %dx%d", size, size)
        bench["sizes"][str(size)] = bench_size(base_stack, size, base, plan)
    (folder / CPU_BENCH).write_text(json.dumps(bench, indent=1))
    manifest["cpu_baseline"] = {"student_backend": base_stack.backend, "refiner_backend": refiner_backend}
    manifest["wheels"] = download_wheels(folder / WHEELS) if wheels else []
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def download_wheels(dest: Path) -> list[str]:
    """The pinned (installed) versions of WHEEL_PINS as py3 wheels for the device's Python 3.12."""
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pins = [f"{name}=={version(name)}" for name in WHEEL_PINS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "-q", "-d", str(dest), *pins]
    log.info("Downloading wheels: %s", " ".join(pins))
    subprocess.run(cmd, check=True)
    return sorted(p.name for p in dest.glob("*.whl"))


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


# ------------------------------------------------------------------------------------------------
# run

def run(folder: Path, out_dir: Path, device: Device, student_backend: StudentBackendName,
        long_run_seconds: float | None, budget_seconds: float | None, sizes: list[int] | None = None) -> dict:
    """The check on `device` against the CPU of the same machine; returns the report dict (also written)."""
    budget = Budget(budget_seconds)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch here (use --device cpu for the dry run)")
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("schema") != SCHEMA:
        raise SystemExit(f"{folder / MANIFEST} is from another version of this check: prepare again")
    plan = Plan(**manifest["plan"])
    if sizes:
        missing = [s for s in sizes if s not in plan.sizes]
        if missing:
            raise SystemExit(f"--sizes {missing} were not prepared (prepared: {plan.sizes})")
        plan.sizes = list(sizes)
    portrait = Path(manifest["portrait"])
    portrait = portrait if portrait.is_absolute() else REPO / portrait
    cache = folder / AVATAR_CACHE
    base = np.load(folder / AUDIO)
    with np.load(folder / REFERENCE) as z:
        reference = {k: z[k] for k in z.files}
    cpu_bench = json.loads((folder / CPU_BENCH).read_text())
    data: dict = {"schema": SCHEMA, "device": device, "dry_run": device == "cpu",
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "budget_seconds": budget_seconds, "plan": dataclasses.asdict(plan),
                  "tolerances": {"motion_max_abs": MOTION_TOL, "frame_max_levels": FRAME_TOL_LEVELS},
                  "prepared": {k: manifest.get(k) for k in ("created", "speech", "replay_check", "cpu_baseline", "wheels")},
                  "prepared_environment": manifest.get("environment"), "equivalence": {}, "bench": {}}
    data["prepared"]["folder"] = _rel(folder)

    def checkpoint(d: dict) -> None:
        d["wall_seconds"] = round(budget.elapsed(), 1)
        d["complete"] = False
        write_outputs(out_dir, d)

    rep = Report(data, checkpoint)
    data["environment"] = rep.section("environment", lambda: environment(device)) or {}
    from engine.audio.frontend import front_end

    ref = Stack("cpu", "torch", "torch", cache, portrait, None)
    replay = None
    if manifest["student"]["features"] == "speech":
        replay = ReplayEncoder.load(folder / SPEECH_TABLE, front_end(ref.student.audio_encoder.config).speech)
        ref.replay = replay
        data["speech_features"] = ("replayed: Whisper tiny.en's encoder ran on the prepare machine's CPU "
                                   "(CTranslate2 int8); the streaming front end, session, student, renderer and "
                                   "refiner ran here")
    tgt_backend = student_backend
    tgt = rep.section(f"load {device} stack", lambda: Stack(device, tgt_backend, "torch", cache, portrait, replay))
    eq = stream_audio(base, plan.eq_seconds)
    eqd = data["equivalence"]
    if tgt is not None:
        data["target"] = {"student_backend": tgt.backend, "student_backend_requested": student_backend,
                          "fallbacks": tgt.engine.step.fallbacks if tgt.engine.step is not None else []}
        shape = ref.avatar(plan.sizes[0]).shape
        from engine.audio.speech import StreamingSpeechFeatures

        def rows() -> np.ndarray:
            if replay is None:
                return front_end(ref.student.audio_encoder.config).offline(eq, len(eq) // PIECE)
            sf = StreamingSpeechFeatures(replay.config, encoder=replay)
            return np.concatenate([sf.push(eq), sf.finish()])

        eqd["student_step"] = rep.section("student chunk step", lambda: check_student_step(ref, tgt, rows(), plan, shape))
        got = rep.section("session", lambda: check_session(ref, tgt, eq, shape, reference.get("motion")))
        motion = None
        if got is not None:
            eqd["session"], motion = got
        if motion is None:
            motion = reference["motion"]
        got = rep.section("renderer", lambda: check_renderer(ref, tgt, motion, plan))
        rendered = None
        if got is not None:
            eqd["renderer"], rendered = got
        if rendered is not None:
            eqd["refiner"] = rep.section("refiner", lambda: check_refiner(ref, tgt, motion, rendered, plan))
        eqd["pipeline"] = rep.section("pipeline", lambda: check_pipeline(
            ref, tgt, eq, plan.sizes[0],
            reference.get("frames") if int(reference.get("frame_size", -1)) == plan.sizes[0] else None,
            reference.get("frame_index")))
        del ref
        gc.collect()
        for size in plan.sizes:
            def one(size=size) -> dict:
                dev = bench_size(tgt, size, base, plan)
                cpu = cpu_bench["sizes"].get(str(size))
                return {"device": dev, "cpu_baseline": cpu, "ratios": ratios(dev, cpu) if cpu else None}

            data["bench"][str(size)] = rep.section(f"bench {size}x{size}", one)
        requested = long_run_seconds if long_run_seconds is not None else (
            plan.long_run_seconds if device == "cuda" else DRY_PLAN.long_run_seconds)
        reserve = 20.0
        seconds = min(requested, budget.left() - reserve)
        data["long_run_requested_seconds"] = requested
        if seconds < min(requested, 2 * plan.long_run_interval):
            data["long_run"] = {"skipped": f"{budget.left():.0f} s of the budget left"}
            log.warning("Long run skipped: %.0f s of the budget left", budget.left())
        else:
            data["long_run"] = rep.section("long run", lambda: long_run(tgt, plan.sizes[0], base, seconds,
                                                                        min(plan.long_run_interval, seconds / 3)))
    if tgt is not None and tgt.engine.step is not None:
        data["target"]["student_backend_at_end"] = tgt.engine.step.name
        data["target"]["fallbacks"] = list(tgt.engine.step.fallbacks)
    rep.result()
    data["complete"] = True
    data["wall_seconds"] = round(budget.elapsed(), 1)
    write_outputs(out_dir, data)
    return data


# ------------------------------------------------------------------------------------------------
# report

def _f(x, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and abs(x) < 10 ** -digits:
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def markdown(data: dict) -> str:
    dev = data["device"]
    env = data.get("environment", {})
    lines = [f"# GPU check: {dev}" + (" (DRY RUN on the CPU: plumbing proof, not GPU figures)" if data["dry_run"] else ""),
             "",
             f"- result: **{'PASS' if data['pass'] else 'FAIL'}** (equivalence {'pass' if data['equivalence_pass'] else 'FAIL'}, "
             f"{len(data['errors'])} errors), {data.get('wall_seconds')} s"
             + ("" if data.get("complete") else " — INCOMPLETE: the run was cut short after this point"),
             f"- machine: {env.get('gpu', env.get('cpu'))}, torch {env.get('torch')}, CUDA {env.get('cuda', '–')}, "
             f"{env.get('cpu_count')} CPU cores",
             f"- student backend: {data.get('target', {}).get('student_backend')} (at the end: "
             f"{data.get('target', {}).get('student_backend_at_end', '–')}; fallbacks: "
             f"{'; '.join(data.get('target', {}).get('fallbacks', [])) or 'none'}); the product's `auto` here would "
             f"take {(env.get('student_backends_available') or ['?'])[0]} (onnxruntime providers: "
             f"{', '.join(env.get('onnxruntime_providers', [])) or '–'}); refiner and renderer: torch on {dev}",
             f"- speech features: {data.get('speech_features', 'computed here')}",
             f"- tolerances: motion {MOTION_TOL['fp32']} (fp32) / {MOTION_TOL['fp16']} (fp16), frames {FRAME_TOL_LEVELS} levels",
             "", "## Equivalence (reference: CPU of this machine)", "",
             "| check | compared | max diff | tolerance | pass |", "|---|---|---|---|---|"]
    eq = data["equivalence"]
    ss = eq.get("student_step") or {}
    for name, v in (ss.get("variants") or {}).items():
        lines.append(f"| student step | {name}, {ss.get('frames')} frames | {_f(v.get('max_abs'), 6)} | {v.get('tolerance')} | "
                     f"{v.get('pass')} |")
    s = eq.get("session") or {}
    if s:
        lines.append(f"| session | motion, {s.get('frames')} frames | {_f(s.get('max_abs'), 6)} | {s.get('tolerance')} | {s.get('pass')} |")
        if "cpu_vs_prepared" in s:
            p = s["cpu_vs_prepared"]
            lines.append(f"| session (CPU here vs prepare machine, live encoder) | motion | {_f(p.get('max_abs'), 6)} | "
                         f"{p.get('tolerance')} | {p.get('pass')} |")
    for size, v in ((eq.get("renderer") or {}).get("sizes") or {}).items():
        lines.append(f"| renderer {size}² | {v.get('frames')} frames | {v.get('max_levels')} levels (mean {_f(v.get('mean_levels'), 3)}) | "
                     f"{FRAME_TOL_LEVELS} | {v.get('pass')} |")
    for size, v in ((eq.get("refiner") or {}).get("sizes") or {}).items():
        for prec, r in v.items():
            lines.append(f"| refiner {size}² {prec} | {r.get('frames')} frames | {r.get('max_levels')} levels (mean "
                         f"{_f(r.get('mean_levels'), 3)}) | {FRAME_TOL_LEVELS} | {r.get('pass')} |")
    p = eq.get("pipeline") or {}
    if p:
        lines.append(f"| pipeline {p['size']}² motion | {p['frames']} frames | {_f(p['motion'].get('max_abs'), 6)} | "
                     f"{p['motion'].get('tolerance')} | {p['motion'].get('pass')} |")
        lines.append(f"| pipeline {p['size']}² frames | {p['frames']} frames | {p['frames_levels'].get('max_levels')} levels | "
                     f"{FRAME_TOL_LEVELS} | {p['frames_levels'].get('pass')} |")
    lines += ["", f"## Benchmark ({dev}, beside the CPU baseline from the prepare machine)", "",
              "| size | | fps | RTF | student ms/chunk | renderer ms/frame | refiner ms/frame | latency p50 / p95 ms | "
              "GPU max allocated MB |", "|---|---|---|---|---|---|---|---|---|"]
    for size, b in data["bench"].items():
        if not b:
            continue
        for label, r in (("device", b.get("device")), ("cpu baseline", b.get("cpu_baseline"))):
            if not r:
                continue
            st = r.get("stages_ms", {})
            lines.append(f"| {size}² | {label} ({r.get('student_backend')}) | {_f(r.get('fps'))} | {_f(r.get('rtf'), 2)} | "
                         f"{_f(st.get('student_per_chunk', {}).get('mean'), 2)} | {_f(st.get('renderer_per_frame', {}).get('mean'), 2)} | "
                         f"{_f(st.get('refiner_per_frame', {}).get('mean'), 2)} | {_f(r['latency_ms']['p50'], 0)} / "
                         f"{_f(r['latency_ms']['p95'], 0)} | {_f((r.get('gpu_memory_mb') or {}).get('max_allocated'))} |")
        if b.get("ratios"):
            lines.append(f"| {size}² | ratio | {_f(b['ratios'].get('fps_speedup'), 2)}× | | "
                         f"{_f(b['ratios'].get('student_per_chunk_speedup'), 2)}× | {_f(b['ratios'].get('renderer_per_frame_speedup'), 2)}× | "
                         f"{_f(b['ratios'].get('refiner_per_frame_speedup'), 2)}× | {_f(b['ratios'].get('latency_p50_ratio'), 2)} / "
                         f"{_f(b['ratios'].get('latency_p95_ratio'), 2)} | |")
    lr = data.get("long_run") or {}
    lines += ["", "## Long run", ""]
    if "skipped" in lr:
        lines.append(f"Skipped: {lr['skipped']}.")
    elif lr:
        fs = lr.get("fps_settled", {})
        lines.append(f"{lr['seconds']} s at {lr['size'][0]}², {lr['frames']} frames ({_f(lr['audio_seconds'])} s of audio), "
                     f"{_f(lr['fps'])} fps; per {_f(lr['interval_s'], 2)} s after the first: mean {_f(fs.get('mean'))}, min "
                     f"{_f(fs.get('min'))}, max {_f(fs.get('max'))}, cv {_f(fs.get('cv'), 3)}; resident memory growth "
                     f"{lr['rss_growth_mb_after_first_interval']} MB, GPU allocated growth "
                     f"{lr.get('gpu_allocated_growth_mb_after_first_interval', '–')} MB.")
    if data["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e['section']}: {e['error']}" for e in data["errors"]]
    lines += ["", "Every figure is in gpu-check.json; the run's log is log.txt. TensorRT is not installed on the device "
              "image (and cannot be installed there), so the TensorRT backend is not measured.", ""]
    return "\n".join(lines)


def write_outputs(out_dir: Path, data: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu-check.json").write_text(json.dumps(_jsonable(data), indent=1, allow_nan=True))
    (out_dir / "report.md").write_text(markdown(data))
    log.debug("Wrote %s and %s", out_dir / "gpu-check.json", out_dir / "report.md")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


# ------------------------------------------------------------------------------------------------
# command line

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.eval.gpu_check", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="on a CPU machine with the full install: write the prepared folder")
    pp.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    pp.add_argument("--dry-run", action="store_true", help="tiny sizes and short streams (the CI test)")
    pp.add_argument("--sizes", type=int, nargs="+", default=None)
    pp.add_argument("--portrait", type=Path, default=None)
    pp.add_argument("--no-wheels", action="store_true", help="do not download the device's wheels")
    pp.add_argument("--student-backend", choices=get_args(StudentBackendName), default="auto",
                    help="the CPU baseline's student backend (default: the product's auto)")
    pp.add_argument("--refiner-backend", choices=get_args(RefinerBackendName), default="auto")
    pr = sub.add_parser("run", help="the check on --device cuda, or a dry run on --device cpu")
    pr.add_argument("--device", choices=get_args(Device), required=True)
    pr.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    pr.add_argument("--out", type=Path, default=None, help="where gpu-check.json, report.md, log.txt go")
    pr.add_argument("--student-backend", choices=get_args(StudentBackendName), default="torch",
                    help="the device's student backend (torch: CUDA graphs via torch.compile on CUDA)")
    pr.add_argument("--long-run-seconds", type=float, default=None)
    pr.add_argument("--budget-seconds", type=float, default=None,
                    help="wall-clock budget; the long run is shortened to fit (default: 420 on cuda, none on cpu)")
    pr.add_argument("--sizes", type=int, nargs="+", default=None, help="a subset of the prepared sizes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    for noisy in ("PIL", "matplotlib", "onnxscript", "torch.onnx", "onnx_ir", "torch._dynamo", "torch._inductor"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "prepare":
        from engine import paths

        plan = dataclasses.replace(DRY_PLAN) if args.dry_run else Plan()
        if args.sizes:
            plan.sizes = list(args.sizes)
        t0 = time.monotonic()
        m = prepare(args.dir, plan, args.portrait or paths.default_portrait(), not args.no_wheels,
                    args.student_backend, args.refiner_backend)
        size = sum(f.stat().st_size for f in args.dir.rglob("*") if f.is_file()) / 2**20
        print(f"prepared {args.dir} in {time.monotonic() - t0:.0f} s: {m.get('speech', {}).get('windows', 0)} speech "
              f"windows, sizes {plan.sizes}, {len(m['wheels'])} wheels, {size:.1f} MiB")
        return 0
    out = args.out or args.dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(out / "log.txt", mode="w", encoding="utf-8")
    fh.setFormatter(fmt)
    root.addHandler(fh)
    budget = args.budget_seconds if args.budget_seconds is not None else (420.0 if args.device == "cuda" else None)
    try:
        data = run(args.dir, out, args.device, args.student_backend, args.long_run_seconds, budget, args.sizes)
    finally:
        root.removeHandler(fh)
        fh.close()
    fps = {s: round(b["device"]["fps"], 1) for s, b in data["bench"].items() if b}
    print(f"gpu-check {args.device}: {'PASS' if data['pass'] else 'FAIL'} (equivalence "
          f"{'pass' if data['equivalence_pass'] else 'FAIL'}, {len(data['errors'])} errors), fps {fps}, "
          f"{data['wall_seconds']} s -> {out}")
    return 0 if data["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
