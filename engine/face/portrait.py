"""Portrait file -> `Portrait` (the photo with its face found: landmarks, checks, on-disk cache, `load_portrait`)
and `Portrait` -> `FramedPortrait` (framed at the output size, `frame_portrait`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import cv2
import numpy as np
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from engine.face import topology as T
from engine.face.human import NOT_HUMAN_WARNING, check_human_face
from engine.face.image import PortraitError, load_image
from engine.face.landmarks import FaceLandmarker
from engine.face.shape import portrait_shape

log = logging.getLogger(__name__)

CACHE_VERSION = 3
"""Part of the cache file's name. 2: the warnings include the human-face check (engine/face/human.py). 3: the
small-face warning no longer says the avatar will look soft (framing limits the enlargement now)."""
MIN_FACE_PX = 48
MIN_SKIN_WARMTH = 9.0
"""Mean (Cr - Cb) of the face's skin, YCrCb units. Human skin in photos and paintings of this
project's test set measures 11.8-64; the chrome robot head (shared art_6) 6.5."""
GREY_CHROMA = 1.5


@dataclass
class Portrait:
    """A portrait photo with its face found: the working image and its 478 face landmarks (image pixels)."""

    image: np.ndarray  # HxWx3 uint8 RGB
    landmarks: np.ndarray  # 478x3 float32 (x, y, z in pixels)
    source: str
    sha256: str
    n_faces: int = 1
    warnings: list[str] = field(default_factory=list)
    from_cache: bool = False

    @property
    def interocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[T.IRIS_L[0], :2] - self.landmarks[T.IRIS_R[0], :2]))


@dataclass
class FramedPortrait:
    """The portrait framed for output: the frame at the output size and the landmarks in its pixels."""

    frame: np.ndarray  # HxWx3 uint8 RGB, H,W = output size
    landmarks: np.ndarray  # 478x3 float32, frame pixels
    portrait: Portrait
    """The whole photo it was framed from."""

    @property
    def path(self) -> Path:
        """The portrait file."""
        return Path(self.portrait.source)

    @property
    def shape(self) -> np.ndarray:
        """The face shape the student is told (`engine.face.shape.portrait_shape`)."""
        return portrait_shape(self.landmarks)


def _check_human(image: np.ndarray, lm: np.ndarray, name: str, require_skin: bool) -> list[str]:
    """Raise for faces that are not human skin (robots, statues); return warnings."""
    warnings: list[str] = []
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    face = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(face, [np.round(lm[list(T.FACE_OVAL), :2]).astype(np.int32)], 1)
    holes = [T.eye_polygon("L"), T.eye_polygon("R"),
             T.LIPS_OUTER_UPPER + tuple(reversed(T.LIPS_OUTER_LOWER[1:-1]))]
    for poly in holes:
        cv2.fillPoly(face, [np.round(lm[list(poly), :2]).astype(np.int32)], 0)
    skin = ycc[face.astype(bool)]
    if len(skin) < 50:
        raise PortraitError(f"No usable human face in {name}: the face found is too small or cut off.")
    whole_chroma = float(np.abs(ycc[..., 1:] - 128).mean())
    warmth = float((skin[:, 1] - 128).mean() - (skin[:, 2] - 128).mean())
    if whole_chroma < GREY_CHROMA:
        warnings.append("black-and-white image: skin tone cannot be checked")
    elif require_skin and warmth < MIN_SKIN_WARMTH:
        raise PortraitError(
            f"No human face in {name}: a face shape was found, but it has no skin tones (it looks like a "
            "robot, statue, mask or a strongly colour-tinted photo). Pick a portrait of a person; if this "
            "image does show a person, use --no-skin-check.")
    return warnings


def _cache_path(cache_dir: Path, sha: str) -> Path:
    return cache_dir / f"portrait-v{CACHE_VERSION}-{sha[:32]}.safetensors"


def load_portrait(path: Path | str, cache_dir: Path | None = None, landmarker: FaceLandmarker | None = None,
                   require_skin: bool = True) -> Portrait:
    """Load a portrait, find the largest face, fit landmarks, check it. Cached by content hash."""
    path = Path(path)
    image, sha = load_image(path)
    if cache_dir is not None:
        cached = _load_cached(_cache_path(Path(cache_dir), sha), image, path)
        if cached is not None:
            if require_skin:  # the cache holds faces accepted with --no-skin-check too: check again (cheap)
                _check_human(image, cached.landmarks, str(path), require_skin)
            for msg in cached.warnings:  # said on every use, as on the first
                log.warning("%s: %s", path.name, msg)
            return cached
    landmarker = landmarker or FaceLandmarker()
    portrait = _analyse(image, sha, path, landmarker, require_skin)
    if cache_dir is not None:
        _save_cached(_cache_path(Path(cache_dir), sha), portrait)
    return portrait


def _analyse(image: np.ndarray, sha: str, path: Path, landmarker: FaceLandmarker, require_skin: bool) -> Portrait:
    h, w = image.shape[:2]
    work = image
    upscale = 1.0
    if max(h, w) < 384:  # detectors need the face at a few dozen pixels at least
        upscale = 384 / max(h, w)
        work = np.asarray(Image.fromarray(image).resize((round(w * upscale), round(h * upscale)),
                                                        Image.Resampling.BICUBIC))
    boxes = [b for b in landmarker.detect_faces(work) if b.score >= landmarker.min_score]
    lm = None
    for box in boxes[:3]:  # largest first; fall through if the mesh does not fit it
        lm = landmarker.mesh(work, box)
        if lm is not None:
            break
    if lm is None:
        lm = landmarker.mesh(work)  # whole image: catches faces filling the frame
    if lm is None:
        raise PortraitError(f"No face found in {path}. Pick a portrait where one face is clearly visible, "
                            "facing the camera, not too small and not cut off.")
    lm = lm / np.float32(upscale)
    warnings = []
    if len(boxes) > 1:
        msg = f"{len(boxes)} faces found in {path.name}; using the largest"
        log.warning(msg)
        warnings.append(msg)
    face_w = float(lm[:, 0].max() - lm[:, 0].min())
    if face_w < MIN_FACE_PX:
        raise PortraitError(f"The face in {path} is only {face_w:.0f} pixels wide; use an image where the "
                            f"face is at least {MIN_FACE_PX} pixels wide (ideally 200+).")
    if face_w < 128:
        warnings.append(f"small face ({face_w:.0f} px wide): a photo with a larger face gives a sharper avatar")
    warnings += _check_human(image, lm, str(path), require_skin)
    human = check_human_face(image, lm)
    if human is not None:
        log.debug("%s: human-face detector confidence %s", path.name, human.confidence)
        if not human.human:
            warnings.append(NOT_HUMAN_WARNING)
    for msg in warnings[1 if len(boxes) > 1 else 0:]:
        log.warning("%s: %s", path.name, msg)
    return Portrait(image=image, landmarks=lm.astype(np.float32), source=str(path), sha256=sha,
                  n_faces=max(1, len(boxes)), warnings=warnings)


def _save_cached(file: Path, portrait: Portrait) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    meta = {"source": portrait.source, "sha256": portrait.sha256, "n_faces": str(portrait.n_faces),
            "warnings": json.dumps(portrait.warnings), "shape": json.dumps(list(portrait.image.shape))}
    tmp = file.with_suffix(".tmp")
    save_file({"landmarks": portrait.landmarks}, str(tmp), metadata=meta)
    tmp.replace(file)


def _load_cached(file: Path, image: np.ndarray, path: Path) -> Portrait | None:
    if not file.exists():
        return None
    try:
        with safe_open(str(file), framework="numpy") as f:
            meta = f.metadata()
        lm = load_file(str(file))["landmarks"]
        if json.loads(meta["shape"]) != list(image.shape) or lm.shape != (T.N_LANDMARKS, 3):
            log.warning("Stale portrait cache entry %s ignored", file.name)
            return None
    except (OSError, KeyError, ValueError, SafetensorError) as exc:  # corrupt entry: recompute, say so
        log.warning("Unreadable portrait cache entry %s ignored (%s)", file, exc)
        return None
    log.debug("Portrait cache hit for %s", path.name)
    return Portrait(image=image, landmarks=lm, source=str(path), sha256=meta["sha256"],
                  n_faces=int(meta["n_faces"]), warnings=json.loads(meta["warnings"]), from_cache=True)


def framing(landmarks: np.ndarray, image_hw: tuple[int, int], size: tuple[int, int] = (512, 512),
            face_fraction: float = 0.42, max_upscale: float = 0.0) -> tuple[int, int, int, int]:
    """The crop (x0, y0, width, height) of an image that frames its face for output `size` (w, h).

    The face (forehead to chin) takes `face_fraction` of the frame height where the image allows;
    otherwise the largest crop that fits is used (the face then appears larger). `max_upscale` > 0: the crop
    is never enlarged more than that, so a small face is framed with more of its picture around it instead
    of being blown up past its detail (the face then appears smaller; an image smaller than the frame is
    still enlarged as a whole).
    """
    out_w, out_h = size
    ih, iw = image_hw
    oval = landmarks[list(T.FACE_OVAL), :2]
    face_h = float(oval[:, 1].max() - oval[:, 1].min())
    cx = float(oval[:, 0].mean())
    cy = float(oval[:, 1].min() + oval[:, 1].max()) / 2
    crop_h = face_h / face_fraction
    if max_upscale > 0:  # a limit under 1 would shrink every photo: it counts as 1 (never enlarged)
        crop_h = max(crop_h, out_h / max(1.0, max_upscale))
    crop_w = crop_h * out_w / out_h
    fit = min(1.0, iw / crop_w, ih / crop_h)
    crop_w, crop_h = crop_w * fit, crop_h * fit
    x0 = int(round(np.clip(cx - crop_w / 2, 0, iw - crop_w)))
    y0 = int(round(np.clip(cy - 0.48 * crop_h, 0, ih - crop_h)))
    cw, ch = max(1, min(iw - x0, int(round(crop_w)))), max(1, min(ih - y0, int(round(crop_h))))
    return x0, y0, cw, ch


@overload
def apply_framing(image: np.ndarray, landmarks: np.ndarray, crop: tuple[int, int, int, int],
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def apply_framing(image: np.ndarray, landmarks: None, crop: tuple[int, int, int, int],
                  size: tuple[int, int]) -> tuple[np.ndarray, None]: ...


def apply_framing(image: np.ndarray, landmarks: np.ndarray | None, crop: tuple[int, int, int, int],
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop `image` to `crop` and resize it to `size` (w, h); map `landmarks` the same way."""
    out_w, out_h = size
    x0, y0, cw, ch = crop
    sx, sy = out_w / cw, out_h / ch
    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_CUBIC
    frame = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (out_w, out_h), interpolation=interp)
    out_lm = None
    if landmarks is not None:
        out_lm = landmarks.copy()
        out_lm[:, 0] = (landmarks[:, 0] - x0) * sx
        out_lm[:, 1] = (landmarks[:, 1] - y0) * sy
        out_lm[:, 2] = landmarks[:, 2] * sx
        out_lm = out_lm.astype(np.float32)
    return np.ascontiguousarray(frame), out_lm


def frame_portrait(portrait: Portrait, size: tuple[int, int] = (512, 512), face_fraction: float = 0.42,
                   max_upscale: float = 0.0) -> FramedPortrait:
    """Crop the portrait around the face to the output aspect and resize to `size` (w, h) (see `framing`)."""
    crop = framing(portrait.landmarks, portrait.image.shape[:2], size, face_fraction, max_upscale)
    if max_upscale > 0 and crop != framing(portrait.landmarks, portrait.image.shape[:2], size, face_fraction):
        log.info("%s: framed wider than usual, so the photo is enlarged %.2fx at most (a small face is not blown up "
                 "past its detail)", Path(portrait.source).name, size[1] / crop[3])
    frame, lm = apply_framing(portrait.image, portrait.landmarks, crop, size)
    return FramedPortrait(frame=frame, landmarks=lm, portrait=portrait)


def default_portrait_landmarks() -> np.ndarray:
    """Landmarks of the bundled default portrait (the reference face of training's quick evaluations and of
    the drift check)."""
    from engine import paths

    return load_portrait(paths.default_portrait()).landmarks
