"""The virtual webcam sink (pyvirtualcam): OBS's virtual camera on Windows/macOS, v4l2loopback on Linux.

A pacing thread sends one frame every 1/fps seconds whatever the engine does: the newest frame the
renderer delivered, or the last one again when the engine is late (video calls drop a camera that
stops sending). Before the first frame it sends the portrait (or black).
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from engine.sinks.base import Frame, SinkBase

if TYPE_CHECKING:
    from pyvirtualcam import Camera

log = logging.getLogger(__name__)


class VirtualCamError(RuntimeError):
    """No virtual camera could be opened; the message says exactly what to install for this OS."""


def install_hint(system: str | None = None) -> str:
    system = system or platform.system()
    if system == "Linux":
        return ("Install v4l2loopback and load it once:\n"
                "  sudo apt install v4l2loopback-dkms   (Fedora: sudo dnf install v4l2loopback; Arch: "
                "sudo pacman -S v4l2loopback-dkms)\n"
                "  sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=talkcam\n"
                "then start talkcam again (the camera appears as 'talkcam' in Zoom, Meet, OBS).")
    if system == "Windows":
        return ("Install OBS Studio 26 or newer (https://obsproject.com): talkcam sends to its virtual camera "
                "driver, which appears as 'OBS Virtual Camera' in Zoom, Teams and the browser. Close OBS's own "
                "virtual camera while talkcam uses it.")
    if system == "Darwin":
        return ("Install OBS Studio 30 or newer (https://obsproject.com), open it once and click 'Start Virtual "
                "Camera' then 'Stop' so macOS registers the camera extension (allow it in System Settings > "
                "Privacy & Security); then start talkcam again.")
    return f"Virtual cameras are not supported on {system}."


def open_camera(width: int, height: int, fps: float, backend: str | None = None, device: str | None = None):
    """A pyvirtualcam.Camera taking RGB frames, or VirtualCamError naming what to install."""
    try:
        import pyvirtualcam
    except ImportError as exc:
        raise VirtualCamError("The pyvirtualcam package is missing: pip install pyvirtualcam") from exc
    if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
        raise VirtualCamError(f"Unknown virtual camera backend {backend!r}; available here: "
                              f"{', '.join(pyvirtualcam.camera.BACKENDS) or 'none'}.\n{install_hint()}")
    try:
        return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=backend,
                                   device=device)
    except RuntimeError as exc:
        raise VirtualCamError(f"No virtual camera is available ({str(exc).strip()}).\n{install_hint()}") from exc


class VirtualCamSink(SinkBase):
    """Paced virtual camera output. `size` and `fps` default to the pipeline's."""

    name = "virtual camera"

    def __init__(self, size: tuple[int, int] | None = None, fps: float | None = None, backend: str | None = None,
                 device: str | None = None, placeholder: np.ndarray | None = None) -> None:
        self.size, self.fps = size, fps
        self.backend, self.device = backend, device
        self.placeholder = placeholder
        self.camera: Camera | None = None
        self.sent = 0
        self.repeated = 0
        self.received = 0
        self._latest: Frame | None = None
        self._fresh = False
        self.listeners: list[Callable[[Frame, float], None]] = []
        """Called on the pacing thread with each new frame and the monotonic time it was sent (the synced
        microphone's delay); they must return at once."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        self.size = self.size or size
        self.fps = self.fps or fps
        w, h = self.size
        self.camera = camera = open_camera(w, h, self.fps, self.backend, self.device)
        log.info("Virtual camera: %s (%s) %dx%d at %g fps", camera.device, camera.backend, w, h, self.fps)
        self._stop.clear()
        self._thread = threading.Thread(target=self._pace, name="talkcam-virtualcam", daemon=True)
        self._thread.start()

    def write_frame(self, frame: Frame) -> None:
        self._latest = frame
        self._fresh = True
        self.received += 1

    def _fit(self, image: np.ndarray) -> np.ndarray:
        assert self.size is not None  # set by open()
        w, h = self.size
        if image.shape[0] != h or image.shape[1] != w:
            import cv2

            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image[..., :3])

    def _pace(self) -> None:
        camera = self.camera
        assert self.size is not None and camera is not None  # open() sets both before starting this thread
        w, h = self.size
        blank = self._fit(self.placeholder) if self.placeholder is not None else np.zeros((h, w, 3), np.uint8)
        last = blank
        try:
            while not self._stop.is_set():
                fresh = None
                if self._fresh:
                    self._fresh = False
                    fresh = self._latest
                    assert fresh is not None  # written before _fresh is set
                    last = self._fit(fresh.image)
                elif self.sent:
                    self.repeated += 1
                camera.send(last)
                self.sent += 1
                if fresh is not None:
                    sent = time.monotonic()
                    for listener in self.listeners:
                        try:
                            listener(fresh, sent)
                        except Exception:  # a listener's fault is its own: the camera goes on
                            log.exception("virtual camera listener failed")
                camera.sleep_until_next_frame()
        except Exception as exc:  # the device went away: report it, the rest of the pipeline goes on
            self.error = exc
            log.error("Virtual camera stopped: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.camera is not None:
            self.camera.close()
            self.camera = None
