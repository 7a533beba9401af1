"""ONNX export of the live networks, the student's chunk step and the refiner (TensorRT engines are built from
these files, `engine.backends.tensorrt`); onnxruntime sessions over them. The renderer's own export is
`engine.render.export`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

REFINER_INPUTS = ("rendered", "reference", "mask", "motion")


def export_refiner(net, path: Path) -> Path:
    """Write the refiner network as one ONNX file: inputs rendered/reference [B, 3, S, S], mask [B, 1, S, S],
    motion [B, DIM] at the network's work side S (FrameRefiner resamples other crops to it); output the
    correction delta [B, 3, S, S]. The batch is dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = net.config.work
    args = (torch.zeros(1, 3, w, w), torch.zeros(1, 3, w, w), torch.zeros(1, 1, w, w),
            torch.zeros(1, net.config.motion_dim))
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = {name: {0: batch} for name in REFINER_INPUTS}
    program = torch.onnx.export(net.eval(), args, input_names=list(REFINER_INPUTS), output_names=["delta"],
                                dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
    if program is None:  # the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no ONNX program for the refiner")
    program.save(str(path))
    log.info("Refiner exported to %s", path)
    return path


def onnx_session(path: Path, threads: int = 0, cuda: bool = False):
    """An onnxruntime session for an exported network (CPU, or CUDA first when `cuda`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    # torch runs the other stages in the same process: idle onnxruntime threads must not spin on the cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), opts, providers=providers)


class OnnxRefiner:
    """The refiner network run by onnxruntime, called like a RefinerNet (torch tensors in and out), so
    FrameRefiner can use either."""

    name = "onnxruntime"

    def __init__(self, path: Path, config, threads: int = 0) -> None:
        self.ort = onnx_session(path, threads)  # an onnxruntime InferenceSession
        self.config = config

    def __call__(self, rendered: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                 motion: torch.Tensor) -> torch.Tensor:
        feed = {"rendered": rendered.cpu().numpy(), "reference": reference.cpu().numpy(), "mask": mask.cpu().numpy(),
                "motion": motion.cpu().float().numpy()}
        return torch.from_numpy(self.ort.run(None, feed)[0])


def export_student_step(student, path: Path, steps: int = 1, max_batch: int = 16, chunk: int | None = None) -> Path:
    """Write the student's chunk step (engine.models.student_step.StudentStep: `steps` denoising passes +
    the commit) as one ONNX file, the KV cache as explicit inputs and outputs; the batch of streams is
    dynamic, cache sizes come from the model's config. The step takes chunks of `chunk` frames (default: the
    model's; a low-latency session runs shorter ones, engine.runtime.config.Latency)."""
    from engine.models.sampling import conditions_for
    from engine.models.student_step import INPUT_NAMES, OUTPUT_NAMES, StudentStep

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    st = student.eval()
    dev = next(st.parameters()).device
    step = StudentStep(st, steps).eval()
    cache = st.new_cache(conditions_for(st, torch.zeros(1, 1, st.config.dim, device=dev)))
    n = chunk or st.config.chunk
    args = (torch.zeros(1, n, st.config.motion_dim, device=dev), torch.zeros(1, n, st.config.dim, device=dev),
            torch.ones(1, device=dev), torch.tensor([float(st.config.sink_frames + 5)], device=dev), cache.fused,
            cache.prefix_k, cache.prefix_v, *cache.tensors())
    b = torch.export.Dim("batch", min=1, max=max_batch)
    axis = {"noise": 0, "tokens": 0, "guidance": 0, "fused": 0, "prefix_k": 1, "prefix_v": 1, "sink_k": 1,
            "sink_v": 1, "sink_valid": 0, "win_k": 1, "win_v": 1, "win_valid": 0}
    shapes = {name: ({axis[name]: b} if name in axis else None) for name in INPUT_NAMES}
    with torch.no_grad():
        program = torch.onnx.export(step, args, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
    if program is None:  # the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no ONNX program for the student step")
    program.save(str(path))
    log.info("Student step exported to %s (%d steps, chunk %d, window %d, sink %d)", path, steps, n,
             st.config.window, st.config.sink_frames)
    return path
