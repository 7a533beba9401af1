"""Reading any image a user might pick, safely: formats, EXIF rotation, alpha, grey, huge, tiny."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_PIXELS = 250_000_000
"""Refuse images larger than this (decompression-bomb guard); a 10k x 10k photo is 100 MP."""
WORK_MAX_SIDE = 4096
"""Images are reduced to at most this many pixels on their longer side after loading."""
MIN_SIDE = 16


class PortraitError(ValueError):
    """A portrait cannot be used; the message names the file and says what to do."""


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_image(path: Path) -> tuple[np.ndarray, str]:
    """Return (RGB uint8 HxWx3, sha256 of the file's bytes). Raises PortraitError with the reason."""
    path = Path(path)
    if not path.exists():
        raise PortraitError(f"Portrait {path} does not exist.")
    if path.is_dir():
        raise PortraitError(f"Portrait {path} is a folder, not an image file.")
    data = path.read_bytes()
    if not data:
        raise PortraitError(f"Portrait {path} is an empty file.")
    digest = file_digest(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # our own limit below, with a clearer message
            img: Image.Image = Image.open(path)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise PortraitError(
                    f"Portrait {path} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), more than the "
                    f"{MAX_PIXELS / 1e6:.0f} MP this app accepts. Resize it (a few megapixels is plenty).")
            if min(w, h) < MIN_SIDE:
                raise PortraitError(f"Portrait {path} is only {w}x{h} pixels; use an image at least "
                                    "128 pixels on each side with the face clearly visible.")
            if img.format == "JPEG" and max(w, h) > 2 * WORK_MAX_SIDE:
                img.draft("RGB", (w // 2, h // 2))  # decode at reduced scale: much faster, same result
            img = ImageOps.exif_transpose(img)
            img.load()
    except PortraitError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PortraitError(f"Portrait {path} is not a readable image ({type(exc).__name__}: {exc}). "
                            "Use a JPEG, PNG, WebP or BMP file.") from exc
    rgb = _to_rgb(img)
    h, w = rgb.shape[:2]
    if max(h, w) > WORK_MAX_SIDE:
        scale = WORK_MAX_SIDE / max(h, w)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(new, Image.Resampling.LANCZOS))
        log.info("Portrait %s reduced from %dx%d to %dx%d for processing", path.name, w, h, *new)
    return np.ascontiguousarray(rgb), digest


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any mode -> RGB; transparent areas are composited on a light neutral background."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (235, 235, 235, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = 255.0 * (arr - arr.min()) / max(arr.max() - arr.min(), 1.0)
        return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))
