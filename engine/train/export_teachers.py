"""Copy trained teachers into assets/ as compact fp16 safetensors (+ config.json and the training
summary). Usage: python -m engine.train.export_teachers RUNS_DIR OUT_DIR  (RUNS_DIR/NAME/model -> OUT_DIR/NAME)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from engine.models.loading import load_teacher

log = logging.getLogger(__name__)


def export(runs: Path, out: Path) -> list[Path]:
    done = []
    for run in sorted(p for p in runs.iterdir() if (p / "model" / "config.json").exists()):
        model = load_teacher(run / "model").half()
        dst = out / run.name
        model.save_pretrained(dst)
        summary = json.loads((run / "train.json").read_text("utf-8")) if (run / "train.json").exists() else {}
        (dst / "train.json").write_text(json.dumps(summary, indent=1), "utf-8")
        size = sum(f.stat().st_size for f in dst.iterdir())
        log.info("%s -> %s (%.1f MB)", run.name, dst, size / 1e6)
        done.append(dst)
    return done


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        log.error("usage: python -m engine.train.export_teachers RUNS_DIR OUT_DIR")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return 0 if export(Path(args[0]), Path(args[1])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
