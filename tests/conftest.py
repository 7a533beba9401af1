"""Shared fixtures. Real media comes from ../shared/data beside the checkout (never copied in)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GLOG_minloglevel", "2")

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    env = os.environ.get("TALKCAM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if not d.is_dir():
        pytest.fail(f"shared test data not found at {d} (set TALKCAM_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def portraits_dir(data_dir) -> Path:
    return data_dir / "portraits"


@pytest.fixture(scope="session")
def landmarker():
    from engine.face.landmarks import FaceLandmarker

    lm = FaceLandmarker()
    yield lm
    lm.close()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("avatar-cache")


@pytest.fixture(scope="session")
def framed(portraits_dir, landmarker, session_cache):
    """lp_s42 (a frontal AI-made face) framed at 512x512."""
    from engine.face import frame_portrait, load_portrait

    return frame_portrait(load_portrait(portraits_dir / "lp_s42.jpg", cache_dir=session_cache,
                                       landmarker=landmarker), (512, 512))


def mouth_gap(lm: np.ndarray) -> float:
    """Inner-lip opening (mid upper to mid lower inner lip) over the interocular distance."""
    iod = np.linalg.norm(lm[468, :2] - lm[473, :2])
    return float(np.linalg.norm(lm[13, :2] - lm[14, :2]) / iod)


def eye_gap(lm: np.ndarray, side: str = "L") -> float:
    up, lo = (386, 374) if side == "L" else (159, 145)
    iod = np.linalg.norm(lm[468, :2] - lm[473, :2])
    return float(np.linalg.norm(lm[up, :2] - lm[lo, :2]) / iod)
