import numpy as np
import pytest
import torch

from engine import motion as M
from engine.render.renderer import AvatarRenderer, RendererConfig
from tests.conftest import eye_gap, mouth_gap


@pytest.fixture(scope="module")
def renderer(framed):
    torch.set_num_threads(2)
    return AvatarRenderer(framed, RendererConfig(refiner=False))


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def _motion(**kw):
    m = M.zeros()
    for k, v in kw.items():
        m[M.index(k)] = v
    return m


def test_zero_motion_reproduces_the_portrait(renderer, framed):
    frame = renderer.render(M.zeros())[0]
    assert frame.shape == framed.frame.shape and frame.dtype == np.uint8
    assert _psnr(frame, framed.frame) > 45


def test_outside_the_face_region_is_untouched(renderer, framed):
    frame = renderer.render(_motion(headYaw=0.3, jawOpen=1.0))[0]
    x0, y0, x1, y1 = renderer.rig.box
    mask = np.ones(frame.shape[:2], bool)
    mask[y0:y1, x0:x1] = False
    assert (frame[mask] == framed.frame[mask]).all()
    assert _psnr(frame, framed.frame) < 35  # and inside, it did move


def test_jaw_open_opens_the_mouth(renderer, landmarker):
    closed, opened, half = renderer.render(np.stack([M.zeros(), _motion(jawOpen=1.0), _motion(jawOpen=0.5)]))
    lm_closed, lm_open, lm_half = (landmarker.mesh(f) for f in (closed, opened, half))
    assert lm_closed is not None and lm_open is not None and lm_half is not None
    g0, g1, gh = mouth_gap(lm_closed), mouth_gap(lm_open), mouth_gap(lm_half)
    assert g1 - g0 > 0.2, (g0, g1)  # re-detected lip gap grows by > 0.2 interocular distances
    assert g0 < gh < g1


def test_blink_closes_the_eyes(renderer, landmarker):
    base, blink = renderer.render(np.stack([M.zeros(), _motion(eyeBlink_L=1.0, eyeBlink_R=1.0)]))
    lm0, lm1 = landmarker.mesh(base), landmarker.mesh(blink)
    for side in "LR":
        assert eye_gap(lm1, side) < 0.5 * eye_gap(lm0, side)


def test_head_yaw_moves_the_face_the_documented_way(renderer, landmarker):
    base, turned = renderer.render(np.stack([M.zeros(), _motion(headYaw=0.25)]))
    lm0, lm1 = landmarker.mesh(base), landmarker.mesh(turned)
    iod = np.linalg.norm(lm0[468, :2] - lm0[473, :2])
    assert (lm1[1, 0] - lm0[1, 0]) / iod > 0.05  # nose tip moves toward the image's right


def test_mouth_interior_is_painted_only_where_the_mouth_opened(framed):
    on = AvatarRenderer(framed, RendererConfig(mouth_interior=True, refiner=False))
    off = AvatarRenderer(framed, RendererConfig(mouth_interior=False, refiner=False))
    m = _motion(jawOpen=0.8)
    a, b = on.render(m)[0].astype(int), off.render(m)[0].astype(int)
    changed = np.abs(a - b).max(-1) > 30
    ys, xs = np.nonzero(changed)
    lm = on.landmarks(m)
    assert changed.sum() > 200
    assert ys.min() >= lm[13, 1] - 3 and ys.max() <= lm[14, 1] + 3  # between the parted lips
    assert (on.render(M.zeros())[0] == off.render(M.zeros())[0]).all()  # closed: nothing painted


def test_batch_equals_single(renderer):
    ms = np.stack([_motion(jawOpen=0.3), _motion(mouthSmile_L=0.7, headRoll=0.1), _motion(eyeLookX=0.8)])
    batch = renderer.render(ms)
    for i, m in enumerate(ms):
        assert np.abs(batch[i].astype(int) - renderer.render(m)[0].astype(int)).max() <= 1


def test_onnx_export_matches_torch(renderer, tmp_path):
    import onnxruntime as ort

    from engine.render.export import RENDERER_INPUTS, export_renderer

    path = export_renderer(renderer, tmp_path / "renderer.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    m = np.stack([_motion(jawOpen=0.6, headYaw=0.1, eyeBlink_L=0.8)]).astype(np.float32)
    feeds = {k: renderer.inputs[k].numpy() for k in RENDERER_INPUTS[:-1]}
    feeds["motion"] = m
    (out,) = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    ref = renderer.render_region(m).numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-3


@pytest.mark.parametrize("size", [(256, 256), (1280, 720)])
def test_other_output_sizes(framed, size):
    from engine.face import frame_portrait

    f = frame_portrait(framed.portrait, size)
    r = AvatarRenderer(f, RendererConfig(size=size, refiner=False))
    out = r.render(_motion(jawOpen=0.5))[0]
    assert out.shape == (size[1], size[0], 3)
    assert _psnr(r.render(M.zeros())[0], f.frame) > 45
