"""The mouth interior: teeth fixed to the skull, the jaw's teeth and tongue, colours matched to the portrait,
and a refiner that does not blur it. Measured on rendered pixels."""

import cv2
import numpy as np
import pytest
import torch

from engine import motion as M
from engine.eval.realism import luminance, measure, regions
from engine.face import topology as T
from engine.render.renderer import AvatarRenderer, Paint, RendererConfig


@pytest.fixture(scope="module")
def renderer(framed):
    torch.set_num_threads(2)
    return AvatarRenderer(framed, RendererConfig(refiner=False))


def _motion(**kw):
    m = M.zeros()
    for k, v in kw.items():
        m[M.index(k)] = v
    return m


def _edge_rows(frame: np.ndarray, lm: np.ndarray, skin_lum: float) -> tuple[int, int]:
    """Rows of the upper teeth's biting edge and the lower teeth's top edge in the mouth's centre column: the
    first dark row below the upper teeth and the first teeth row above the lower lip."""
    x = int(round(lm[13, 0]))
    col = luminance(frame[:, x - 1:x + 2]).mean(1)
    y0, y1 = int(np.ceil(lm[13, 1])), int(np.floor(lm[14, 1]))
    bright = col[y0:y1] >= 0.6 * skin_lum
    dark = np.flatnonzero(~bright)
    assert len(dark), "no dark cavity between the teeth"
    return y0 + int(dark[0]), y0 + int(dark[-1])


def test_upper_teeth_are_fixed_to_the_skull(renderer):
    rig = renderer.rig
    jaw = M.index("jawOpen")
    n_expr = len(M.EXPRESSIONS)
    # no expression (jaw, lips, smile...) moves the upper teeth; the jaw moves the lower ones down
    assert np.abs(rig.teeth_basis[0, :, :, :n_expr]).max() == 0.0
    assert (rig.teeth_basis[1, :, 1, jaw] > 0).all()
    assert np.abs(rig.teeth_basis[0, :, :, n_expr:n_expr + len(M.POSE)]).max() > 0  # but the head does
    frames = renderer.render(np.stack([_motion(jawOpen=0.6), _motion(jawOpen=1.0)]))
    skin = float(luminance(rig.colors[Paint.TEETH][None, None] * 255.0)[0, 0]) / 1.12
    (up_a, lo_a), (up_b, lo_b) = (_edge_rows(f, renderer.landmarks(m), skin) for f, m in
                                  zip(frames, (_motion(jawOpen=0.6), _motion(jawOpen=1.0))))
    assert abs(up_a - up_b) <= 1, (up_a, up_b)  # the jaw opened further: the upper teeth did not move
    assert lo_b - lo_a >= 4, (lo_a, lo_b)  # the lower teeth went down with the jaw


def test_teeth_follow_the_head(renderer):
    m0, m1 = _motion(jawOpen=0.8), _motion(jawOpen=0.8, headY=0.1)
    t0 = renderer.rig.teeth_ref + np.einsum("kpcm,m->kpc", renderer.rig.teeth_basis, m0)
    t1 = renderer.rig.teeth_ref + np.einsum("kpcm,m->kpc", renderer.rig.teeth_basis, m1)
    lm0, lm1 = renderer.landmarks(m0), renderer.landmarks(m1)
    shift = (t1 - t0)[..., 1].mean()
    assert shift > 0 and abs(shift - (lm1[13, 1] - lm0[13, 1])) < 0.5  # teeth and lips move together


def test_open_mouth_has_teeth_and_no_purple_cast(renderer):
    m = _motion(jawOpen=0.7)
    frame = renderer.render(m)[0]
    lm = renderer.landmarks(m)
    got = measure(frame, lm)
    assert got["teeth"] >= 0.2, got  # real open mouths: median 19% by this measure (docs/mouth.md)
    r = regions(frame.shape[:2], lm)
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(np.float32)[r.inner & ~_bright(frame, r.inner)]
    a, b = lab[:, 1].mean() - 128.0, lab[:, 2].mean() - 128.0
    assert b > -2.0, (a, b)  # purple/violet has b* well below 0 (the old cavity: lip colour x 0.28)
    assert np.degrees(np.arctan2(b, a)) > -15.0, (a, b)  # hue from red to yellow, not toward blue


def _bright(frame, inside):
    return inside & (luminance(frame) > 120)


def test_black_and_white_portrait_gets_grey_teeth(framed):
    from engine.face import FramedPortrait

    grey = cv2.cvtColor(cv2.cvtColor(framed.frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    bw = FramedPortrait(frame=grey, landmarks=framed.landmarks, portrait=framed.portrait)
    colors = AvatarRenderer(bw, RendererConfig(refiner=False)).rig.colors
    for row in (Paint.CAVITY, Paint.TEETH, Paint.GUM, Paint.TONGUE, Paint.WET):
        assert np.ptp(colors[row]) < 0.02, (row, colors[row])


def test_the_portraits_own_teeth_are_used(framed):
    from engine.face import FramedPortrait

    img = framed.frame.copy()
    lm = framed.landmarks.copy()
    # open the portrait's own mouth by moving the lower inner lip down, and fill the gap with teeth
    lm[list(T.LIPS_INNER_LOWER[1:-1]), 1] += 8
    poly = np.round(lm[list(T.inner_mouth_polygon()), :2]).astype(np.int32)
    cv2.fillPoly(img, [poly], (235, 225, 200))
    own = AvatarRenderer(FramedPortrait(frame=img, landmarks=lm, portrait=framed.portrait), RendererConfig(refiner=False))
    assert own.rig.colors[Paint.PARAMS, 2] == 1.0
    assert np.abs(own.rig.colors[Paint.TEETH] * 255 - np.array([235, 225, 200])).max() < 3


def test_refiner_keeps_inner_mouth_detail(framed):
    """On these frames the shipped refiner keeps >= 95% of the detail (the previous one fell to 84%); over the
    held-out renders of docs/mouth.md it still lowers it (7.6 -> 6.6 on photos), so it is off by default."""
    both = AvatarRenderer(framed, RendererConfig(refiner=True, refiner_backend="torch"))
    ms = np.stack([_motion(jawOpen=0.5), _motion(jawOpen=0.8, mouthSmile_L=0.3, mouthSmile_R=0.3)])
    raw, refined = both.render(ms, refine=False), both.render(ms, refine=True)
    for m, a, b in zip(ms, raw, refined):
        lm = both.landmarks(m)
        assert measure(b, lm)["inner_detail"] >= 0.95 * measure(a, lm)["inner_detail"]


def test_refiner_leaves_the_skin_alone(framed):
    both = AvatarRenderer(framed, RendererConfig(refiner=True, refiner_backend="torch"))
    ms = np.stack([_motion(jawOpen=0.5), _motion(jawOpen=0.8, mouthSmile_L=0.3, mouthSmile_R=0.3)])
    raw, refined = both.render(ms, refine=False), both.render(ms, refine=True)
    for m, a, b in zip(ms, raw, refined):
        lm = both.landmarks(m)
        r = regions(a.shape[:2], lm)
        far = r.cheeks | r.eyes
        assert np.abs(a[far].astype(int) - b[far].astype(int)).max() <= 1  # cheeks and eyes untouched
