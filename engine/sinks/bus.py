"""The frame bus: the preview's sink. Holds only the newest frame (latest wins) and notifies listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from engine.sinks.base import Frame, SinkBase

log = logging.getLogger(__name__)


class FrameBus(SinkBase):
    """Readers take `latest()` or block in `wait(after)`; listeners (e.g. a Qt signal's emit) are called on
    the render thread with each frame and must return at once."""

    name = "preview"

    def __init__(self) -> None:
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._listeners: list[Callable[[Frame], None]] = []
        self.frames = 0

    def subscribe(self, listener: Callable[[Frame], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Frame], None]) -> None:
        self._listeners.remove(listener)

    def write_frame(self, frame: Frame) -> None:
        with self._cond:
            self._latest = frame
            self.frames += 1
            self._cond.notify_all()
        for listener in list(self._listeners):
            listener(frame)

    def latest(self) -> Frame | None:
        return self._latest

    def wait(self, after: int = -1, timeout: float | None = None) -> Frame | None:
        """The newest frame with index > `after` (None on timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None and self._latest.index > after, timeout)
            f = self._latest
        return f if f is not None and f.index > after else None

