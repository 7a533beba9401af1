"""The portrait -> avatar factory (engine.render.avatar): framing that never blows a small face up past
its detail (the bundled default portrait's face is 92 px wide), and what the factory hands out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine import motion as M
from engine import paths
from engine.face import topology as T
from engine.face.shape import portrait_shape
from engine.render.avatar import build_avatar, prepare_portrait
from engine.render.renderer import RendererConfig


def _face_height(lm: np.ndarray) -> float:
    oval = lm[list(T.FACE_OVAL), 1]
    return float(oval.max() - oval.min())


def _enlargement(framed) -> float:
    """How much the frame enlarges the photo (face height in the frame / in the photo)."""
    return _face_height(framed.landmarks) / _face_height(framed.portrait.landmarks)


def _detail(image: np.ndarray, lm: np.ndarray) -> float:
    """High-frequency energy per pixel inside the face: the variance of the Laplacian over the face's box."""
    x0, y0 = lm[:, :2].min(0).astype(int)
    x1, y1 = lm[:, :2].max(0).astype(int)
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def test_the_default_portrait_is_not_blown_up(tmp_path):
    cfg = RendererConfig(size=(512, 512), refiner=False)
    framed = prepare_portrait(paths.default_portrait(), cfg.size, cfg.max_upscale, cache_dir=tmp_path)
    old = prepare_portrait(paths.default_portrait(), cfg.size, max_upscale=0.0, cache_dir=tmp_path)
    assert framed.frame.shape == (512, 512, 3)
    assert _enlargement(old) > 1.9  # what a new user saw: the 512 px photo's face doubled, soft
    assert 1.0 <= _enlargement(framed) <= cfg.max_upscale + 1e-3
    # the face still fills a useful share of the frame, at more detail per pixel than before
    assert _face_height(framed.landmarks) >= 0.2 * 512
    assert _detail(framed.frame, framed.landmarks) > 1.5 * _detail(old.frame, old.landmarks)


def test_a_large_face_keeps_its_framing(portraits_dir, tmp_path):
    """The limit changes nothing where the photo has the detail (a face over 400 px)."""
    p = portraits_dir / "art_1.png"
    a = prepare_portrait(p, (512, 512), 1.35, cache_dir=tmp_path)
    b = prepare_portrait(p, (512, 512), 0.0, cache_dir=tmp_path)
    assert _enlargement(b) < 1.35
    np.testing.assert_array_equal(a.frame, b.frame)


def test_an_image_smaller_than_the_frame_is_still_filled(tmp_path):
    """A 300 px photo cannot fill a 512 px frame without enlarging: the whole image is used."""
    from PIL import Image

    small = tmp_path / "small.png"
    Image.open(paths.default_portrait()).resize((300, 300), Image.Resampling.LANCZOS).save(small)
    framed = prepare_portrait(small, (512, 512), 1.35, cache_dir=tmp_path)
    assert framed.frame.shape == (512, 512, 3)
    assert _enlargement(framed) == pytest.approx(512 / 300, rel=0.02)


def test_the_factory_hands_out_a_consistent_avatar(tmp_path):
    av = build_avatar(paths.default_portrait(), RendererConfig(size=(256, 256), refiner=False), cache_dir=tmp_path)
    assert av.path == paths.default_portrait()
    np.testing.assert_array_equal(av.shape, portrait_shape(av.framed.landmarks))
    np.testing.assert_array_equal(av.renderer.rig.frame, av.framed.frame)  # the renderer draws this framing
    rest = av.renderer.render(M.zeros())[0]
    assert rest.shape == (256, 256, 3)
    assert np.abs(rest.astype(int) - av.framed.frame.astype(int)).mean() < 2.0  # motion 0: the portrait
