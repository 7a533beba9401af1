"""Backends of the student's chunk step against torch eager (the reference), fallback, export."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from engine.audio.io import load_audio
from engine.backends.runners import StudentBackend
from engine.models.loading import load_student
from engine.models.sampling import conditions_for
from engine.models.student import CACHE_NAMES
from engine.models.student_step import StudentStep, run_step
from engine.runtime.stream import SessionConfig, StudentStream

from .conftest import SAMPLE


@pytest.fixture(scope="module")
def student():
    from engine import paths

    return load_student(paths.student_dir())


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def test_step_function_is_generate_chunk(student):
    """The pure step (cache in, cache out) equals the eager methods past the first eviction, and both run on
    the same cache: a stream can switch between them at any chunk."""
    g = torch.Generator().manual_seed(0)
    c = conditions_for(student, torch.zeros(1, 1, student.config.dim))
    cache, cache2 = student.new_cache(c), student.new_cache(c)
    step = StudentStep(student, 2).eval()
    with torch.no_grad():
        for i in range(25):  # 75 frames: sink filled, window (48) full and evicting
            tokens = torch.randn(1, 3, student.config.dim, generator=g)
            noise = torch.randn(1, 3, student.config.motion_dim, generator=g)
            gd = torch.tensor([2.5])
            a = student.generate_chunk(tokens, cache, 2, gd, noise)
            if i % 7 == 3:  # now and then the eager path on the step's cache
                b = student.generate_chunk(tokens, cache2, 2, gd, noise)
            else:
                b = run_step(step, cache2, tokens, noise, gd)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for name, x, y in zip(CACHE_NAMES, cache.tensors(), cache2.tensors()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)
    assert cache2.frame == cache.frame == 75
    assert cache.filled == student.config.sink_frames + student.config.window


def _motion(student, step, seconds=4.0):
    audio = load_audio(SAMPLE)[: int(seconds * 16000)]
    sess = StudentStream(student, SessionConfig(), step=step)
    mo = np.concatenate(list(sess.stream(audio, 320)))
    sess.set_identity(np.ones(12, np.float32) * 0.3, "singing")  # identity switch mid-stream, then on
    mo2 = np.concatenate(list(sess.stream(audio[:16000], 320)))
    return np.concatenate([mo, mo2])


def test_onnxruntime_session_matches_torch(student, onnx_dir):
    ort_step = StudentBackend(student, "onnxruntime", cache_dir=onnx_dir)
    assert ort_step.name == "onnxruntime"
    ref, got = _motion(student, None), _motion(student, ort_step)
    assert ref.shape == got.shape and len(ref) >= 125
    assert np.abs(ref - got).max() < 2e-3


def test_failing_backend_falls_back_mid_stream(student, onnx_dir, caplog):
    backend = StudentBackend(student, "onnxruntime", cache_dir=onnx_dir)
    calls = {"n": 0}
    real = backend.fn

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 10:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args)

    backend.fn = flaky
    with caplog.at_level(logging.WARNING):
        got = _motion(student, backend)
    assert backend.name == "torch" and "out of memory" in caplog.text and "now running on torch" in caplog.text
    assert np.abs(got - _motion(student, None)).max() < 2e-3  # the stream went on where it was


def test_unavailable_backend_is_a_clear_error(student):
    with pytest.raises(ValueError, match="TensorRT needs an NVIDIA GPU"):
        StudentBackend(student, "tensorrt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.compile / CUDA graphs path)")
def test_torch_cuda_compiled_step_matches_eager(student):
    st = load_student(__import__("engine.paths").paths.student_dir(), "cuda")
    backend = StudentBackend(st, "torch")
    ref = _motion(load_student(__import__("engine.paths").paths.student_dir()), None)
    got = _motion(st, backend)
    assert np.abs(ref - got).max() < 5e-3


def test_tensorrt_step_matches_torch(student, onnx_dir):
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs an NVIDIA GPU (none here)")
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on CI machines)")
    from engine import paths

    st = load_student(paths.student_dir(), "cuda")
    backend = StudentBackend(st, "tensorrt", cache_dir=onnx_dir)
    assert backend.name == "tensorrt"
    assert np.abs(_motion(st, backend) - _motion(student, None)).max() < 2e-2  # FP16


def test_export_command_writes_loadable_onnx(tmp_path):
    import onnxruntime as ort

    from engine.cli import main

    assert main(["export", "--out", str(tmp_path)]) == 0
    sess = ort.InferenceSession(str(tmp_path / "student_step.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names[:4] == ["noise", "tokens", "guidance", "frame"] and "win_k" in names
    assert [o.name for o in sess.get_outputs()][0] == "x" and "new_win_k" in [o.name for o in sess.get_outputs()]
    assert (tmp_path / "refiner.onnx").stat().st_size > 1e6
