"""Runtime backends for the networks the live path runs per chunk and per frame.

Student (`student_runner`, the chunk step with its KV cache as explicit inputs/outputs,
`engine.models.student_step`):
- `torch`: eager; on CUDA compiled with torch.compile(mode="reduce-overhead"), i.e. CUDA graphs;
- `onnxruntime`: the exported step on the CPU (or CUDA) execution provider (7x faster than eager on a
  2-core CPU: 2.0 against 13.3 ms per chunk);
- `tensorrt`: an FP16 engine built from the same ONNX file (`engine.backends.tensorrt`), cached per GPU
  and TensorRT version.
"auto" takes the best available (tensorrt on an NVIDIA GPU with TensorRT, else onnxruntime, else
torch). Any failure (export, engine build, GPU out of memory, even mid-stream) falls back to the next
one with the reason logged. The exported step has fixed chunk shapes: a session running shorter chunks
than the model's (the low-latency mode) gets the same backend built for its chunk
(`StudentBackend.for_chunk`: one more export, the first time).

Refiner (`refiner_runner`): the network itself (torch) or an onnxruntime session over its export.
ONNX exports are cached on disk by the weights' digest, so each runs once per model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch

from engine.backends import REFINER_BACKENDS, STUDENT_BACKENDS

log = logging.getLogger(__name__)

BACKENDS = REFINER_BACKENDS


def _digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    config = cast(Mapping[str, Any], net.config)  # diffusers' config (torch types attributes as submodules)
    h.update(repr(sorted(dict(config).items())).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def _cached_onnx(file: Path, export) -> Path:
    """`file` (named by the weights' digest), exported by `export(path)` the first time only."""
    if not file.exists():
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.onnx")  # concurrent exports never share a file
        export(tmp)
        tmp.replace(file)
    return file


def refiner_runner(net, backend: str = "auto", cache_dir: Path | None = None, threads: int = 0):
    """The refiner network on `backend` (auto, torch, onnxruntime)."""
    if backend not in BACKENDS:
        raise ValueError(f"--refiner-backend is one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return net
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        if backend == "onnxruntime":
            raise ValueError("--refiner-backend onnxruntime needs the onnxruntime package (pip install "
                             "onnxruntime)") from exc
        return net
    from engine import paths
    from engine.backends.export import OnnxRefiner, export_refiner

    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "onnx"
    try:
        file = _cached_onnx(folder / f"refiner-{_digest(net)}.onnx", lambda tmp: export_refiner(net, tmp))
        return OnnxRefiner(file, net.config, threads=threads or torch.get_num_threads())
    except Exception as exc:
        if backend == "onnxruntime":
            raise
        log.warning("Refiner: onnxruntime unavailable (%s: %s); running it with torch", type(exc).__name__, exc)
        return net


def available_student_backends(device: str = "cpu") -> list[str]:
    """Best first."""
    out = []
    if str(device).startswith("cuda"):
        try:
            import tensorrt  # noqa: F401

            out.append("tensorrt")
        except ImportError:
            pass
    try:
        import onnxruntime  # noqa: F401

        out.append("onnxruntime")
    except ImportError:
        pass
    return out + ["torch"]


def _student_onnx(student, steps: int, folder: Path, chunk: int | None = None) -> Path:
    from engine.backends.export import export_student_step

    other = chunk is not None and chunk != student.config.chunk  # a low-latency session's chunk: its own file
    return _cached_onnx(folder / f"student-{_digest(student)}-s{steps}{f'-c{chunk}' if other else ''}.onnx",
                        lambda tmp: export_student_step(student, tmp, steps, chunk=chunk))


def _student_fn(student, backend: str, steps: int, folder: Path, threads: int, chunk: int | None = None):
    """The chunk-step callable for one backend (raises when it cannot be made), for chunks of `chunk` frames
    (default: the model's)."""
    from engine.models.student_step import INPUT_NAMES, OUTPUT_NAMES, StudentStep

    dev = next(student.parameters()).device
    if backend == "torch":
        step = StudentStep(student, steps).eval()
        if dev.type == "cuda":
            compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)

            def run_compiled(*args):
                # CUDA-graph outputs live in the graph's memory pool and are overwritten by its next replay; the
                # stream keeps them as its cache and may read them in eager code (a short chunk, a fallback):
                # it gets its own copies (a few small tensors per chunk)
                return tuple(t.clone() for t in compiled(*args))

            return run_compiled
        return step
    onnx_file = _student_onnx(student, steps, folder, chunk)
    if backend == "onnxruntime":
        from engine.backends.export import onnx_session

        sess = onnx_session(onnx_file, threads or torch.get_num_threads(), cuda=dev.type == "cuda")

        def run(*args):
            out = sess.run(None, {n: a.detach().cpu().numpy() for n, a in zip(INPUT_NAMES, args)})
            return tuple(torch.from_numpy(o).to(dev) for o in out)

        return run
    if backend == "tensorrt":
        from engine.backends.tensorrt import TrtModule, build_engine

        if dev.type != "cuda":
            raise RuntimeError("TensorRT needs the student on an NVIDIA GPU")
        return TrtModule(build_engine(onnx_file, folder / "tensorrt"), INPUT_NAMES, OUTPUT_NAMES)
    raise ValueError(f"unknown student backend {backend!r}")


class StudentBackend:
    """The student's chunk step on the best backend that works, with fallbacks. Call like the step; the
    first failure of a backend (at build or mid-stream, e.g. GPU out of memory) logs why and moves on to
    the next one; the cache tensors passed in are unchanged by a failed call, so the stream continues."""

    def __init__(self, student, backend: str = "auto", steps: int = 1, cache_dir: Path | None = None,
                 threads: int = 0, chunk: int | None = None) -> None:
        from engine import paths

        if backend not in STUDENT_BACKENDS:
            raise ValueError(f"--backend is one of {', '.join(STUDENT_BACKENDS)}, got {backend!r}")
        dev = next(student.parameters()).device
        avail = available_student_backends(str(dev))
        if backend == "auto":
            order = avail
        elif backend in avail:
            order = [backend] + [b for b in avail if b != backend]
        else:
            raise ValueError(f"--backend {backend} is not available here (available: {', '.join(avail)}); "
                             + ("TensorRT needs an NVIDIA GPU and the tensorrt package" if backend == "tensorrt"
                                else "pip install onnxruntime"))
        self.student, self.steps, self.threads = student, steps, threads
        self.chunk = int(chunk or student.config.chunk)
        """Frames per chunk the step takes (the exported graphs have fixed chunk shapes)."""
        self._siblings: dict[int, StudentBackend] = {self.chunk: self}
        self.folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "onnx"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.order = order
        self.name = ""
        self.fn = None
        self.fallbacks: list[str] = []
        self._next()

    def _next(self, reason: str = "") -> None:
        while self.order:
            name = self.order.pop(0)
            try:
                self.fn = _student_fn(self.student, name, self.steps, self.folder, self.threads, self.chunk)
            except Exception as exc:  # try the next backend, and say why
                log.warning("Student backend %s unavailable (%s: %s); trying the next one", name, type(exc).__name__, exc)
                self.fallbacks.append(f"{name}: {exc}")
                continue
            if self.name:
                log.warning("Student: %s failed (%s); now running on %s", self.name, reason, name)
            self.name = name
            log.info("Student backend: %s", name)
            return
        raise RuntimeError(f"no student backend works: {'; '.join(self.fallbacks)}")

    def for_chunk(self, chunk: int) -> StudentBackend:
        """The same backend for chunks of `chunk` frames (a low-latency session's): built once (an ONNX export
        the first time, cached on disk like the model's own), starting from the backend this one runs on."""
        if chunk not in self._siblings:
            log.info("Student step for chunks of %d frames (%s)", chunk, self.name)
            sib = StudentBackend(self.student, self.name, self.steps, self.folder, self.threads, chunk)
            sib._siblings = self._siblings
            self._siblings[chunk] = sib
        return self._siblings[chunk]

    def __call__(self, *args):
        while True:
            try:
                return self.fn(*args)
            except Exception as exc:  # GPU out of memory, a broken engine: fall back and retry this chunk
                if not self.order:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.fallbacks.append(f"{self.name}: {exc}")
                self._next(f"{type(exc).__name__}: {exc}")
