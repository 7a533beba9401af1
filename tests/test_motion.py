import numpy as np
import pytest

from engine import motion as M
from engine.face import topology as T


def test_layout_and_ranges():
    assert M.DIM == len(M.MOTION_NAMES) == len(set(M.MOTION_NAMES))
    assert M.MOTION_NAMES[0] == "jawOpen" and "eyeBlink_L" in M.EXPRESSIONS
    x = np.random.default_rng(0).uniform(-1, 1, (10, M.DIM)).astype(np.float32)
    np.testing.assert_allclose(M.normalize(M.denormalize(x)), x, atol=1e-5)
    assert (M.normalize(M.RANGES[:, 0]) == -1).all() and (M.normalize(M.RANGES[:, 1]) == 1).all()
    assert (M.clip(np.full(M.DIM, 9.0)) == M.RANGES[:, 1]).all()


@pytest.fixture(scope="module")
def basis(framed):
    return M.MotionBasis(framed.landmarks)


def test_round_trip_recovers_motion(basis):
    rng = np.random.default_rng(1)
    for _ in range(10):
        m = M.clip(rng.uniform(M.RANGES[:, 0], M.RANGES[:, 1]) * 0.5)
        m[: len(M.EXPRESSIONS)] = np.abs(m[: len(M.EXPRESSIONS)])
        fitted = basis.fit(basis.landmarks(m))
        assert np.abs(fitted - m).max() < 1e-3


def test_rigid_fit_ignores_camera_distance_and_head_roll(basis):
    rng = np.random.default_rng(2)
    n_expr = len(M.EXPRESSIONS)
    for _ in range(5):
        m = M.zeros()
        m[:n_expr] = rng.uniform(0, 0.6, n_expr)
        lm = basis.landmarks(m).astype(np.float64)
        ang, c = 0.25, lm[:, :2].mean(0)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        moved = lm.copy()
        moved[:, :2] = (lm[:, :2] - c) @ rot.T * 1.3 + c + [15, -10]
        moved[:, 2] *= 1.3
        fitted = basis.fit(moved, rigid=True)
        assert np.abs(fitted[:n_expr] - m[:n_expr]).max() < 0.05
        assert fitted[M.index("headRoll")] == pytest.approx(ang, abs=0.01)


def test_units_are_what_the_doc_says(basis):
    iod = basis.frame.scale
    m = M.zeros()
    m[M.index("jawOpen")] = 1.0
    d = basis.landmarks(m) - basis.reference
    assert d[14, 1] == pytest.approx(M.JAW_DROP * iod, rel=0.05)  # lower inner lip drops
    assert abs(d[13, 1]) < 0.02 * iod  # upper inner lip stays
    m = M.zeros()
    m[M.index("eyeBlink_L")] = 1.0
    lm = basis.landmarks(m)
    gap0 = basis.reference[374, 1] - basis.reference[386, 1]
    assert lm[374, 1] - lm[386, 1] < 0.1 * gap0  # left lids meet
    assert np.abs(lm[159] - basis.reference[159]).max() < 1e-3  # right eye untouched
    m = M.zeros()
    m[M.index("headYaw")] = 0.1
    d = basis.landmarks(m) - basis.reference
    assert d[T.NOSE_TIP, 0] > 0 and d[T.NOSE_TIP, 0] > d[234, 0]  # the nose swings most


def test_reference_shape_checked():
    with pytest.raises(ValueError, match="478"):
        M.MotionBasis(np.zeros((68, 3), np.float32))
