"""Fixtures for the desktop app (pytest-qt, Qt offscreen): settings in a temporary .ini, the window."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.conftest import pulse, test_camera  # noqa: F401 (fixtures shared with the runtime tests)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "assets" / "samples" / "hello.wav"


@pytest.fixture
def settings(tmp_path):
    from app.settings import Settings

    s = Settings(tmp_path / "settings.ini")
    s.size = 256
    s.record_dir = tmp_path / "Videos"
    s.cam_backend = "talkcam-test"
    return s


def file_mic():
    """The sample played as a microphone, paced in real time (looped)."""
    from engine.audio.sources import FileSource
    from engine.runtime.live import LIVE_PIECE

    return FileSource(SAMPLE, LIVE_PIECE, realtime=True, loop=True)


@pytest.fixture
def make_window(qtbot, settings, tmp_path, session_cache):
    from app.viewmodels import GalleryModel, SessionViewModel
    from app.window import MainWindow

    made = []

    def make(source_factory=file_mic, s=None):
        vm = SessionViewModel(s or settings, cache_dir=session_cache, source_factory=source_factory)
        gallery = GalleryModel(user_dir=tmp_path / "portraits", cache_dir=session_cache)
        win = MainWindow(vm, gallery)
        qtbot.addWidget(win)
        win.show()
        made.append(win)
        return win

    yield make
    for w in made:
        w.close()
