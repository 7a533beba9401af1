"""Where the live networks run: ONNX export (`export`), TensorRT engines (`tensorrt`), and the runners that
pick a backend and fall back (`runners`: torch, onnxruntime, TensorRT). Below `render` and `runtime`, above
`models`: it runs networks, it does not know what the renderer or the session do with them."""

from typing import Literal, get_args

StudentBackendName = Literal["auto", "torch", "onnxruntime", "tensorrt"]
"""Where the student's chunk step runs (auto: the best available)."""
RefinerBackendName = Literal["auto", "torch", "onnxruntime"]
"""Where the refiner network runs (auto: onnxruntime when installed, else torch)."""
STUDENT_BACKENDS: tuple[str, ...] = get_args(StudentBackendName)
REFINER_BACKENDS: tuple[str, ...] = get_args(RefinerBackendName)
