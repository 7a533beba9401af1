"""The motion latent: one vector per video frame, and its blendshape basis on the face mesh.

Layout (all floats, `MOTION_NAMES` order):
- 26 ARKit-named expression coefficients in [0, 1] (jawOpen ... cheekPuff); "_L"/"_R" are the
  subject's own left/right, as in ARKit, so the same stream can drive VTuber rigs (VMC/OSC).
- head pose: headYaw, headPitch, headRoll in radians (+yaw turns the face toward the image's
  right, +pitch nods down, +roll tilts the top of the head toward the image's right) and
  headX, headY, a translation in units of the interocular distance (IOD), image right/down.
- gaze: eyeLookX, eyeLookY in [-1, 1] (image right / down).

`MotionBasis` maps a motion vector to landmark displacements on a given reference face
(linear: landmarks = ref + B @ m; pose is linearised around the reference, exact to first order,
which is what the renderer's small head motions need) and fits motion back from landmarks
(bounded least squares, optionally after removing a rigid similarity for large head motion).
Each expression is defined by "driver" contours (lips, lids, brows) moved in face-local units
(IOD) and spread to the surrounding skin with a Gaussian falloff; contours that must stay
still (e.g. the upper lip during jawOpen) are pinned at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from engine.face import topology as T

EXPRESSIONS: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthSmile_L", "mouthSmile_R", "mouthStretch_L", "mouthStretch_R",
    "mouthPress_L", "mouthPress_R", "mouthUpperUp_L", "mouthUpperUp_R",
    "mouthLowerDown_L", "mouthLowerDown_R",
    "eyeBlink_L", "eyeBlink_R", "eyeWide_L", "eyeWide_R", "eyeSquint_L", "eyeSquint_R",
    "browInnerUp", "browDown_L", "browDown_R", "browOuterUp_L", "browOuterUp_R", "cheekPuff",
)
POSE: tuple[str, ...] = ("headYaw", "headPitch", "headRoll", "headX", "headY")
GAZE: tuple[str, ...] = ("eyeLookX", "eyeLookY")
MOTION_NAMES: tuple[str, ...] = EXPRESSIONS + POSE + GAZE
DIM = len(MOTION_NAMES)
ARTICULATION: tuple[int, ...] = tuple(i for i, n in enumerate(EXPRESSIONS)
                                      if n.startswith(("jaw", "mouth")) and not n.startswith("mouthSmile"))
"""Indices of the articulation dimensions (jaw and mouth without the smile): what closes when the avatar
listens or hears no speech (0 = the portrait's own mouth)."""

_LO = np.array([0.0] * len(EXPRESSIONS) + [-0.35, -0.35, -0.35, -0.3, -0.3] + [-1.0, -1.0], np.float32)
_HI = np.array([1.0] * len(EXPRESSIONS) + [0.35, 0.35, 0.35, 0.3, 0.3] + [1.0, 1.0], np.float32)
RANGES = np.stack([_LO, _HI], axis=1)
"""[DIM, 2] lower and upper bound of each dimension."""

# Amplitudes at coefficient 1, in IOD units (face-local: x to the subject's left = image right, y down).
JAW_DROP = 0.42
IRIS_TRAVEL = (0.12, 0.06)


def index(name: str) -> int:
    return MOTION_NAMES.index(name)


def zeros(n: int | None = None) -> np.ndarray:
    return np.zeros((DIM,) if n is None else (n, DIM), np.float32)


def clip(m: np.ndarray) -> np.ndarray:
    return np.clip(m, _LO, _HI).astype(np.float32)


def mirror_permutation() -> tuple[np.ndarray, np.ndarray]:
    """(perm, sign) such that m[..., perm] * sign is the motion of the horizontally mirrored face:
    left and right dimensions swap; yaw, roll, sideways shift and horizontal gaze change sign."""
    perm = np.arange(DIM)
    for i, name in enumerate(MOTION_NAMES):
        for a, b in (("_L", "_R"), ("_R", "_L")):
            if name.endswith(a):
                perm[i] = MOTION_NAMES.index(name[: -len(a)] + b)
    sign = np.ones(DIM, np.float32)
    for name in ("headYaw", "headRoll", "headX", "eyeLookX"):
        sign[MOTION_NAMES.index(name)] = -1.0
    return perm, sign


def normalize(m: np.ndarray) -> np.ndarray:
    """Map each dimension's range to [-1, 1] (for models)."""
    return ((2.0 * (m - _LO) / (_HI - _LO)) - 1.0).astype(np.float32)


def denormalize(x: np.ndarray) -> np.ndarray:
    return ((x + 1.0) * 0.5 * (_HI - _LO) + _LO).astype(np.float32)


@dataclass(frozen=True)
class FaceFrame:
    """Face-local coordinates of a reference face: origin between the irises, unit = IOD."""

    origin: np.ndarray  # (3,) pixels (z: MediaPipe depth, head centre ~ 0)
    u: np.ndarray  # (2,) image direction of the subject's left
    v: np.ndarray  # (2,) image direction "down the face"
    scale: float  # IOD in pixels

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> FaceFrame:
        r, left = lm[T.IRIS_R[0]].astype(np.float64), lm[T.IRIS_L[0]].astype(np.float64)
        d = left[:2] - r[:2]
        scale = float(np.linalg.norm(d))
        if scale < 1e-6:
            raise ValueError("degenerate landmarks: both iris centres coincide")
        u = d / scale
        v = np.array([-u[1], u[0]])
        return cls(origin=(r + left) / 2, u=u, v=v, scale=scale)

    def to_local(self, pts: np.ndarray) -> np.ndarray:
        p = pts.astype(np.float64) - self.origin
        return np.stack([p[:, :2] @ self.u, p[:, :2] @ self.v, p[:, 2]], axis=1) / self.scale

    def vectors_to_image(self, d_local: np.ndarray) -> np.ndarray:
        """Displacements [..., 3] in local units -> image pixels (x, y, z)."""
        xy = d_local[..., :1] * self.u + d_local[..., 1:2] * self.v
        return np.concatenate([xy, d_local[..., 2:3]], axis=-1) * self.scale


def _spread(q: np.ndarray, drivers: dict[int, np.ndarray], pinned: set[int], sigma: float,
            limit: set[int] | None = None) -> np.ndarray:
    """Displacements for all points: exact at drivers/pinned, Gaussian-weighted blend elsewhere."""
    n = len(q)
    out = np.zeros((n, 3))
    idx = list(drivers) + [i for i in pinned if i not in drivers]
    vals = np.array([drivers.get(i, np.zeros(3)) for i in idx])
    d2 = ((q[:, None, :2] - q[None, idx, :2]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * sigma**2))
    out[:] = (k @ vals) / (k.sum(1, keepdims=True) + 0.3)
    if limit is not None:
        mask = np.zeros(n, bool)
        mask[list(limit)] = True
        out[~mask] = 0
    out[idx] = vals
    return out


def _side_weight(q: np.ndarray, ids: tuple[int, ...], side: str) -> dict[int, float]:
    """0 at the mouth centre line, 1 at that side's corner (smooth), for lip points."""
    x = q[list(ids), 0]
    c = (q[T.MOUTH_CORNER_L, 0] + q[T.MOUTH_CORNER_R, 0]) / 2
    half = max((q[T.MOUTH_CORNER_L, 0] - q[T.MOUTH_CORNER_R, 0]) / 2, 1e-3)
    t = (x - c) / half * (1 if side == "L" else -1)
    w = np.clip(0.5 + 0.5 * t, 0, 1) ** 2
    return dict(zip(ids, w, strict=True))


_UPPER_LIP = set(T.LIPS_OUTER_UPPER[1:-1] + T.LIPS_INNER_UPPER[1:-1])
_LOWER_LIP = set(T.LIPS_OUTER_LOWER[1:-1] + T.LIPS_INNER_LOWER[1:-1])
_LIPS = _UPPER_LIP | _LOWER_LIP | {T.MOUTH_CORNER_L, T.MOUTH_CORNER_R, T.INNER_CORNER_L, T.INNER_CORNER_R}
_NOSE = {1, 2, 4, 5, 6, 19, 94, 97, 98, 168, 195, 197, 326, 327}
_EYES = set(T.EYE_L_UPPER + T.EYE_L_LOWER + T.EYE_R_UPPER + T.EYE_R_LOWER)
_BROWS = set(T.BROW_L_UPPER + T.BROW_L_LOWER + T.BROW_R_UPPER + T.BROW_R_LOWER)
_IRIS = set(T.IRIS_L + T.IRIS_R)
_CHEEK = {"L": (280, 425, 411, 352, 346), "R": (50, 205, 187, 123, 117)}


def _expression_basis(q: np.ndarray) -> np.ndarray:
    """[N, 3, n_expr] displacements in face-local units for unit coefficients."""
    n = len(q)
    basis = np.zeros((n, 3, len(EXPRESSIONS)))
    corners = {"L": (T.MOUTH_CORNER_L, T.INNER_CORNER_L), "R": (T.MOUTH_CORNER_R, T.INNER_CORNER_R)}
    sign = {"L": 1.0, "R": -1.0}
    oval = list(T.FACE_OVAL)
    y_corner = (q[T.MOUTH_CORNER_L, 1] + q[T.MOUTH_CORNER_R, 1]) / 2
    y_chin = q[T.CHIN, 1]
    upper_oval = {i for i in oval if q[i, 1] < y_corner}
    still_face = _NOSE | _EYES | _BROWS | _IRIS | upper_oval
    mouth_c = (q[T.MOUTH_CORNER_L, :2] + q[T.MOUTH_CORNER_R, :2]) / 2
    half_w = max((q[T.MOUTH_CORNER_L, 0] - q[T.MOUTH_CORNER_R, 0]) / 2, 1e-3)

    def put(name, drivers, pinned, sigma, limit=None):
        basis[:, :, EXPRESSIONS.index(name)] = _spread(q, drivers, pinned, sigma, limit)

    def vec(x=0.0, y=0.0, z=0.0):
        return np.array([x, y, z])

    # jaw: lower lip and chin drop; lower face oval follows in proportion to its height.
    drv = {i: vec(y=JAW_DROP) for i in _LOWER_LIP}
    for i in oval:
        if q[i, 1] >= y_corner:
            w = np.clip((q[i, 1] - y_corner) / max(y_chin - y_corner, 1e-3), 0, 1) ** 0.8
            drv[i] = vec(y=JAW_DROP * w)
    for s in "LR":
        for c in corners[s]:
            drv[c] = vec(x=-sign[s] * 0.04, y=0.35 * JAW_DROP)
    put("jawOpen", drv, still_face | _UPPER_LIP, 0.22)
    # mouthClose: lips meet against an open jaw (lower lip rises, chin stays).
    drv = {i: vec(y=-0.9 * JAW_DROP) for i in _LOWER_LIP}
    drv.update({i: vec(y=0.04) for i in _UPPER_LIP})
    put("mouthClose", drv, still_face | set(oval), 0.12, limit=_LIPS | {17, 18, 200, 84, 314})

    inner_x = np.array([q[i, 0] for i in T.LIPS_INNER_UPPER])
    inner_gap = np.clip([q[lo, 1] - q[up, 1] for up, lo in zip(T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)], 0, None)
    order = np.argsort(inner_x)

    def rest_gap(x: float) -> float:
        """The portrait's own inner-lip opening (local units) at horizontal position x."""
        return float(np.interp(x, inner_x[order], np.asarray(inner_gap)[order]))

    def lip_ring(inward: float, up_open: float, down_open: float, z: float) -> dict[int, np.ndarray]:
        out = {}
        for i in _LIPS:
            rel = (q[i, :2] - mouth_c) / half_w
            bulge = np.clip(1 - abs(rel[0]), 0, 1)
            dy = (-up_open if i in _UPPER_LIP else down_open if i in _LOWER_LIP else 0.0) * bulge
            out[i] = vec(x=-inward * rel[0] * half_w, y=dy, z=-z)
        return out

    put("mouthFunnel", lip_ring(0.25, 0.05, 0.10, 0.10), still_face, 0.15)
    put("mouthPucker", lip_ring(0.38, -0.015, -0.015, 0.15), still_face, 0.15)
    for s in "LR":
        w_lips = _side_weight(q, tuple(_LIPS), s)
        sx = sign[s]
        cheek = {i: vec(x=sx * 0.04, y=-0.05) for i in _CHEEK[s]}
        put(f"mouthSmile_{s}", {**{i: w * vec(x=sx * 0.10, y=-0.08) for i, w in w_lips.items()}, **cheek},
            still_face, 0.25)
        put(f"mouthStretch_{s}", {i: w * vec(x=sx * 0.10, y=0.04) for i, w in w_lips.items()}, still_face, 0.22)
        # press: lips squeeze together and, whatever the portrait's own lip gap, meet at about 0.5 per side
        press = {i: w_lips[i] * vec(y=(0.035 + 1.3 * rest_gap(q[i, 0])) * (1 if i in _UPPER_LIP else -1))
                 for i in _UPPER_LIP | _LOWER_LIP}
        put(f"mouthPress_{s}", press, still_face, 0.10, limit=_LIPS | {0, 17, 37, 267, 84, 314})
        w_up = _side_weight(q, tuple(_UPPER_LIP), s)
        put(f"mouthUpperUp_{s}", {i: w * vec(y=-0.08) for i, w in w_up.items()}, still_face | _LOWER_LIP, 0.12)
        w_lo = _side_weight(q, tuple(_LOWER_LIP), s)
        put(f"mouthLowerDown_{s}", {i: w * vec(y=0.08) for i, w in w_lo.items()}, still_face | _UPPER_LIP, 0.12)
    # eyes
    for s, (upper, lower, brow_u, brow_l, _iris) in {
        "L": (T.EYE_L_UPPER, T.EYE_L_LOWER, T.BROW_L_UPPER, T.BROW_L_LOWER, T.IRIS_L),
        "R": (T.EYE_R_UPPER, T.EYE_R_LOWER, T.BROW_R_UPPER, T.BROW_R_LOWER, T.IRIS_R),
    }.items():
        still = _NOSE | _LIPS | set(oval) | _BROWS | {upper[0], upper[-1]}
        gap = {u: q[lo] - q[u] for u, lo in zip(upper[1:-1], lower[1:-1], strict=True)}
        blink = {u: 0.9 * g for u, g in gap.items()}
        blink.update({lo: -0.1 * gap[u] for u, lo in zip(upper[1:-1], lower[1:-1], strict=True)})
        put(f"eyeBlink_{s}", blink, still, 0.10)
        wide = {u: vec(y=-0.055) for u in upper[1:-1]}
        put(f"eyeWide_{s}", wide, still | set(lower), 0.10)
        squint = {lo: -0.35 * gap[u] for u, lo in zip(upper[1:-1], lower[1:-1], strict=True)}
        squint.update({i: vec(y=-0.03) for i in _CHEEK[s]})
        put(f"eyeSquint_{s}", squint, still | set(upper), 0.12)
        brow = brow_u + brow_l
        inner = [b for b in brow if abs(q[b, 0]) < np.median(np.abs(q[list(brow), 0]))]
        outer = [b for b in brow if b not in inner]
        put(f"browDown_{s}", {b: vec(x=-sign[s] * 0.02 if b in inner else 0.0, y=0.07) for b in brow},
            _NOSE | _LIPS | _EYES | _IRIS, 0.18)
        put(f"browOuterUp_{s}", {**{b: vec(y=-0.10) for b in outer}, **{b: vec(y=-0.03) for b in inner}},
            _NOSE | _LIPS | _EYES | _IRIS, 0.18)
    inner_all = [b for b in _BROWS if abs(q[b, 0]) < 0.45]
    put("browInnerUp", {b: vec(y=-0.09 * np.clip(1.2 - abs(q[b, 0]) * 1.5, 0.2, 1)) for b in _BROWS
                        if b in inner_all or True}, _NOSE | _LIPS | _EYES | _IRIS, 0.2)
    puff = {i: vec(x=sign[s] * 0.07) for s in "LR" for i in _CHEEK[s]}
    put("cheekPuff", puff, _NOSE | _LIPS | _EYES | _BROWS | _IRIS | upper_oval, 0.2)
    return basis


def _pose_basis_local(q: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """[N, 3, 5] first-order displacements (local units) for yaw, pitch, roll, x, y."""
    r = q - pivot
    b = np.zeros((len(q), 3, len(POSE)))
    b[:, 0, 0], b[:, 2, 0] = -r[:, 2], r[:, 0]  # yaw
    b[:, 1, 1], b[:, 2, 1] = -r[:, 2], r[:, 1]  # pitch
    b[:, 0, 2], b[:, 1, 2] = -r[:, 1], r[:, 0]  # roll (in the image plane)
    b[:, 0, 3] = 1.0
    b[:, 1, 4] = 1.0
    return b


def _gaze_basis_local(n: int) -> np.ndarray:
    b = np.zeros((n, 3, len(GAZE)))
    for i in _IRIS:
        b[i, 0, 0] = IRIS_TRAVEL[0]
        b[i, 1, 1] = IRIS_TRAVEL[1]
    return b


class MotionBasis:
    """Linear motion model on one reference face (its 478 landmarks, image pixels)."""

    def __init__(self, reference: np.ndarray) -> None:
        if reference.shape != (T.N_LANDMARKS, 3):
            raise ValueError(f"reference landmarks must be ({T.N_LANDMARKS}, 3), got {reference.shape}")
        self.reference = reference.astype(np.float32)
        self.frame = FaceFrame.from_landmarks(reference)
        q = self.frame.to_local(reference)
        self.pivot_local = np.array([0.0, 0.9, -self.frame.origin[2] / self.frame.scale])
        local = np.concatenate([_expression_basis(q), _pose_basis_local(q, self.pivot_local),
                                _gaze_basis_local(len(q))], axis=2)  # [N, 3, DIM]
        self.basis = self.frame.vectors_to_image(local.transpose(0, 2, 1)).transpose(0, 2, 1).astype(np.float32)

    def pose_basis_for(self, points: np.ndarray) -> np.ndarray:
        """[K, 3, DIM] basis for extra points that move rigidly with the head (no expression)."""
        q = self.frame.to_local(points)
        full = np.zeros((len(points), 3, DIM))
        full[:, :, len(EXPRESSIONS):len(EXPRESSIONS) + len(POSE)] = _pose_basis_local(q, self.pivot_local)
        return self.frame.vectors_to_image(full.transpose(0, 2, 1)).transpose(0, 2, 1).astype(np.float32)

    def landmarks(self, motion: np.ndarray) -> np.ndarray:
        """motion [DIM] or [T, DIM] -> landmarks [478, 3] or [T, 478, 3] (pixels)."""
        return self.reference + np.einsum("ncd,...d->...nc", self.basis, motion).astype(np.float32)

    def fit(self, landmarks: np.ndarray, rigid: bool = False, z_weight: float = 0.3,
            ridge: float = 1e-6) -> np.ndarray:
        """Least-squares motion (within RANGES) that best explains `landmarks` [478, 3].

        With `rigid`, a 2D similarity (roll, translation, scale) between the stable points is
        removed first, so large head moves and a different camera distance do not leak into
        the expression coefficients; its roll and translation are added back to the pose.
        """
        lm = landmarks.astype(np.float64)
        pose = np.zeros(DIM)
        if rigid:
            lm, roll, shift = self._remove_similarity(lm)
            pose[index("headRoll")] = roll
            pose[index("headX")], pose[index("headY")] = shift
        w = np.array([1.0, 1.0, z_weight])
        a = (self.basis.astype(np.float64) * w[None, :, None]).reshape(-1, DIM) / self.frame.scale
        b = ((lm - self.reference) * w).reshape(-1) / self.frame.scale
        a = np.vstack([a, np.sqrt(ridge) * np.eye(DIM)])
        b = np.concatenate([b, np.zeros(DIM)])
        sol = lsq_linear(a, b, bounds=(_LO.astype(np.float64), _HI.astype(np.float64)), method="bvls").x
        return clip(sol + pose)

    _STABLE = (33, 133, 263, 362, 168, 6, 10, 109, 338, 127, 356, 234, 454)

    def _remove_similarity(self, lm: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        idx = list(self._STABLE)
        src, dst = lm[idx, :2], self.reference[idx, :2].astype(np.float64)
        ms, md = src.mean(0), dst.mean(0)
        s0, d0 = src - ms, dst - md
        cov = d0.T @ s0 / len(idx)
        u, sv, vt = np.linalg.svd(cov)
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1, d]) @ vt
        scale = (sv * [1, d]).sum() / (s0**2).sum(1).mean()
        out = lm.copy()
        out[:, :2] = (lm[:, :2] - ms) @ rot.T * scale + md
        out[:, 2] = lm[:, 2] * scale
        # the similarity maps frame -> reference; the head moved by its inverse
        roll = float(-np.arctan2(rot[1, 0], rot[0, 0]))
        shift_px = ms - md
        shift = np.array([shift_px @ self.frame.u, shift_px @ self.frame.v]) / self.frame.scale
        return out, roll, shift
