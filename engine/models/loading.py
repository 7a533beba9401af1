"""Loading trained models from their folders (config.json + safetensors; fp16 or fp32 on disk, fp32 in
memory): the motion models and the decoder refiner."""

from __future__ import annotations

from pathlib import Path

from engine.models.refiner import RefinerNet
from engine.models.student import MotionStudent
from engine.models.teacher import MotionTeacher


def _load(cls, folder: Path | str, device: str, example: str):
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json): give {example}")
    model = cls.from_pretrained(str(folder), low_cpu_mem_usage=False)
    return model.float().to(device).eval()


def load_teacher(folder: Path | str, device: str = "cpu") -> MotionTeacher:
    return _load(MotionTeacher, folder, device, "a teacher folder such as assets/models/teachers/generalist or a "
                 "run's model/ folder (talkcam train teacher)")


def load_student(folder: Path | str, device: str = "cpu") -> MotionStudent:
    return _load(MotionStudent, folder, device, "a student folder such as assets/models/student or a run's model/ "
                 "folder (talkcam train student)")


def load_refiner(folder: Path | str, device: str = "cpu") -> RefinerNet:
    return _load(RefinerNet, folder, device, "a refiner folder such as assets/models/refiner or a run's model/ "
                 "folder (talkcam train refiner)")


def is_student(folder: Path | str) -> bool:
    """Does the model folder hold a student (else a teacher)?"""
    import json

    cfg = Path(folder) / "config.json"
    return cfg.exists() and json.loads(cfg.read_text("utf-8")).get("_class_name") == MotionStudent.__name__
