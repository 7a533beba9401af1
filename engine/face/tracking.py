"""Face tracking over video frames and simple per-frame face measures (IOD-normalised)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.face.landmarks import FaceBox, FaceLandmarker


@dataclass
class Track:
    """Landmarks per 25 fps frame (NaN where no face was found) and the source's size."""

    landmarks: np.ndarray  # [T, 478, 3]
    found: np.ndarray  # [T] bool
    size: tuple[int, int]


def _box_from(lm: np.ndarray) -> FaceBox:
    x0, y0 = lm[:, 0].min(), lm[:, 1].min()
    x1, y1 = lm[:, 0].max(), lm[:, 1].max()
    return FaceBox(float(x0), float(y0), float(x1), float(y1), 1.0)


def track(frames: Iterable[np.ndarray], landmarker: FaceLandmarker) -> Track:
    """Face mesh on every frame (the largest face), tracked from frame to frame: the box comes from the
    previous frame's landmarks; when the mesh is lost the face is detected again."""
    out, found = [], []
    box = None
    size = (0, 0)
    for img in frames:
        size = (img.shape[1], img.shape[0])
        lm = landmarker.mesh(img, box) if box is not None else None
        if lm is None:
            faces = landmarker.detect_faces(img)
            lm = landmarker.mesh(img, faces[0]) if faces else None
        if lm is None:
            out.append(np.full((478, 3), np.nan, np.float32))
            found.append(False)
            box = None
        else:
            out.append(lm)
            found.append(True)
            box = _box_from(lm)
    if not out:
        return Track(np.zeros((0, 478, 3), np.float32), np.zeros(0, bool), size)
    return Track(np.stack(out), np.array(found), size)


def mouth_opening(lm: np.ndarray) -> np.ndarray:
    """Inner-lip gap (mean of the middle and two side pairs) over the interocular distance, for
    landmarks [..., 478, 3]."""
    iod = np.linalg.norm(lm[..., 468, :2] - lm[..., 473, :2], axis=-1)
    gap = sum(np.linalg.norm(lm[..., a, :2] - lm[..., b, :2], axis=-1) for a, b in ((13, 14), (82, 87), (312, 317)))
    return gap / 3 / np.maximum(iod, 1e-6)


def eye_opening(lm: np.ndarray) -> np.ndarray:
    iod = np.linalg.norm(lm[..., 468, :2] - lm[..., 473, :2], axis=-1)
    gap = (np.linalg.norm(lm[..., 386, :2] - lm[..., 374, :2], axis=-1)
           + np.linalg.norm(lm[..., 159, :2] - lm[..., 145, :2], axis=-1)) / 2
    return gap / np.maximum(iod, 1e-6)


