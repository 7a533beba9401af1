"""`talkcam data refiner`: training pairs for the decoder refiner, from real talking videos.

Self-reconstruction: for a reference frame i of a real clip (it plays the portrait) and another frame
j of the same clip, the motion of frame j is fitted on frame i's motion basis, the renderer warps
frame i by it, and the refiner must turn that rendering into the real frame j. Both frames are framed
as a portrait is for output (`engine.face.portrait.framing`, with no upscale limit: the face always takes
the same share of the frame), so the crop the refiner sees has the live scale; the refiner works on a
crop resampled to its fixed work size, so the live limit on small faces' enlargement changes only how
sharp that crop is. Pairs whose fitted motion does not explain frame j's lips (head turned beyond the
basis, tracking errors) are dropped: the target must line up with the rendering.

Synthetic identity pairs (a portrait at zero motion must come out unchanged) come from the reference
frames and from the project's own portraits.

Frames from a clip's held-out time range (`--heldout STEM:START_S`) only ever pair with each other
and go to the held-out split; evaluation uses them (`talkcam eval refiner`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

import cv2
import numpy as np
from safetensors.numpy import load_file, save_file

from engine import motion as M
from engine.audio.io import FPS
from engine.data.ingest import video_frames
from engine.face.landmarks import FaceLandmarker
from engine.face.portrait import FramedPortrait, Portrait, apply_framing, framing
from engine.face.tracking import mouth_opening, track
from engine.render.avatar import build_avatar
from engine.render.refiner import CropConfig, CropGeometry
from engine.render.renderer import RendererConfig

log = logging.getLogger(__name__)

LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
        78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402, 318, 324)


@dataclass
class RefinerDataConfig:
    """Build refiner training pairs from real talking videos."""

    videos: tuple[Path, ...]
    """Real talking videos (any with one face visible most of the time)."""
    out: Path
    """Output folder: train.safetensors, heldout.safetensors, build.json."""
    heldout: tuple[str, ...] = ("sun_video:17",)
    """STEM:START_S: frames of video STEM from START_S seconds on are held out (STEM:0 holds out all of it)."""
    portraits: tuple[Path, ...] = ()
    """Portraits for synthetic identity pairs (zero motion -> unchanged)."""
    size: tuple[int, int] = (512, 512)
    """Output frame size the pairs are framed for (the live default)."""
    work: int = 128
    """Side (pixels) the refiner network runs at: every crop is resampled to it (a multiple of 8)."""
    store: int = 144
    """Stored side: the work crop plus context (training takes random crops of the work side)."""
    refs_per_clip: int = 8
    targets_per_ref: int = 36
    max_gap: float = 4.0
    """Largest time between reference and target frame (seconds)."""
    max_fit_error: float = 0.05
    """Drop pairs whose fitted motion misplaces the lip landmarks by more than this (interocular units)."""
    max_seconds: float = 30.0
    """Only the first seconds of each video."""
    seed: int = 0
    crop: CropConfig = field(default_factory=CropConfig)


@dataclass
class _Pairs:
    rendered: list = field(default_factory=list)
    reference: list = field(default_factory=list)
    target: list = field(default_factory=list)
    mask: list = field(default_factory=list)
    motion: list = field(default_factory=list)
    meta: list = field(default_factory=list)

    def add(self, rendered, reference, target, mask, motion, meta) -> None:
        self.rendered.append(rendered)
        self.reference.append(reference)
        self.target.append(target)
        self.mask.append(mask)
        self.motion.append(motion.astype(np.float32))
        self.meta.append(meta)

    def save(self, path: Path) -> int:
        if not self.rendered:
            return 0
        save_file({"rendered": np.stack(self.rendered), "reference": np.stack(self.reference),
                   "target": np.stack(self.target), "mask": np.stack(self.mask), "motion": np.stack(self.motion)},
                  str(path), metadata={"meta": json.dumps(self.meta)})
        return len(self.rendered)


def load_pairs(path: Path | str) -> dict[str, np.ndarray]:
    """A split written by `build_pairs`: rendered/reference/target [N, S, S, 3] uint8, mask [N, S, S] uint8,
    motion [N, DIM] float32."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: build refiner pairs first (talkcam data refiner)")
    return load_file(str(path))


def _heldout_start(stem: str, specs: tuple[str, ...]) -> float | None:
    for spec in specs:
        name, _, start = spec.partition(":")
        if name == stem:
            return float(start or 0.0)
    return None


class _Cropper:
    """The stored crop around the refiner's crop for one portrait: same centre, `store/refine` more context."""

    def __init__(self, geometry: CropGeometry, store: int, work: int) -> None:
        self.g = geometry
        self.store = store
        self.side = int(round(geometry.side * store / work))
        fh, fw = geometry.frame_hw
        self.side = min(self.side, fh, fw)

    def corner(self, motion: np.ndarray) -> tuple[int, int]:
        x, y = self.g.corner(motion)
        fh, fw = self.g.frame_hw
        c = (self.side - self.g.side) // 2
        return int(np.clip(x - c, 0, fw - self.side)), int(np.clip(y - c, 0, fh - self.side))

    def take(self, img: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
        x0, y0 = corner
        patch = img[y0:y0 + self.side, x0:x0 + self.side]
        if self.side == self.store:
            return np.ascontiguousarray(patch)
        interp = cv2.INTER_AREA if self.side > self.store else cv2.INTER_CUBIC
        return cv2.resize(patch, (self.store, self.store), interpolation=interp)

    def mask(self, motion: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
        m = self.g.mask(motion, corner, self.side)
        m = cv2.resize(m, (self.store, self.store), interpolation=cv2.INTER_AREA) if self.side != self.store else m
        return (m * 255.0 + 0.5).astype(np.uint8)


def framed_reference(frame: np.ndarray, landmarks: np.ndarray, size: tuple[int, int],
                     source: str) -> tuple[tuple[int, int, int, int], FramedPortrait]:
    """A video frame framed as a portrait is for output (no upscale limit): its crop box and the framed
    portrait."""
    box = framing(landmarks, frame.shape[:2], size)
    img, lm = apply_framing(frame, landmarks, box, size)
    assert lm is not None  # landmarks were given
    return box, FramedPortrait(frame=img, landmarks=lm,
                             portrait=Portrait(image=frame, landmarks=landmarks, source=source, sha256=""))


def fit_frame(frame: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int],
              basis: M.MotionBasis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Another frame of the same video in the reference's framing: (image, landmarks, motion fitted on the
    reference's basis)."""
    img, lm = apply_framing(frame, landmarks, box, size)
    assert lm is not None  # landmarks were given
    return img, lm, basis.fit(lm, rigid=True)


class _ClipStats(TypedDict):
    frames: int
    face_found: float
    pairs: dict[str, int]
    """split -> pairs"""
    dropped_fit: int


def _pairs_for_clip(video: Path, cfg: RefinerDataConfig, landmarker: FaceLandmarker, rng: np.random.Generator,
                    splits: dict[str, _Pairs], stats: dict) -> None:
    max_frames = int(cfg.max_seconds * FPS) if cfg.max_seconds else None
    frames = list(video_frames(video, FPS, max_frames))
    tr = track(frames, landmarker)
    start = _heldout_start(video.stem, cfg.heldout)
    t = np.arange(len(frames)) / FPS
    held = (t >= start) if start is not None else np.zeros(len(frames), bool)
    found = tr.found.copy()
    clip_stats: _ClipStats = {"frames": len(frames), "face_found": float(found.mean()), "pairs": {},
                              "dropped_fit": 0}
    render_cfg = RendererConfig(size=cfg.size, refiner=False)
    for split, in_split in (("train", ~held), ("heldout", held)):
        idx = np.flatnonzero(found & in_split)
        if len(idx) < 10:
            continue
        n_refs = max(2, round(cfg.refs_per_clip * len(idx) / len(frames)))
        # portraits usually show a closed or slightly open mouth: prefer such reference frames
        mo = mouth_opening(tr.landmarks[idx])
        closed = idx[mo <= np.percentile(mo, 50)]
        refs = rng.choice(closed, size=min(n_refs, len(closed)), replace=False)
        count = 0
        for i in refs:
            box, framed = framed_reference(frames[i], tr.landmarks[i], cfg.size, f"{video.name}#{i}")
            img_i, lm_i = framed.frame, framed.landmarks
            renderer = build_avatar(framed, render_cfg).renderer
            basis = renderer.rig.basis
            cropper = _Cropper(CropGeometry(lm_i, basis, img_i.shape[:2], cfg.crop, cfg.work), cfg.store, cfg.work)
            iod = float(np.linalg.norm(lm_i[468, :2] - lm_i[473, :2]))
            near = idx[(np.abs(idx - i) <= cfg.max_gap * FPS) & (idx != i)]
            targets = rng.choice(near, size=min(cfg.targets_per_ref, len(near)), replace=False)
            motions, target_imgs, metas = [], [], []
            for j in targets:
                img_j, lm_j, m = fit_frame(frames[j], tr.landmarks[j], box, cfg.size, basis)
                err = float(np.abs(basis.landmarks(m)[list(LIPS), :2] - lm_j[list(LIPS), :2]).mean() / iod)
                if err > cfg.max_fit_error:
                    clip_stats["dropped_fit"] += 1
                    continue
                motions.append(m)
                target_imgs.append(img_j)
                metas.append({"clip": video.stem, "ref": int(i), "frame": int(j), "fit_error": round(err, 4)})
            # one synthetic identity pair per reference: zero motion must leave the portrait unchanged
            motions.append(M.zeros())
            target_imgs.append(img_i)
            metas.append({"clip": video.stem, "ref": int(i), "frame": int(i), "fit_error": 0.0, "identity": True})
            for k in range(0, len(motions), 8):
                batch = np.stack(motions[k:k + 8])
                for m, img_r, img_t, meta in zip(batch, renderer.render(batch), target_imgs[k:k + 8], metas[k:k + 8]):
                    c = cropper.corner(m)
                    splits[split].add(cropper.take(img_r, c), cropper.take(img_i, c), cropper.take(img_t, c),
                                      cropper.mask(m, c), m, meta)
                    count += 1
        clip_stats["pairs"][split] = count
    stats[video.name] = clip_stats
    log.info("%s: %d frames, face on %.0f%%, pairs %s, %d dropped (fit error)", video.name, len(frames),
             100 * clip_stats["face_found"], clip_stats["pairs"], clip_stats["dropped_fit"])


def _identity_pairs(portrait: Path, cfg: RefinerDataConfig, landmarker: FaceLandmarker, pairs: _Pairs) -> None:
    # training's fixed framing (no upscale limit): every face fills the same share of the frame
    avatar = build_avatar(portrait, RendererConfig(size=cfg.size, refiner=False, max_upscale=0.0), landmarker=landmarker)
    framed, renderer = avatar.framed, avatar.renderer
    cropper = _Cropper(CropGeometry(framed.landmarks, renderer.rig.basis, framed.frame.shape[:2], cfg.crop, cfg.work), cfg.store, cfg.work)
    m = M.zeros()
    img = renderer.render(m)[0]
    c = cropper.corner(m)
    pairs.add(cropper.take(img, c), cropper.take(framed.frame, c), cropper.take(framed.frame, c), cropper.mask(m, c),
              m, {"clip": portrait.stem, "identity": True})


def build_pairs(cfg: RefinerDataConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    splits = {"train": _Pairs(), "heldout": _Pairs()}
    stats: dict = {}
    landmarker = FaceLandmarker()
    try:
        for video in cfg.videos:
            if not Path(video).exists():
                raise FileNotFoundError(f"Video {video} does not exist")
            _pairs_for_clip(Path(video), cfg, landmarker, rng, splits, stats)
        for portrait in cfg.portraits:
            _identity_pairs(Path(portrait), cfg, landmarker, splits["train"])
    finally:
        landmarker.close()
    counts = {name: p.save(out / f"{name}.safetensors") for name, p in splits.items()}
    if counts["train"] == 0:
        raise ValueError("No training pairs: give real talking videos where a face is visible")
    info = {"config": json.loads(json.dumps(asdict(cfg), default=str)), "pairs": counts, "clips": stats}
    (out / "build.json").write_text(json.dumps(info, indent=1), "utf-8")
    log.info("Refiner pairs in %s: %s", out, counts)
    return info
