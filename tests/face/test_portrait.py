"""Every kind of image a user might pick gets a face or its specific, actionable error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.face import PortraitError, frame_portrait, load_portrait
from engine.face import topology as T
from engine.face.image import WORK_MAX_SIDE, load_image

HUMAN = ["art_1.png", "art_2.png", "art_3.png", "art_4.png", "art_5.png", "art_7.png", "art_8.png", "art_9.png",
         "full_body_1.png", "happy.png", "sad.png", "monalisa.png", "lp_s0.jpg", "lp_s3.jpg", "lp_s5.jpg",
         "lp_s7.jpg", "lp_s8.jpg", "lp_s10.jpg", "lp_s42.jpg"]


def _check_face(avatar):
    lm = avatar.landmarks
    assert lm.shape == (T.N_LANDMARKS, 3)
    h, w = avatar.image.shape[:2]
    assert (lm[:, 0] > -0.05 * w).all() and (lm[:, 0] < 1.05 * w).all()
    # upright face: eyes above the mouth, the subject's left eye on the image's right
    assert lm[T.IRIS_L[0], 1] < lm[13, 1] and lm[T.IRIS_R[0], 1] < lm[13, 1]
    assert lm[T.IRIS_L[0], 0] > lm[T.IRIS_R[0], 0]
    assert avatar.interocular > 10


@pytest.mark.parametrize("name", HUMAN)
def test_real_portraits_yield_478_landmarks(portraits_dir, landmarker, tmp_path, name):
    avatar = load_portrait(portraits_dir / name, cache_dir=tmp_path, landmarker=landmarker)
    _check_face(avatar)


def test_robot_head_is_refused_as_not_human(portraits_dir, landmarker):
    with pytest.raises(PortraitError, match="No human face.*art_6.png.*--no-skin-check"):
        load_portrait(portraits_dir / "art_6.png", landmarker=landmarker)
    # the user can still insist
    _check_face(load_portrait(portraits_dir / "art_6.png", landmarker=landmarker, require_skin=False))


def test_cat_has_no_face(portraits_dir, landmarker):
    with pytest.raises(PortraitError, match="No face found in .*lp_s40.jpg"):
        load_portrait(portraits_dir / "lp_s40.jpg", landmarker=landmarker)


def test_cache_is_hit_on_reload(portraits_dir, landmarker, tmp_path):
    before = landmarker.calls
    first = load_portrait(portraits_dir / "happy.png", cache_dir=tmp_path, landmarker=landmarker)
    assert landmarker.calls > before and not first.from_cache
    calls = landmarker.calls
    second = load_portrait(portraits_dir / "happy.png", cache_dir=tmp_path, landmarker=landmarker)
    assert second.from_cache and landmarker.calls == calls
    np.testing.assert_array_equal(first.landmarks, second.landmarks)
    # a corrupt cache entry is ignored (and recomputed), never fatal
    for f in tmp_path.iterdir():
        f.write_bytes(b"garbage")
    third = load_portrait(portraits_dir / "happy.png", cache_dir=tmp_path, landmarker=landmarker)
    assert not third.from_cache and landmarker.calls > calls


def test_missing_empty_folder_and_corrupt_files(tmp_path, landmarker):
    with pytest.raises(PortraitError, match="does not exist"):
        load_portrait(tmp_path / "nope.jpg", landmarker=landmarker)
    with pytest.raises(PortraitError, match="is a folder"):
        load_portrait(tmp_path, landmarker=landmarker)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(PortraitError, match="empty file"):
        load_portrait(empty, landmarker=landmarker)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(PortraitError, match="junk.jpg is not a readable image"):
        load_portrait(junk, landmarker=landmarker)


def test_truncated_file(portraits_dir, tmp_path, landmarker):
    data = (portraits_dir / "lp_s42.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(PortraitError, match="cut.jpg is not a readable image"):
        load_portrait(cut, landmarker=landmarker)


def test_tiny_and_huge(tmp_path, landmarker):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (200, 150, 120)).save(tiny)
    with pytest.raises(PortraitError, match="only 8x8 pixels"):
        load_portrait(tiny, landmarker=landmarker)
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 15000)).save(huge)  # 300 MP, a few KB on disk
    with pytest.raises(PortraitError, match="300 MP"):
        load_portrait(huge, landmarker=landmarker)


def test_small_face_upscaled_for_detection(portraits_dir, tmp_path, landmarker):
    small = tmp_path / "small.png"
    Image.open(portraits_dir / "lp_s42.jpg").resize((160, 160)).save(small)
    avatar = load_portrait(small, landmarker=landmarker)
    _check_face(avatar)
    assert avatar.image.shape[:2] == (160, 160)
    assert any("small face" in w for w in avatar.warnings)


def test_no_face_in_a_landscape(tmp_path, landmarker):
    y, x = np.mgrid[0:400, 0:600]
    img = np.stack([x % 256, (y * 2) % 256, (x + y) % 256], -1).astype(np.uint8)
    path = tmp_path / "pattern.png"
    Image.fromarray(img).save(path)
    with pytest.raises(PortraitError, match="No face found in .*pattern.png"):
        load_portrait(path, landmarker=landmarker)


@pytest.mark.parametrize("fmt,suffix", [("WEBP", ".webp"), ("BMP", ".bmp"), ("PNG", ".png")])
def test_formats(portraits_dir, tmp_path, landmarker, fmt, suffix):
    path = tmp_path / f"face{suffix}"
    Image.open(portraits_dir / "lp_s42.jpg").save(path, format=fmt)
    _check_face(load_portrait(path, landmarker=landmarker))


def test_exif_rotation_is_applied(portraits_dir, tmp_path, landmarker):
    upright = Image.open(portraits_dir / "lp_s42.jpg")
    ref = load_portrait(portraits_dir / "lp_s42.jpg", landmarker=landmarker)
    rotated = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways, as a phone does
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    path = tmp_path / "phone.jpg"
    rotated.save(path, exif=exif.tobytes(), quality=95)
    avatar = load_portrait(path, landmarker=landmarker)
    _check_face(avatar)
    assert avatar.image.shape == ref.image.shape
    err = np.abs(avatar.landmarks[:, :2] - ref.landmarks[:, :2]).mean()
    assert err < 0.05 * ref.interocular


def test_alpha_and_grey(portraits_dir, tmp_path, landmarker):
    img = Image.open(portraits_dir / "happy.png").convert("RGBA")
    a = np.array(img)
    a[:, :30, 3] = 0  # transparent strip
    Image.fromarray(a).save(tmp_path / "alpha.png")
    avatar = load_portrait(tmp_path / "alpha.png", landmarker=landmarker)
    _check_face(avatar)
    assert (avatar.image[:, :20] == 235).all()  # composited on the neutral background
    Image.open(portraits_dir / "lp_s42.jpg").convert("L").save(tmp_path / "grey.png")
    grey = load_portrait(tmp_path / "grey.png", landmarker=landmarker)
    _check_face(grey)
    assert grey.image.shape[2] == 3
    assert any("black-and-white" in w for w in grey.warnings)


def test_very_large_photo(portraits_dir, tmp_path, landmarker):
    big = Image.open(portraits_dir / "lp_s42.jpg").resize((10000, 10000), Image.Resampling.BILINEAR)
    path = tmp_path / "big.jpg"
    big.save(path, quality=85)
    avatar = load_portrait(path, landmarker=landmarker)
    _check_face(avatar)
    assert max(avatar.image.shape[:2]) <= WORK_MAX_SIDE


def test_several_faces_takes_the_largest(portraits_dir, tmp_path, landmarker):
    big = Image.open(portraits_dir / "lp_s42.jpg").resize((480, 480))
    small = Image.open(portraits_dir / "happy.png").resize((200, 200))
    canvas = Image.new("RGB", (800, 480), (200, 200, 200))
    canvas.paste(small, (20, 140))
    canvas.paste(big, (300, 0))
    path = tmp_path / "two.png"
    canvas.save(path)
    avatar = load_portrait(path, landmarker=landmarker)
    _check_face(avatar)
    assert avatar.n_faces == 2
    assert avatar.landmarks[:, 0].min() > 300  # inside the larger face's half
    assert any("using the largest" in w for w in avatar.warnings)


def test_framing_keeps_landmarks_on_the_face(portraits_dir, landmarker):
    avatar = load_portrait(portraits_dir / "full_body_1.png", landmarker=landmarker)
    for size in [(512, 512), (1280, 720), (360, 640)]:
        framed = frame_portrait(avatar, size)
        assert framed.frame.shape == (size[1], size[0], 3)
        lm = framed.landmarks
        assert lm[:, 0].min() >= 0 and lm[:, 0].max() < size[0]
        assert lm[:, 1].min() >= 0 and lm[:, 1].max() < size[1]
        # colour at a landmark equals the source pixel the framing mapped it from
        i = T.NOSE_TIP
        sx, sy = avatar.landmarks[i, :2]
        src = avatar.image[int(sy), int(sx)].astype(int)
        dst = framed.frame[int(lm[i, 1]), int(lm[i, 0])].astype(int)
        assert np.abs(src - dst).max() < 40


def test_load_image_returns_hash_of_bytes(portraits_dir):
    import hashlib

    _, digest = load_image(portraits_dir / "sad.png")
    assert digest == hashlib.sha256((portraits_dir / "sad.png").read_bytes()).hexdigest()



def test_small_face_in_a_huge_photo_is_found_in_tiles(tmp_path, portraits_dir):
    """A 12000x9000 photo whose face is small: shrunk whole for the detector the face is too small to find,
    so the detector searches tiles at the working resolution (it said "No face found" before)."""
    from engine.face import load_portrait

    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(90, 140, (180, 240, 3)).astype(np.uint8)).resize((12000, 9000))
    face = Image.open(portraits_dir / "lp_s42.jpg").convert("RGB").resize((537, 537))
    canvas.paste(face, (7000, 5000))
    path = tmp_path / "huge.jpg"
    canvas.save(path, quality=90)
    avatar = load_portrait(path, cache_dir=None)
    s = avatar.image.shape[1] / 12000  # the working copy is at most 4096 px
    centre = np.array([7000 + 268, 5000 + 268]) * s
    assert np.linalg.norm(avatar.landmarks[:, :2].mean(0) - centre) < 40 * s / 0.34
    assert 60 < avatar.landmarks[:, 0].max() - avatar.landmarks[:, 0].min() < 120
