"""Copy a trained student into assets/ as compact fp16 safetensors, with config.json, its guidance
calibration (read by the streaming session) and the training summaries of its stages.

Usage: python -m engine.train.export_student MODEL_DIR OUT_DIR --calibration CALIBRATION_JSON
(MODEL_DIR = a run's model/ folder; the train.json of that run and of its --init run are kept)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from engine.models.loading import load_student

log = logging.getLogger(__name__)


def export(model_dir: Path, out: Path, calibration: Path | None) -> Path:
    model = load_student(model_dir).half()
    model.save_pretrained(out)
    stages: list[dict] = []
    run: Path | None = model_dir.parent
    while run is not None and (run / "train.json").exists():
        summary = json.loads((run / "train.json").read_text("utf-8"))
        stages.insert(0, summary)
        init = summary.get("config", {}).get("init")
        run = Path(init).parent if init and init != "None" else None
    (out / "train.json").write_text(json.dumps({"stages": stages}, indent=1), "utf-8")
    if calibration is not None:
        shutil.copyfile(calibration, out / "calibration.json")
    log.info("%s -> %s (%.1f MB)", model_dir, out, sum(f.stat().st_size for f in out.iterdir()) / 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.train.export_student", description=__doc__)
    p.add_argument("model_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--calibration", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export(a.model_dir, a.out_dir, a.calibration)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
