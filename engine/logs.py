"""Logging set-up for the command line and the app: a rotating file plus the console."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler


def setup_logging(level: str = "INFO", log_dir: Path | None = None) -> Path | None:
    """Console at `level` (stderr), everything at DEBUG to <log_dir>/talkcam.log (rotating)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if getattr(h, "_talkcam", False):  # ours from an earlier call; leave others' handlers alone
            root.removeHandler(h)
    console = RichHandler(level=getattr(logging, level.upper(), logging.INFO), show_path=False,
                          rich_tracebacks=False, markup=False, console=Console(stderr=True))
    console._talkcam = True
    root.addHandler(console)
    log_file = None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            log_file = log_dir / "talkcam.log"
            fh = logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3,
                                                      encoding="utf-8")
            fh.setLevel(logging.DEBUG)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            fh._talkcam = True
            root.addHandler(fh)
        except OSError as exc:
            logging.getLogger(__name__).warning("No log file (cannot write to %s: %s)", log_dir, exc)
            log_file = None
    for noisy in ("PIL", "matplotlib", "absl", "onnxscript", "torch.onnx", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file
