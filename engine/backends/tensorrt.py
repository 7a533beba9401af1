"""TensorRT engines for the exported ONNX networks (FP16), cached per GPU and TensorRT version.

Imported only when a TensorRT backend is asked for (the `tensorrt` package exists only on machines with
an NVIDIA GPU). An engine file is named by the ONNX file's digest, the GPU's name and compute
capability and the TensorRT version, so a driver/TensorRT upgrade or another GPU builds a new one;
the build is done once (minutes) and reused. Dynamic axes (the batch of streams) get an
optimisation profile min 1 / opt 1 / max `max_batch`. Inputs and outputs are torch CUDA tensors,
so nothing is copied through the host.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def engine_path(onnx_path: Path, cache_dir: Path) -> Path:
    import tensorrt as trt

    digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()[:16]
    props = torch.cuda.get_device_properties(0)
    gpu = "".join(c if c.isalnum() else "-" for c in props.name)
    return Path(cache_dir) / f"{Path(onnx_path).stem}-{digest}-{gpu}-sm{props.major}{props.minor}-trt{trt.__version__}.engine"


def build_engine(onnx_path: Path, cache_dir: Path, fp16: bool = True, max_batch: int = 8,
                 workspace_gb: float = 2.0) -> Path:
    """Build (or reuse) the engine for `onnx_path`; returns its file."""
    import tensorrt as trt

    out = engine_path(onnx_path, cache_dir)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        if any(d == -1 for d in shape):
            lo = [1 if d == -1 else d for d in shape]
            hi = [max_batch if d == -1 else d for d in shape]
            profile.set_shape(t.name, lo, lo, hi)
    config.add_optimization_profile(profile)
    log.info("Building the TensorRT engine for %s (once per GPU and TensorRT version; a few minutes)", onnx_path.name)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}")
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(bytes(blob))
    tmp.replace(out)
    return out


class TrtModule:
    """Call a TensorRT engine like the module it was exported from: torch CUDA tensors in (in the ONNX
    input order), a tuple of torch CUDA tensors out."""

    name = "tensorrt"

    def __init__(self, engine_file: Path, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> None:
        import tensorrt as trt

        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_file).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_file} is not a usable engine for this GPU/TensorRT (stale): delete it")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = input_names, output_names
        self.stream = torch.cuda.Stream()
        self._dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in input_names + output_names}

    def __call__(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx = self.context
        keep = []
        for name, a in zip(self.inputs, args):
            a = a.to(device="cuda", dtype=self._dtypes[name]).contiguous()
            keep.append(a)
            ctx.set_input_shape(name, tuple(a.shape))
            ctx.set_tensor_address(name, a.data_ptr())
        outs = []
        for name in self.outputs:
            o = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device="cuda")
            ctx.set_tensor_address(name, o.data_ptr())
            outs.append(o)
        self.stream.wait_stream(torch.cuda.current_stream())
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        torch.cuda.current_stream().wait_stream(self.stream)
        return tuple(o.float() if o.dtype == torch.float16 else o for o in outs)


def _torch_dtype(dt) -> torch.dtype:
    import tensorrt as trt

    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64,
            trt.bool: torch.bool}[dt]
