"""Where talkcam keeps things: bundled assets, the user's cache, logs and data (platformdirs)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "talkcam"


def assets_dir() -> Path:
    """The bundled assets/ folder (next to the engine package), or $TALKCAM_ASSETS."""
    env = os.environ.get("TALKCAM_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "assets"


def default_portrait() -> Path:
    return assets_dir() / "portraits" / "astronaut.png"


def teachers_dir() -> Path:
    """The shipped teacher checkpoints (generalist and specialists)."""
    return assets_dir() / "models" / "teachers"


def student_dir() -> Path:
    """The shipped default student (the model the app runs live)."""
    return assets_dir() / "models" / "student"


def refiner_dir() -> Path:
    """The shipped decoder refiner."""
    return assets_dir() / "models" / "refiner"


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP))


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP))
