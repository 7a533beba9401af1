"""Identity distance with dlib's face-recognition ResNet (128-D embeddings; the `face-recognition-models`
package's CC0 weights). dlib's convention: distance < 0.6 means the same person."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from engine.face.human import face_models_dir


def _model_dir() -> Path:
    d = face_models_dir()
    if d is None:
        raise RuntimeError("The identity metric needs `face-recognition-models` (pip install face-recognition-models).")
    return d


class IdentityModel:
    """Face embeddings for a face given by its landmarks (no separate detector: our mesh places the face)."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise RuntimeError("The identity metric needs dlib (pip install dlib-bin).") from exc
        d = _model_dir()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))
        self._lock = threading.Lock()

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """128-D embedding of the face whose 478 mesh landmarks are given (image pixels)."""
        xy = landmarks[:, :2]
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
        rect = self._dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        img = np.ascontiguousarray(rgb)
        with self._lock:
            shape = self._shape(img, rect)
            return np.asarray(self._net.compute_face_descriptor(img, shape, 0), np.float32)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))
