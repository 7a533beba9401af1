"""The app's persisted settings (QSettings): last portrait, devices, sizes, toggles."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from PySide6.QtCore import QSettings


def default_record_dir() -> Path:
    return Path(platformdirs.user_videos_dir()) / "talkcam"


def user_portraits_dir() -> Path:
    """The user's own portraits (added by file dialog or drag and drop)."""
    return Path(platformdirs.user_data_dir("talkcam")) / "portraits"


class Settings:
    """Typed access to QSettings. `path` (an .ini file) is for tests; by default the platform's store."""

    def __init__(self, path: Path | None = None) -> None:
        self.q = (QSettings(str(path), QSettings.Format.IniFormat) if path is not None
                  else QSettings("talkcam", "talkcam"))

    def _get(self, key: str, default, kind):
        v = self.q.value(key, default)
        if kind is bool:
            return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
        try:
            return kind(v)
        except (TypeError, ValueError):
            return default

    def _set(self, key: str, value) -> None:
        self.q.setValue(key, value)
        self.q.sync()

    portrait = property(lambda s: s._get("portrait", "", str), lambda s, v: s._set("portrait", str(v)))
    mic = property(lambda s: s._get("mic", "", str), lambda s, v: s._set("mic", v or ""))
    size = property(lambda s: s._get("size", 512, int), lambda s, v: s._set("size", int(v)))
    overlay = property(lambda s: s._get("overlay", True, bool), lambda s, v: s._set("overlay", bool(v)))
    virtualcam = property(lambda s: s._get("virtualcam", False, bool), lambda s, v: s._set("virtualcam", bool(v)))
    cam_width = property(lambda s: s._get("cam_width", 1280, int), lambda s, v: s._set("cam_width", int(v)))
    cam_height = property(lambda s: s._get("cam_height", 720, int), lambda s, v: s._set("cam_height", int(v)))
    cam_fps = property(lambda s: s._get("cam_fps", 30, int), lambda s, v: s._set("cam_fps", int(v)))
    vmc = property(lambda s: s._get("vmc", False, bool), lambda s, v: s._set("vmc", bool(v)))
    vmc_target = property(lambda s: s._get("vmc_target", "127.0.0.1:39539", str),
                          lambda s, v: s._set("vmc_target", str(v)))
    latency = property(lambda s: s._get("latency", "standard", str), lambda s, v: s._set("latency", str(v)))
    synced_mic = property(lambda s: s._get("synced_mic", False, bool), lambda s, v: s._set("synced_mic", bool(v)))
    cam_backend = property(lambda s: s._get("cam_backend", "", str) or None, lambda s, v: s._set("cam_backend", v or ""))
    record_dir = property(lambda s: Path(s._get("record_dir", str(default_record_dir()), str)),
                          lambda s, v: s._set("record_dir", str(v)))
    guidance = property(lambda s: s._get("guidance", 3.0, float), lambda s, v: s._set("guidance", float(v)))
    style = property(lambda s: s._get("style", "speaking", str), lambda s, v: s._set("style", v))
    muted = property(lambda s: s._get("muted", False, bool), lambda s, v: s._set("muted", bool(v)))
