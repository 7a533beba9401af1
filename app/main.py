"""Start the desktop app: `talkcam live` (with a display), or `python -m app.main`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def run_app(audio: Path | None = None, portrait: Path | None = None, settings_file: Path | None = None,
            cache_dir: Path | None = None, autostart: bool = False, screenshot: Path | None = None,
            seconds: float = 0.0) -> int:
    """The window. `audio` plays a file as the microphone; `screenshot` saves the window after `seconds`
    (and quits), for docs and the Xvfb test."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.settings import Settings
    from app.viewmodels import GalleryModel, SessionViewModel
    from app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("talkcam")
    settings = Settings(settings_file)
    if portrait is not None:
        settings.portrait = str(portrait)
    source_factory = None
    if audio is not None:
        from engine.audio.sources import FileSource
        from engine.runtime.live import LIVE_PIECE

        def source_factory():
            return FileSource(audio, LIVE_PIECE, realtime=True, loop=True)

    vm = SessionViewModel(settings, cache_dir=cache_dir, source_factory=source_factory)
    gallery = GalleryModel(cache_dir=cache_dir)
    win = MainWindow(vm, gallery)
    win.show()
    if autostart or screenshot is not None:
        QTimer.singleShot(100, vm.start)
    if screenshot is not None or seconds > 0:
        def finish():
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                win.grab().save(str(screenshot))
                log.info("Screenshot: %s", screenshot)
            win.close()

        def when_ready():  # count the seconds from the first frame
            if vm.latest_frame() is None and vm.state != "stopped":
                QTimer.singleShot(200, when_ready)
            else:
                QTimer.singleShot(int(max(seconds, 0.5) * 1000), finish)

        QTimer.singleShot(200, when_ready)
    return app.exec()


if __name__ == "__main__":
    from engine import paths
    from engine.logs import setup_logging

    setup_logging("INFO", paths.log_dir())
    raise SystemExit(run_app())
