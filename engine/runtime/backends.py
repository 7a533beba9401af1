"""Runtime backends for the networks the live path runs per frame (torch eager or onnxruntime).

`refiner_runner` returns something called like a RefinerNet: the network itself (torch), or an
onnxruntime session over its ONNX export, cached on disk by the weights' digest so the export runs
once per model. "auto" takes onnxruntime when it is installed (about 1.6x faster on a CPU) and
falls back to torch, logging why, if the export or the session fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")


def _digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(sorted(dict(net.config).items())).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


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
    from engine.runtime.export import OnnxRefiner, export_refiner

    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "onnx"
    file = folder / f"refiner-{_digest(net)}.onnx"
    try:
        if not file.exists():
            tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.onnx")  # concurrent exports never share a file
            export_refiner(net, tmp)
            tmp.replace(file)
        return OnnxRefiner(file, net.config, threads=threads or torch.get_num_threads())
    except Exception as exc:
        if backend == "onnxruntime":
            raise
        log.warning("Refiner: onnxruntime unavailable (%s: %s); running it with torch", type(exc).__name__, exc)
        return net
