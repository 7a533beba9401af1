"""Loading trained motion models from their folders (config.json + safetensors; fp16 or fp32 on disk,
fp32 in memory)."""

from __future__ import annotations

from pathlib import Path

from engine.models.teacher import MotionTeacher


def load_teacher(folder: Path | str, device: str = "cpu") -> MotionTeacher:
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json): give a teacher folder such as "
                                f"assets/models/teachers/generalist or a run's model/ folder (talkcam train teacher)")
    model = MotionTeacher.from_pretrained(str(folder), low_cpu_mem_usage=False)
    return model.float().to(device).eval()
