"""Mouth realism (`talkcam eval realism`): does an open mouth look like a real person's?

Everything is measured on pixels, with landmarks re-measured by MediaPipe's face mesh on every frame
(never the renderer's own landmarks), so real video and rendered video go through the same code:

- **realism judge**: a small CNN trained to tell real open-mouth crops (held-out real speakers) from
  rendered ones (held-out portraits speaking held-out real speech). Crops are aligned on the eyes and the
  mouth (1.2 interocular distances, 64 px). Its accuracy is measured with leave-one-source-out folds: each
  fold holds out one real video and one portrait entirely, so the judge cannot win by recognising which
  video or portrait a crop came from. Balanced accuracy, 50% = indistinguishable;
- **inner-mouth colour**: mean CIELAB inside the inner-lip polygon, relative to the cheek (a*, b*: a
  purple cast has b* below the skin's and a* near it), against real open mouths;
- **inner-mouth detail**: Laplacian std inside the inner-lip polygon over that on the cheeks;
- **teeth share**: the share of inner-mouth pixels that are teeth (bright against the skin, unsaturated);
- **skin detail around the mouth**: Laplacian std in a ring of skin around the lips over that around the
  eyes, frame against the portrait's own (1.0 = the portrait's detail kept);
- **flicker**: mean absolute second temporal difference of the aligned mouth crop (grey levels), against
  real video's;
- **identity distance**: dlib face-recognition distance between the portrait and its frames.

Rendered variants come from the working code (with and without the refiner) and from folders of MP4s made
by other versions (`--compare NAME=DIR`, files named PORTRAIT__CLIP.mp4), side by side in one run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.face import topology as T

log = logging.getLogger(__name__)

OPEN_GAP = 0.10
"""Inner-lip gap (interocular distances) from which a frame counts as an open mouth."""
CROP = 64
"""Side of the aligned mouth crops the judge sees."""
CROP_IOD = 1.2
"""Crop side in interocular distances (lips, teeth and the skin around them)."""
IDENTITY_EVERY = 4
"""Identity distance on every 4th frame (the face-recognition network costs ~0.1 s a frame on a CPU)."""
CHEEKS = (205, 425)
"""Cheek landmarks (subject's right, left) where the reference skin is sampled."""


def iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[468, :2] - lm[473, :2]))


def lip_gap(lm: np.ndarray) -> float:
    """Inner-lip opening at the centre (landmarks 13-14) in interocular distances."""
    return float(np.linalg.norm(lm[14, :2] - lm[13, :2]) / max(iod(lm), 1e-6))


def _poly(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m.astype(bool)


def _disc(shape: tuple[int, int], centre: np.ndarray, r: float) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, (int(round(centre[0])), int(round(centre[1]))), max(1, int(round(r))), 1, -1)
    return m.astype(bool)


def _grow(mask: np.ndarray, r: float) -> np.ndarray:
    k = max(1, int(round(r)))
    return cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))) > 0


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def teeth_mask(rgb: np.ndarray, inside: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Teeth pixels among `inside`: at least 0.45 of the skin's luminance (teeth in the mouth's shadow
    count), and unsaturated (chroma below 0.3 of the luminance: skin, lips, gums and tongue are far more
    saturated)."""
    px = rgb.astype(np.float32)
    lum = luminance(rgb)
    chroma = px.max(-1) - px.min(-1)
    skin_lum = float(skin @ np.array([0.299, 0.587, 0.114]))
    return inside & (lum >= 0.45 * skin_lum) & (chroma <= 0.30 * np.maximum(lum, 1.0) + 6.0)


@dataclass
class Regions:
    inner: np.ndarray
    cheeks: np.ndarray
    ring: np.ndarray  # skin around the lips
    eyes: np.ndarray


def regions(shape: tuple[int, int], lm: np.ndarray) -> Regions:
    d = iod(lm)
    inner = _poly(shape, lm[list(T.inner_mouth_polygon()), :2])
    lips = _poly(shape, lm[list(T.LIPS_OUTER_UPPER + tuple(reversed(T.LIPS_OUTER_LOWER[1:-1]))), :2])
    ring = _grow(lips, 0.20 * d) & ~_grow(lips, 0.05 * d)
    ring &= ~_poly(shape, lm[[98, 2, 327, 4], :2])  # not the nostrils
    cheeks = _disc(shape, lm[CHEEKS[0], :2], 0.13 * d) | _disc(shape, lm[CHEEKS[1], :2], 0.13 * d)
    eyes = (_grow(_poly(shape, lm[list(T.eye_polygon("L")), :2]), 0.12 * d)
            | _grow(_poly(shape, lm[list(T.eye_polygon("R")), :2]), 0.12 * d))
    return Regions(inner, cheeks, ring, eyes)


def _lap_std(lap: np.ndarray, mask: np.ndarray) -> float:
    return float(lap[mask].std()) if mask.sum() >= 8 else float("nan")


def measure(rgb: np.ndarray, lm: np.ndarray) -> dict:
    """Pixel measures of one frame with its re-measured landmarks."""
    r = regions(rgb.shape[:2], lm)
    lap = cv2.Laplacian(luminance(rgb), cv2.CV_32F, ksize=3)
    skin = np.median(rgb[r.cheeks].astype(np.float32), axis=0) if r.cheeks.any() else np.full(3, 128.0, np.float32)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    skin_lab = np.median(lab[r.cheeks], axis=0) if r.cheeks.any() else np.zeros(3, np.float32)
    n_inner = int(r.inner.sum())
    out: dict[str, float | list[float]]
    out = {"gap": lip_gap(lm), "inner_px": n_inner,
           "skin_detail": _lap_std(lap, r.ring) / max(_lap_std(lap, r.eyes), 1e-6)}
    if n_inner >= 20:
        cheek = _lap_std(lap, r.cheeks)
        out["inner_detail"] = _lap_std(lap, r.inner) / max(cheek, 1e-6)
        out["teeth"] = float(teeth_mask(rgb, r.inner, skin).sum() / n_inner)
        mean_lab = lab[r.inner].mean(0)
        out["inner_lab"] = [float(v) for v in mean_lab - skin_lab]  # dL, da, db against the cheek
    return out


def mouth_crop(rgb: np.ndarray, lm: np.ndarray, side: int = CROP) -> np.ndarray:
    """[side, side, 3] uint8: the mouth, levelled on the eye line, CROP_IOD interocular distances wide."""
    eye_l, eye_r = lm[473, :2], lm[468, :2]
    ang = np.degrees(np.arctan2(eye_l[1] - eye_r[1], eye_l[0] - eye_r[0]))
    centre = lm[list(T.LIPS_OUTER_UPPER + T.LIPS_OUTER_LOWER), :2].mean(0)
    scale = side / (CROP_IOD * iod(lm))
    mat = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(ang), scale)
    mat[:, 2] += side / 2 - centre
    return cv2.warpAffine(rgb, mat, (side, side), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


@dataclass
class Clip:
    """One measured video: per-frame measures, aligned mouth crops and their open flags."""

    name: str
    source: str  # what a leave-one-source-out fold holds out (the real video, or the portrait)
    measures: list[dict] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    identity: list[float] = field(default_factory=list)

    @property
    def open(self) -> np.ndarray:
        return np.array([m["gap"] >= OPEN_GAP and "inner_detail" in m for m in self.measures], bool)

    def open_crops(self) -> np.ndarray:
        idx = np.flatnonzero(self.open)
        return np.stack([self.crops[i] for i in idx]) if len(idx) else np.zeros((0, CROP, CROP, 3), np.uint8)

    def flicker(self) -> float:
        if len(self.crops) < 3:
            return float("nan")
        g = np.stack([luminance(c) for c in self.crops])
        return float(np.abs(g[2:] - 2 * g[1:-1] + g[:-2]).mean())


def measure_video(frames, landmarker, name: str, source: str, portrait: tuple[np.ndarray, np.ndarray] | None = None,
                  identity=None, every: int = 1) -> Clip:
    """Track a video with the face mesh and measure every `every`-th frame. With the portrait (image,
    landmarks) and an identity model, also the identity distance of each measured frame to the portrait."""
    from engine.face.tracking import track

    frames = list(frames)[::every]
    tr = track(frames, landmarker)
    clip = Clip(name, source)
    ref = identity.embed(*portrait) if identity is not None and portrait is not None else None
    for i, (img, lm, ok) in enumerate(zip(frames, tr.landmarks, tr.found)):
        if not ok:
            continue
        clip.measures.append(measure(img, lm))
        clip.crops.append(mouth_crop(img, lm))
        if ref is not None and i % IDENTITY_EVERY == 0:
            clip.identity.append(identity.distance(ref, identity.embed(img, lm)))
    return clip


def _median(values) -> float:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    return float(np.median(v)) if len(v) else float("nan")


def summarise(clips: list[Clip], portrait_detail: dict[str, float] | None = None) -> dict:
    """Medians over the open frames of every clip (skin detail over all frames, relative to the portrait's)."""
    opened = [m for c in clips for m, o in zip(c.measures, c.open) if o]
    out: dict[str, Any]  # JSON report
    out = {"frames": sum(len(c.measures) for c in clips), "open_frames": len(opened),
           "inner_detail": _median(m["inner_detail"] for m in opened),
           "teeth": _median(m["teeth"] for m in opened),
           "teeth_mean": float(np.mean([m["teeth"] for m in opened])) if opened else float("nan"),
           "inner_dL": _median(m["inner_lab"][0] for m in opened),
           "inner_da": _median(m["inner_lab"][1] for m in opened),
           "inner_db": _median(m["inner_lab"][2] for m in opened),
           "flicker": _median(c.flicker() for c in clips)}
    if portrait_detail:
        out["skin_detail_kept"] = _median(m["skin_detail"] / portrait_detail[c.source]
                                          for c in clips for m in c.measures if c.source in portrait_detail)
    ids = [d for c in clips for d in c.identity]
    if ids:
        out["identity"] = float(np.mean(ids))
    per_clip = {}
    for c in clips:
        o = [m for m, f in zip(c.measures, c.open) if f]
        per_clip[c.name] = {"open_frames": len(o), "inner_detail": _median(m["inner_detail"] for m in o),
                            "teeth": _median(m["teeth"] for m in o)}
    out["clips"] = per_clip
    return out


class Judge(nn.Module):
    """A small CNN: aligned mouth crop [B, 3, 64, 64] in 0..1 -> logit (real > 0)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4 * w, 4 * w, 3, 2, 1), nn.LeakyReLU(0.2))
        self.head = nn.Linear(4 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x * 2.0 - 1.0).mean((2, 3)))[:, 0]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror, shift by up to 4 px, and jitter brightness/contrast: the judge must look at content."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = 1.0 + 0.15 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    bias = 0.05 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    return ((x - 0.5) * gain + 0.5 + bias).clamp(0, 1)


def _tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0


def judge_accuracy(real: dict[str, np.ndarray], fake: dict[str, np.ndarray], steps: int = 300, batch: int = 64,
                   seed: int = 0) -> dict:
    """Leave-one-source-out balanced accuracy of a judge trained on real vs fake crops.

    real/fake: source -> crops [N, 64, 64, 3] uint8. Fold i holds out real source i (mod) and fake source i
    (mod); the judge trains on all the other sources (real and fake drawn equally) and is scored on the
    held-out ones: (accuracy on real + accuracy on fake) / 2."""
    rs = [k for k, v in real.items() if len(v)]
    fs = [k for k, v in fake.items() if len(v)]
    if len(rs) < 2 or len(fs) < 2:
        raise ValueError(f"The judge needs open-mouth crops from at least 2 real and 2 rendered sources "
                         f"(got {len(rs)} and {len(fs)})")
    folds = []
    for i in range(max(len(rs), len(fs))):
        r_out, f_out = rs[i % len(rs)], fs[i % len(fs)]
        torch.manual_seed(seed + i)
        gen = torch.Generator().manual_seed(seed + i)
        tr_r = _tensor(np.concatenate([real[k] for k in rs if k != r_out]))
        tr_f = _tensor(np.concatenate([fake[k] for k in fs if k != f_out]))
        net = Judge()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.5, 0.999))
        for _ in range(steps):
            ir = torch.randint(0, len(tr_r), (batch // 2,), generator=gen)
            i_f = torch.randint(0, len(tr_f), (batch // 2,), generator=gen)
            x = _augment(torch.cat([tr_r[ir], tr_f[i_f]]), gen)
            y = torch.cat([torch.ones(batch // 2), torch.zeros(batch // 2)])
            loss = F.binary_cross_entropy_with_logits(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            s_r, s_f = net(_tensor(real[r_out])).numpy(), net(_tensor(fake[f_out])).numpy()
        acc_r, acc_f = float((s_r > 0).mean()), float((s_f <= 0).mean())
        folds.append({"real": r_out, "rendered": f_out, "acc_real": round(acc_r, 3), "acc_rendered": round(acc_f, 3),
                      "balanced": round(0.5 * (acc_r + acc_f), 3), "auc": round(auc(s_r, s_f), 3)})
    return {"accuracy": float(np.mean([f["balanced"] for f in folds])),
            "auc": float(np.mean([f["auc"] for f in folds])), "folds": folds}


def auc(real_scores: np.ndarray, fake_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a real crop scores above a rendered one (ties count half).
    Unlike accuracy at a fixed threshold, it does not depend on where a shifted held-out source lands, so a
    fold whose every crop is called "real" is not mistaken for indistinguishable."""
    r = np.asarray(real_scores, np.float64)[:, None]
    f = np.asarray(fake_scores, np.float64)[None, :]
    return float(((r > f).sum() + 0.5 * (r == f).sum()) / max(r.size * f.size, 1))


# ---------------------------------------------------------------------------------------------- the run


def _read_frames(path: Path, max_frames: int | None = None):
    from engine.data.ingest import video_frames

    return video_frames(path, 25, max_frames)


def portrait_reference(portrait: Path, landmarker, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The framed portrait as the renderer shows it at motion 0 (image, re-measured landmarks)."""
    from engine.render.avatar import prepare_portrait

    framed = prepare_portrait(portrait, size, max_upscale=0.0, landmarker=landmarker, require_skin=False)
    lm = landmarker.mesh(framed.frame)
    return framed.frame, (lm if lm is not None else framed.landmarks)


def _cache_file(cache: Path | None, video: Path, what: str) -> Path | None:
    """Where a video's measurement is kept: named by the video's path, size and time (a new render of the
    same name is measured again) and by what was measured."""
    if cache is None:
        return None
    import hashlib

    st = video.stat()
    key = hashlib.sha256(f"{video.resolve()}|{st.st_size}|{st.st_mtime_ns}|{what}|v1".encode()).hexdigest()[:20]
    return cache / f"{video.stem}-{key}.npz"


def _measured(video: Path, cache: Path | None, what: str, make) -> Clip:
    """`make()` once per video (and settings); later runs read the kept measurement."""
    file = _cache_file(cache, video, what)
    if file is not None and file.exists():
        with np.load(file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            crops = list(z["crops"]) if len(z["crops"]) else []
            return Clip(meta["name"], meta["source"], meta["measures"], crops, meta["identity"])
    clip = make()
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        stacked = np.stack(clip.crops) if clip.crops else np.zeros((0, CROP, CROP, 3), np.uint8)
        meta = {"name": clip.name, "source": clip.source, "measures": clip.measures, "identity": clip.identity}
        np.savez_compressed(file, crops=stacked, meta=np.array(json.dumps(meta)))
    return clip


def real_clips(paths: list[Path], landmarker, max_seconds: float, every: int = 2, cache: Path | None = None) -> list[Clip]:
    clips = []
    for p in paths:
        clip = _measured(p, cache, f"real|{max_seconds}|{every}", lambda p=p: measure_video(
            _read_frames(p, int(max_seconds * 25)), landmarker, p.stem, p.stem, every=every))
        log.info("real %s: %d frames measured, %d open", p.stem, len(clip.measures), int(clip.open.sum()))
        clips.append(clip)
    return clips


def rendered_clips(folder: Path, landmarker, portraits: dict[str, tuple[np.ndarray, np.ndarray]], identity,
                   cache: Path | None = None) -> list[Clip]:
    clips = []
    for mp4 in sorted(folder.glob("*.mp4")):
        stem = mp4.stem.split("__", 1)[0]
        ref = portraits.get(stem)
        clip = _measured(mp4, cache, f"rendered|{IDENTITY_EVERY}|{ref is not None}", lambda mp4=mp4, stem=stem, ref=ref:
                         measure_video(_read_frames(mp4), landmarker, mp4.stem, stem, portrait=ref, identity=identity))
        log.info("%s: %d frames measured, %d open", mp4, len(clip.measures), int(clip.open.sum()))
        clips.append(clip)
    return clips


def _most_open(clip: Clip, n: int) -> np.ndarray:
    """Indices of the clip's n measured frames with the widest lip gap, widest first."""
    return np.argsort(-np.array([m["gap"] for m in clip.measures]))[:n]


def sheet(variants: dict[str, list[Clip]], n_cols: int = 6, scale: int = 2) -> np.ndarray:
    """Crop sheet (RGB): per portrait a block of rows (one per variant), the same frames in each row: the
    frames where the first variant's mouth is most open."""
    first = next(iter(variants.values()))
    blocks = []
    side = CROP * scale
    for clip in first:
        if not clip.measures:
            continue
        idx = np.sort(_most_open(clip, n_cols))
        rows = []
        for name, clips in variants.items():
            other = next((c for c in clips if c.name == clip.name), None)
            tiles = []
            for i in idx:
                t = np.zeros((side, side, 3), np.uint8)
                if other is not None and i < len(other.crops):
                    t = cv2.resize(other.crops[i], (side, side), interpolation=cv2.INTER_NEAREST)
                tiles.append(t)
            label = np.full((side, 150, 3), 255, np.uint8)
            cv2.putText(label, name[:18], (4, side // 2 - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(label, clip.source[:18], (4, side // 2 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90), 1,
                        cv2.LINE_AA)
            rows.append(np.hstack([label] + tiles))
        blocks.append(np.vstack(rows))
        blocks.append(np.full((6, blocks[-1].shape[1], 3), 255, np.uint8))
    return np.vstack(blocks) if blocks else np.zeros((side, side, 3), np.uint8)


def real_sheet(clips: list[Clip], n_cols: int = 6, scale: int = 2) -> np.ndarray:
    """The real speakers' most open mouths (third-party frames: for looking at locally, never to commit)."""
    rows = []
    side = CROP * scale
    for c in clips:
        if not c.measures:
            continue
        idx = _most_open(c, n_cols)
        tiles = [cv2.resize(c.crops[i], (side, side), interpolation=cv2.INTER_NEAREST) for i in idx]
        tiles += [np.zeros((side, side, 3), np.uint8)] * (n_cols - len(tiles))
        rows.append(np.hstack(tiles))
    return np.vstack(rows) if rows else np.zeros((side, side, 3), np.uint8)


TARGETS = {"judge": 0.70, "inner_detail": 2.5, "skin_detail_kept": 0.9, "teeth": 0.20}


def table(res: dict) -> str:
    cols = ("judge", "judge_auc", "inner_detail", "inner_detail_photo", "teeth", "inner_dL", "inner_da", "inner_db",
            "skin_detail_kept", "flicker", "identity")
    lines = ["| variant | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, s in res["variants"].items():
        vals = []
        for c in cols:
            v = s.get(c)
            vals.append("–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def realism(real: list[Path], portraits: list[Path], audio: list[Path], out: Path, compare: dict[str, Path],
            render_self: bool = True, max_seconds: float = 8.0, real_seconds: float = 20.0, judge_steps: int = 300,
            photos: tuple[str, ...] = (), size: tuple[int, int] = (512, 512)) -> dict:
    """The full run: render (working code, with and without the refiner), measure, judge, report."""
    from engine.eval.identity import IdentityModel
    from engine.face.landmarks import FaceLandmarker

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    variants: dict[str, Path] = {}
    if render_self:
        from engine.render.renderer import RendererConfig
        from engine.runtime.render_file import render_file

        for name, refine in (("new", True), ("new_no_refiner", False)):
            folder = out / "renders" / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, p in enumerate(portraits):
                a = audio[i % len(audio)]
                dest = folder / f"{p.stem}__{a.stem}.mp4"
                if not dest.exists():
                    render_file(a, p, dest, render=RendererConfig(size=size, refiner=refine, max_upscale=0.0), require_skin=False,
                                max_seconds=max_seconds, overwrite=True)
            variants[name] = folder
    variants.update(compare)
    landmarker = FaceLandmarker()
    identity = IdentityModel()
    try:
        refs = {p.stem: portrait_reference(p, landmarker, size) for p in portraits}
        portrait_detail = {k: measure(img, lm)["skin_detail"] for k, (img, lm) in refs.items()}
        cache = out / "measured"
        real_measured = real_clips(real, landmarker, real_seconds, cache=cache)
        measured = {name: rendered_clips(folder, landmarker, refs, identity, cache) for name, folder in variants.items()}
    finally:
        landmarker.close()
    res: dict[str, Any]  # JSON report
    res = {"real": summarise(real_measured), "variants": {}, "targets": TARGETS,
           "portraits": [p.name for p in portraits], "real_clips": [p.name for p in real],
           "audio": [a.name for a in audio]}
    real_crops = {c.source: c.open_crops() for c in real_measured}
    for name, clips in measured.items():
        s = summarise(clips, portrait_detail)
        photo = [c for c in clips if c.source in photos]
        if photo:
            s["inner_detail_photo"] = summarise(photo)["inner_detail"]
        parts: dict[str, list[np.ndarray]] = {}
        for c in clips:
            parts.setdefault(c.source, []).append(c.open_crops())
        fake = {k: np.concatenate(v) for k, v in parts.items()}
        s["judge_detail"] = judge_accuracy(real_crops, fake, steps=judge_steps)
        s["judge"] = s["judge_detail"]["accuracy"]
        s["judge_auc"] = s["judge_detail"]["auc"]
        res["variants"][name] = s
        log.info("%s: judge %.3f, inner detail %.2f, teeth %.2f", name, s["judge"], s["inner_detail"], s["teeth"])
    res["table"] = table(res)
    (out / "realism.json").write_text(json.dumps(res, indent=1, default=float), "utf-8")
    (out / "realism.md").write_text(
        "# Mouth realism\n\nReal open mouths (held-out speakers): inner detail %.2f, teeth %.2f, dL %.1f, da %.1f, "
        "db %.1f, flicker %.2f\n\n%s\n" % (res["real"]["inner_detail"], res["real"]["teeth"], res["real"]["inner_dL"],
                                           res["real"]["inner_da"], res["real"]["inner_db"], res["real"]["flicker"],
                                           res["table"]), "utf-8")
    img = sheet(measured)
    cv2.imwrite(str(out / "realism_sheet.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out / "real_sheet_local.png"), cv2.cvtColor(real_sheet(real_measured), cv2.COLOR_RGB2BGR))
    return res
