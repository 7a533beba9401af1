"""Logging set-up for the command line and the app: a rotating file plus the console."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler


def _own_lines(record: logging.LogRecord) -> bool:
    """The console shows talkcam's own lines and any library's errors; third-party warnings and
    deprecation notices go to the log file only."""
    return record.name == "talkcam" or record.name.startswith(("engine", "app", "__main__")) or \
        (record.levelno >= logging.ERROR and record.name != "py.warnings")


class _Console(RichHandler):
    """The console handler; `_talkcam` marks it as ours for a later `setup_logging` call."""

    _talkcam: bool = False


class _LogFile(logging.handlers.RotatingFileHandler):
    """The log file. When it cannot be written (the disk is full, the folder went away) it stops, says so
    once on the console, and the program goes on, instead of printing a traceback for every message."""

    _talkcam: bool = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        import sys

        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):  # a bad log call (formatting), not the file: logging's own report
            super().handleError(record)
            return
        logging.getLogger().removeHandler(self)
        try:
            self.close()
        except OSError as close_exc:  # closing flushes into the same full disk
            logging.getLogger(__name__).debug("closing the log file: %s", close_exc)
        logging.getLogger(__name__).warning("The log file %s is no longer written (%s); the console keeps the log.",
                                            self.baseFilename, exc)


def setup_logging(level: str = "INFO", log_dir: Path | None = None) -> Path | None:
    """Console at `level` (stderr), everything at DEBUG to <log_dir>/talkcam.log (rotating)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if getattr(h, "_talkcam", False):  # ours from an earlier call; leave others' handlers alone
            root.removeHandler(h)
    console = _Console(level=getattr(logging, level.upper(), logging.INFO), show_path=False,
                        rich_tracebacks=False, markup=False, console=Console(stderr=True))
    console._talkcam = True
    console.addFilter(_own_lines)
    root.addHandler(console)
    logging.captureWarnings(True)  # third-party Python warnings become log records: the file keeps them
    log_file = None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            log_file = log_dir / "talkcam.log"
            fh = _LogFile(log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
            fh.setLevel(logging.DEBUG)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            fh._talkcam = True
            root.addHandler(fh)
        except OSError as exc:
            logging.getLogger(__name__).warning("No log file (cannot write to %s: %s)", log_dir, exc)
            log_file = None
    for noisy in ("PIL", "matplotlib", "absl", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # torch's exporter logs through its own stderr handler ("torchvision is not installed. Skipping ..."),
    # which our console filter cannot reach; its warnings are about operators talkcam never exports
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    return log_file
