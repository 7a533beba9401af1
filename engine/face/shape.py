"""Identity/shape features of a face from its 478 landmarks: proportions in interocular units.

These are what the motion models condition on for "who" is speaking (mouth width, lip thickness,
jaw and face proportions, how open the lips and eyes are at rest): scale-, position- and
rotation-free, so the same face gives the same features in any image.
"""

from __future__ import annotations

import numpy as np

from engine.face import topology as T

SHAPE_NAMES: tuple[str, ...] = (
    "mouth_width", "upper_lip", "lower_lip", "lip_gap", "nose_length", "nose_to_mouth",
    "mouth_to_chin", "face_width", "face_height", "eye_opening", "brow_height", "jaw_width",
)
SHAPE_DIM = len(SHAPE_NAMES)
# Typical values (measured on varied portraits: photos, paintings, illustrations) and spreads, to standardise the features for the models.
SHAPE_MEAN = np.array([0.75, 0.08, 0.13, 0.02, 0.72, 0.39, 0.66, 2.17, 2.60, 0.12, 0.21, 1.67], np.float32)
SHAPE_STD = np.array([0.08, 0.02, 0.04, 0.04, 0.09, 0.08, 0.09, 0.15, 0.20, 0.03, 0.06, 0.15], np.float32)


def shape_features(lm: np.ndarray) -> np.ndarray:
    """[SHAPE_DIM] raw features (IOD units) of one face's landmarks [478, 2 or 3] (pixels)."""
    p = np.asarray(lm, np.float64)[:, :2]
    r, left = p[T.IRIS_R[0]], p[T.IRIS_L[0]]
    iod = float(np.linalg.norm(left - r))
    if iod < 1e-6:
        raise ValueError("degenerate landmarks: both iris centres coincide")
    u = (left - r) / iod
    v = np.array([-u[1], u[0]])
    q = np.stack([(p - (r + left) / 2) @ u, (p - (r + left) / 2) @ v], axis=1) / iod  # face-local

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b]))

    def gap(upper: tuple[int, ...], lower: tuple[int, ...]) -> float:
        return float(np.mean(q[list(lower), 1] - q[list(upper), 1]))

    eye = 0.5 * (gap(T.EYE_R_UPPER[2:7], T.EYE_R_LOWER[2:7]) + gap(T.EYE_L_UPPER[2:7], T.EYE_L_LOWER[2:7]))
    brow = -0.5 * (np.mean(q[list(T.BROW_R_LOWER), 1]) + np.mean(q[list(T.BROW_L_LOWER), 1]))
    mouth_y = 0.5 * (q[T.MOUTH_CORNER_R, 1] + q[T.MOUTH_CORNER_L, 1])
    oval = q[list(T.FACE_OVAL)]
    jaw = oval[(oval[:, 1] > mouth_y)]
    feats = [
        dist(T.MOUTH_CORNER_R, T.MOUTH_CORNER_L),
        gap(T.LIPS_OUTER_UPPER[3:8], T.LIPS_INNER_UPPER[3:8]),
        gap(T.LIPS_INNER_LOWER[3:8], T.LIPS_OUTER_LOWER[3:8]),
        max(gap(T.LIPS_INNER_UPPER[3:8], T.LIPS_INNER_LOWER[3:8]), 0.0),
        float(q[T.NOSE_TIP, 1]),
        float(mouth_y - q[T.NOSE_TIP, 1]),
        float(q[T.CHIN, 1] - mouth_y),
        float(oval[:, 0].max() - oval[:, 0].min()),
        float(q[T.CHIN, 1] - q[T.FOREHEAD, 1]),
        eye,
        float(brow),
        float(jaw[:, 0].max() - jaw[:, 0].min()) if len(jaw) else float("nan"),
    ]
    return np.asarray(feats, np.float32)


def standardize(features: np.ndarray) -> np.ndarray:
    """Features -> roughly zero-mean unit-spread values for the models (clipped to +-4)."""
    return np.clip((np.asarray(features, np.float32) - SHAPE_MEAN) / SHAPE_STD, -4, 4).astype(np.float32)


def random_shapes(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, SHAPE_DIM] standardised features of plausible random faces (for corpora without portraits)."""
    return np.clip(rng.normal(0.0, 1.0, (n, SHAPE_DIM)), -3, 3).astype(np.float32)


def portrait_shape(landmarks: np.ndarray) -> np.ndarray:
    """The face-shape vector the motion models are told for a portrait (standardized shape features of its
    landmarks, e.g. a framed avatar's)."""
    return standardize(shape_features(landmarks))
