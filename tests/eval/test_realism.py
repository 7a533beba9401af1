"""The mouth-realism toolkit on tiny data: the judge's leave-one-source-out accuracy, per-frame measures,
summaries and the report table."""

import numpy as np
import pytest
import torch

from engine.eval import realism as R


def _crops(rng, n, kind):
    base = np.full((n, R.CROP, R.CROP, 3), 120.0)
    if kind == "textured":  # fine detail, like teeth and lip lines
        base += rng.normal(0, 40, (n, R.CROP, R.CROP, 1))
    else:  # smooth blobs, like the old painted mouth
        base += rng.normal(0, 3, (n, R.CROP, R.CROP, 1))
        base[:, 24:40, 16:48] -= 70
    return np.clip(base, 0, 255).astype(np.uint8)


def test_judge_tells_different_crops_apart_and_not_identical_ones():
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    real = {f"real{i}": _crops(rng, 40, "textured") for i in range(2)}
    fake = {f"fake{i}": _crops(rng, 40, "smooth") for i in range(3)}
    res = R.judge_accuracy(real, fake, steps=60, batch=32)
    assert res["accuracy"] > 0.85 and res["auc"] > 0.9, res
    assert len(res["folds"]) == 3 and {f["rendered"] for f in res["folds"]} == set(fake)
    same = {f"fake{i}": _crops(rng, 40, "textured") for i in range(2)}
    res = R.judge_accuracy(real, same, steps=60, batch=32)
    assert 0.2 <= res["accuracy"] <= 0.8 and 0.2 <= res["auc"] <= 0.8, res  # the same distribution: about chance


def test_auc():
    assert R.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert R.auc(np.array([0.0]), np.array([0.0])) == 0.5
    assert R.auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0


def test_judge_needs_two_sources_each():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2 real and 2 rendered"):
        R.judge_accuracy({"a": _crops(rng, 4, "textured")}, {"b": _crops(rng, 4, "smooth"), "c": _crops(rng, 4, "smooth")})


def test_summary_and_table():
    a = R.Clip("p__clip", "p", measures=[
        {"gap": 0.2, "inner_px": 100, "skin_detail": 0.5, "inner_detail": 3.0, "teeth": 0.3, "inner_lab": [-30, 10, 5]},
        {"gap": 0.05, "inner_px": 5, "skin_detail": 0.45},
        {"gap": 0.3, "inner_px": 200, "skin_detail": 0.55, "inner_detail": 5.0, "teeth": 0.1, "inner_lab": [-40, 12, 7]}],
        crops=[np.zeros((R.CROP, R.CROP, 3), np.uint8)] * 3, identity=[0.2, 0.3])
    assert a.open.tolist() == [True, False, True]
    assert a.open_crops().shape == (2, R.CROP, R.CROP, 3)
    s = R.summarise([a], {"p": 0.5})
    assert s["open_frames"] == 2 and s["inner_detail"] == pytest.approx(4.0) and s["teeth"] == pytest.approx(0.2)
    assert s["skin_detail_kept"] == pytest.approx(1.0) and s["identity"] == pytest.approx(0.25)
    assert s["flicker"] == 0.0
    table = R.table({"variants": {"new": {**s, "judge": 0.6}}})
    assert "| new | 0.600 | – | 4.000 |" in table


def test_measure_and_crop_on_a_rendered_frame(framed):
    from engine import motion as M
    from engine.render.renderer import AvatarRenderer, RendererConfig

    r = AvatarRenderer(framed, RendererConfig(refiner=False))
    m = M.zeros()
    m[M.index("jawOpen")] = 0.7
    frame = r.render(m)[0]
    lm = r.landmarks(m)
    got = R.measure(frame, lm)
    assert got["gap"] > R.OPEN_GAP and got["inner_px"] > 100
    assert 0.0 < got["teeth"] < 1.0 and got["inner_detail"] > 0
    crop = R.mouth_crop(frame, lm)
    assert crop.shape == (R.CROP, R.CROP, 3)
    closed = R.measure(r.render(M.zeros())[0], r.landmarks(M.zeros()))
    assert closed["gap"] < got["gap"] - 0.1


def test_gray_portrait_copies(tmp_path, portraits_dir):
    from engine.cli import _realism_portrait

    p = _realism_portrait("gray:happy.png", portraits_dir, tmp_path)
    from PIL import Image

    img = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert p.parent == tmp_path and np.ptp(img, axis=-1).max() == 0
    assert _realism_portrait("happy.png", portraits_dir, tmp_path) == portraits_dir / "happy.png"
    with pytest.raises(FileNotFoundError):
        _realism_portrait("nobody.png", portraits_dir, tmp_path)


def test_measurements_are_kept_per_video(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    calls = []

    def make():
        calls.append(1)
        return R.Clip("a", "p", [{"gap": 0.2, "inner_px": 50, "skin_detail": 0.4}],
                      [np.full((R.CROP, R.CROP, 3), 7, np.uint8)], [0.3])

    first = R._measured(video, tmp_path / "cache", "w", make)
    again = R._measured(video, tmp_path / "cache", "w", make)
    assert len(calls) == 1 and again.measures == first.measures and again.identity == [0.3]
    assert (again.crops[0] == 7).all()
    R._measured(video, tmp_path / "cache", "other settings", make)
    video.write_bytes(b"xy")  # a new render under the same name
    R._measured(video, tmp_path / "cache", "w", make)
    assert len(calls) == 3
