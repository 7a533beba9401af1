"""Non-human faces (a dog, a cat) are animated, with a clear warning; human portraits get none."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from engine.face import human, load_portrait
from engine.face.human import NOT_HUMAN_WARNING, check_human_face
from engine.face.portrait import CACHE_VERSION

CAT_EYES = ((540.0, 420.0), (690.0, 420.0))
"""The cat's eye centres in lp_s40.jpg (image's left, image's right), pixels."""


@pytest.fixture(scope="module")
def happy(portraits_dir, landmarker):
    return load_portrait(portraits_dir / "happy.png", landmarker=landmarker)


@pytest.fixture(scope="module")
def cat(portraits_dir, happy):
    """lp_s40 (a cat) with a human face mesh on its face: happy.png's mesh moved so its irises sit on the cat's
    eyes. MediaPipe finds no face in this image, but would the human rig on an animal look like this."""
    lm = happy.landmarks.astype(np.float64)
    src = lm[[468, 473], :2]  # the subject's right iris (image left), then the left one
    dst = np.asarray(CAT_EYES)
    sv, dv = src[1] - src[0], dst[1] - dst[0]
    scale = np.linalg.norm(dv) / np.linalg.norm(sv)
    a = np.arctan2(dv[1], dv[0]) - np.arctan2(sv[1], sv[0])
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = lm.copy()
    out[:, :2] = (lm[:, :2] - src[0]) @ rot.T + dst[0]
    out[:, 2] *= scale
    image = np.asarray(Image.open(portraits_dir / "lp_s40.jpg").convert("RGB"))
    return image, out.astype(np.float32)


@pytest.fixture
def no_detector(monkeypatch):
    """The module's cached detector forgotten, so the next check loads it again (and fails, as patched)."""
    monkeypatch.setattr(human, "_detector", None)
    monkeypatch.setattr(human, "_unavailable", False)


def test_dog_is_animated_with_a_warning(portraits_dir, landmarker, tmp_path):
    avatar = load_portrait(portraits_dir / "lp_s30.jpg", cache_dir=tmp_path, landmarker=landmarker)
    assert NOT_HUMAN_WARNING in avatar.warnings
    assert "not be a human face" in NOT_HUMAN_WARNING and "photo or painting of a person" in NOT_HUMAN_WARNING
    # the cached avatar keeps it (and the cache entry is of the version that has the check)
    again = load_portrait(portraits_dir / "lp_s30.jpg", cache_dir=tmp_path, landmarker=landmarker)
    assert again.from_cache and NOT_HUMAN_WARNING in again.warnings
    assert [f.name.startswith(f"portrait-v{CACHE_VERSION}-") for f in tmp_path.iterdir()] == [True]
    assert CACHE_VERSION >= 2


def test_cat_face_is_not_taken_for_a_human_one(cat):
    image, lm = cat
    result = check_human_face(image, lm)
    assert result is not None and not result.human


def test_cat_through_the_pipeline_gets_the_warning(cat, tmp_path):
    """Where a face mesh does fit a cat (the whole-image fallback), the avatar carries the warning."""
    image, lm = cat

    class CatMesh:  # MediaPipe as it would be if its mesh fitted the cat
        min_score = 0.5

        def detect_faces(self, work):
            return []

        def mesh(self, work, box=None):
            return lm.copy()

    path = tmp_path / "cat.png"
    Image.fromarray(image).save(path)
    avatar = load_portrait(path, landmarker=CatMesh(), require_skin=False)  # white fur: not checked for skin
    assert NOT_HUMAN_WARNING in avatar.warnings


@pytest.mark.parametrize("name", ["happy.png", "lp_s3.jpg"])  # a photo and an old painting
def test_human_portraits_get_no_warning(portraits_dir, landmarker, name):
    avatar = load_portrait(portraits_dir / name, landmarker=landmarker)
    assert NOT_HUMAN_WARNING not in avatar.warnings
    result = check_human_face(avatar.image, avatar.landmarks)
    assert result is not None and result.human and result.confidence > 0.9


def test_tilted_human_face_is_still_human(happy):
    """The crop is turned upright by the eye line, so a tilted head is no reason for a warning."""
    import cv2

    m = cv2.getRotationMatrix2D((128.0, 128.0), 35.0, 1.0)
    image = cv2.warpAffine(happy.image, m, (256, 256), borderMode=cv2.BORDER_REFLECT)
    lm = happy.landmarks.copy()
    lm[:, :2] = happy.landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    result = check_human_face(image, lm)
    assert result is not None and result.human


def test_missing_model_skips_the_check(portraits_dir, landmarker, monkeypatch, tmp_path, no_detector, caplog):
    monkeypatch.setattr(human, "face_models_dir", lambda: tmp_path)  # a folder without the model
    with caplog.at_level("DEBUG", logger="engine.face.human"):
        avatar = load_portrait(portraits_dir / "lp_s30.jpg", landmarker=landmarker)
    assert NOT_HUMAN_WARNING not in avatar.warnings
    assert "human-face check skipped" in caplog.text
    assert check_human_face(avatar.image, avatar.landmarks) is None


def test_unreadable_model_or_no_dlib_skips_the_check(happy, monkeypatch, tmp_path, no_detector):
    (tmp_path / "mmod_human_face_detector.dat").write_bytes(b"not a model")
    monkeypatch.setattr(human, "face_models_dir", lambda: tmp_path)
    assert check_human_face(happy.image, happy.landmarks) is None
    monkeypatch.setattr(human, "_unavailable", False)
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    assert check_human_face(happy.image, happy.landmarks) is None


def test_a_cached_robot_is_still_refused_without_no_skin_check(data_dir, landmarker, tmp_path):
    from engine.face import load_portrait
    from engine.face.image import PortraitError

    robot = data_dir / "portraits" / "art_6.png"
    load_portrait(robot, cache_dir=tmp_path, landmarker=landmarker, require_skin=False)  # cached, accepted
    with pytest.raises(PortraitError, match="skin"):
        load_portrait(robot, cache_dir=tmp_path, landmarker=landmarker)
