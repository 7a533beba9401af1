"""`talkcam train refiner-eval`: the refiner's effect, measured on frames it never saw.

Three parts, each with and without the refiner:
1. held-out pairs (`talkcam data refiner --heldout ...`): PSNR and SSIM of the mouth crop against the
   real frame (whole crop and mouth region);
2. a held-out time range of a real video played as a sequence from one of its frames: PSNR/SSIM
   against the real frames, mouth sharpness (Laplacian variance) relative to the real frames',
   identity distance to the real frames (dlib) and temporal flicker, next to the real video's own;
3. portraits (paintings, photos, illustrations) driven by real speech through the student: mouth
   sharpness relative to the portrait's own mouth, identity distance to the portrait, flicker.

Flicker is the mean absolute second temporal difference |x[t] - (x[t-1] + x[t+1]) / 2| (0-255 units)
in a fixed box around the mouth: smooth motion scores low, frame-to-frame flashing high.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.eval import metrics as E
from engine.face.portrait import FramedPortrait, PortraitError
from engine.models.loading import load_refiner
from engine.models.refiner import RefinerNet
from engine.render.avatar import build_avatar
from engine.render.refiner import FrameRefiner
from engine.render.renderer import RendererConfig

log = logging.getLogger(__name__)


@dataclass
class RefinerEvalConfig:
    """Measure the refiner on held-out pairs, a held-out real video range and portraits."""

    model: Path | None = None
    """Refiner folder (default: the shipped one)."""
    data: Path | None = None
    """Pairs folder from `talkcam data refiner` (its heldout.safetensors is used)."""
    video: Path | None = None
    """Real talking video whose held-out range is played as a sequence (e.g. ../shared/data/real/sun_video.mp4)."""
    video_start: float = 17.0
    """Start of the video's held-out range (seconds); it runs to the end."""
    portraits: tuple[Path, ...] = ()
    """Portraits to drive with --audio (e.g. ../shared/data/portraits/*)."""
    audio: Path | None = None
    """Real speech for the portraits."""
    seconds: float = 8.0
    """Seconds of --audio per portrait."""
    size: tuple[int, int] = (512, 512)
    identity_every: int = 4
    """Embed every Nth frame for the identity distance."""
    out: Path = Path("refiner_eval")


def flicker(frames: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean |x[t] - (x[t-1] + x[t+1]) / 2| over a box of frames [T, H, W, 3] uint8 (0-255 units)."""
    x0, y0, x1, y1 = box
    h, w = frames.shape[1:3]
    crop = frames[:, max(0, y0):min(h, y1), max(0, x0):min(w, x1)].astype(np.float32)
    if len(crop) < 3 or crop.size == 0:
        return float("nan")
    return float(np.abs(crop[1:-1] - 0.5 * (crop[:-2] + crop[2:])).mean())


def _psnr_ssim(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from engine.train.refiner import psnr, ssim_map

    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255.0
    return float(psnr(ta, tb)[0]), float(ssim_map(ta, tb).mean())


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return round(float(np.mean(vals)), 4) if vals else float("nan")


class _Both:
    """Renders a motion sequence with and without the refiner (same warp, same crop)."""

    def __init__(self, framed: FramedPortrait, net: RefinerNet, size: tuple[int, int]) -> None:
        self.renderer = build_avatar(framed, RendererConfig(size=size, refiner=False)).renderer
        self.refiner = FrameRefiner(net, self.renderer.rig.frame, framed.landmarks, self.renderer.rig.basis)

    def __call__(self, motion: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        raw, refined = [], []
        for i in range(0, len(motion), batch):
            r = self.renderer.render(motion[i:i + batch], refine=False)
            raw.append(r.copy())
            refined.append(self.refiner.refine(r, motion[i:i + batch]))
        return np.concatenate(raw), np.concatenate(refined)


def sequence_eval(net: RefinerNet, video: Path, start: float, size: tuple[int, int], identity, every: int) -> dict:
    """Play a real video's held-out range from its first frame (the 'portrait'); compare with the real frames."""
    from engine.audio.io import FPS
    from engine.data.ingest import video_frames
    from engine.face.landmarks import FaceLandmarker
    from engine.face.tracking import track
    from engine.train.refiner_data import fit_frame, framed_reference

    frames = list(video_frames(video, FPS))[int(round(start * FPS)):]
    lm_tracker = FaceLandmarker()
    try:
        tr = track(frames, lm_tracker)
    finally:
        lm_tracker.close()
    idx = np.flatnonzero(tr.found)
    if len(idx) < 10:
        raise ValueError(f"{video}: a face was found on only {len(idx)} frames after {start} s")
    i0 = int(idx[0])
    box, framed = framed_reference(frames[i0], tr.landmarks[i0], size, f"{video.name}#{i0}")
    both = _Both(framed, net, size)
    real, lms, motion = zip(*(fit_frame(frames[j], tr.landmarks[j], box, size, both.renderer.rig.basis) for j in idx))
    real, motion = np.stack(real), np.stack(motion)
    raw, refined = both(motion)
    geometry = both.refiner.geometry
    rows = []
    for k in range(len(real)):
        x, y = geometry.corner(motion[k])
        s = geometry.side
        mb = E.mouth_box(lms[k])
        row = {}
        for name, img in (("raw", raw[k]), ("refined", refined[k])):
            p, q = _psnr_ssim(img[y:y + s, x:x + s], real[k][y:y + s, x:x + s])
            row[f"psnr_{name}"], row[f"ssim_{name}"] = p, q
            row[f"sharp_{name}"] = E.sharpness(img, mb) / max(E.sharpness(real[k], mb), 1e-6)
        if identity is not None and k % every == 0:
            ref = identity.embed(real[k], lms[k])
            for name, img in (("raw", raw[k]), ("refined", refined[k])):
                row[f"id_{name}"] = identity.distance(identity.embed(img, lms[k]), ref)
        rows.append(row)
    fbox = E.mouth_box(framed.landmarks, pad=0.8)
    out = {"frames": len(rows), "video": video.name, "start_s": start}
    for key in ("psnr", "ssim", "sharp", "id"):
        for name in ("raw", "refined"):
            out[f"{key}_{name}"] = _mean(rows, f"{key}_{name}")
    out.update(flicker_raw=flicker(raw, fbox), flicker_refined=flicker(refined, fbox), flicker_real=flicker(real, fbox))
    return out


def student_motion(framed: FramedPortrait, audio: np.ndarray) -> np.ndarray:
    """The shipped student's motion for `audio` (16 kHz), streamed as live."""
    import math

    from engine.audio.io import SAMPLE_RATE
    from engine.runtime.stream import SessionConfig, StudentStream, load_session_models

    n = max(1, math.ceil(len(audio) / SAMPLE_RATE * 25))
    student, corrector, schedule = load_session_models()
    sess = StudentStream(student, SessionConfig(), corrector, schedule, framed.shape, "speaking")
    with torch.inference_mode():
        return np.concatenate(list(sess.stream(audio, SAMPLE_RATE // 25, n)))


def portrait_eval(net: RefinerNet, portrait: Path, audio: np.ndarray, size: tuple[int, int], identity,
                  every: int, sheet: Path | None = None) -> dict:
    from engine.render.avatar import prepare_portrait

    framed = prepare_portrait(portrait, size, max_upscale=0.0)  # the evaluation's fixed framing
    motion = student_motion(framed, audio)
    both = _Both(framed, net, size)
    raw, refined = both(motion)
    rest_box = E.mouth_box(framed.landmarks)
    base_sharp = max(E.sharpness(framed.frame, rest_box), 1e-6)
    lms = both.renderer.landmarks(motion)
    ref_emb = identity.embed(framed.frame, framed.landmarks) if identity is not None else None
    rows = []
    for k in range(len(motion)):
        mb = E.mouth_box(lms[k])
        row = {f"sharp_{n}": E.sharpness(img, mb) / base_sharp for n, img in (("raw", raw[k]), ("refined", refined[k]))}
        if ref_emb is not None and k % every == 0:
            for name, img in (("raw", raw[k]), ("refined", refined[k])):
                row[f"id_{name}"] = identity.distance(identity.embed(img, lms[k]), ref_emb)
        rows.append(row)
    fbox = E.mouth_box(framed.landmarks, pad=0.8)
    out = {"portrait": portrait.name, "frames": len(rows)}
    for key in ("sharp", "id"):
        for name in ("raw", "refined"):
            out[f"{key}_{name}"] = _mean(rows, f"{key}_{name}")
    out.update(flicker_raw=flicker(raw, fbox), flicker_refined=flicker(refined, fbox))
    if sheet is not None:
        _contact_sheet(sheet, raw, refined, motion, both.refiner)
    return out


def _contact_sheet(path: Path, raw: np.ndarray, refined: np.ndarray, motion: np.ndarray, refiner: FrameRefiner,
                   n: int = 4) -> None:
    """PNG: mouth crops of the n widest-open frames, renderer above, refined below."""
    import cv2

    opening = motion[:, 0]
    picks = np.sort(np.argsort(-opening)[:n])
    g = refiner.geometry
    tiles = []
    for k in picks:
        x, y = g.corner(motion[k])
        s = g.side
        tiles.append(np.concatenate([raw[k][y:y + s, x:x + s], refined[k][y:y + s, x:x + s]], 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))


def evaluate_refiner(cfg: RefinerEvalConfig) -> dict:
    from engine import paths
    from engine.audio.io import SAMPLE_RATE, load_audio

    net = load_refiner(cfg.model or paths.refiner_dir())
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from engine.eval.identity import IdentityModel

        identity = IdentityModel()
    except RuntimeError as exc:
        log.warning("Identity distance left out: %s", exc)
        identity = None
    result: dict = {"config": json.loads(json.dumps(asdict(cfg), default=str))}
    if cfg.data is not None:
        from engine.train.refiner import PairBatches, pair_metrics
        from engine.train.refiner_data import load_pairs

        held = PairBatches(load_pairs(Path(cfg.data) / "heldout.safetensors"), net.config.work, False)
        result["pairs"] = {"n": len(held), **pair_metrics(net, held)}
        log.info("Held-out pairs: %s", result["pairs"])
    if cfg.video is not None:
        result["sequence"] = sequence_eval(net, Path(cfg.video), cfg.video_start, cfg.size, identity, cfg.identity_every)
        log.info("Held-out sequence: %s", result["sequence"])
    if cfg.portraits:
        if cfg.audio is None:
            raise ValueError("--portraits needs --audio (real speech to drive them)")
        audio = load_audio(cfg.audio)[: int(cfg.seconds * SAMPLE_RATE)]
        rows, skipped = [], {}
        for p in cfg.portraits:
            try:
                rows.append(portrait_eval(net, Path(p), audio, cfg.size, identity, cfg.identity_every,
                                          out_dir / "sheets" / f"{Path(p).stem}.png"))
                log.info("%s: %s", Path(p).name, rows[-1])
            except PortraitError as exc:
                skipped[Path(p).name] = str(exc).replace(str(p), Path(p).name)[:160]
                log.info("%s skipped: %s", Path(p).name, skipped[Path(p).name])
        keys = [k for k in rows[0] if k not in ("portrait", "frames")] if rows else []
        result["portraits"] = {"per_portrait": rows, "skipped": skipped,
                               "mean": {k: _mean(rows, k) for k in keys}}
    (out_dir / "refiner_eval.json").write_text(json.dumps(result, indent=1), "utf-8")
    (out_dir / "refiner_eval.md").write_text(table(result), "utf-8")
    return result


def table(r: dict) -> str:
    """Markdown: each measure without and with the refiner."""
    lines = ["| measured on | metric | renderer only | with refiner | better is |", "|---|---|---|---|---|"]
    if "pairs" in r:
        p = r["pairs"]
        name = f"held-out pairs ({p['n']})"
        lines += [f"| {name} | PSNR mouth crop (dB) | {p['psnr_raw']:.2f} | {p['psnr']:.2f} | higher |",
                  f"| {name} | PSNR mouth region (dB) | {p['psnr_mouth_raw']:.2f} | {p['psnr_mouth']:.2f} | higher |",
                  f"| {name} | SSIM mouth crop | {p['ssim_raw']:.4f} | {p['ssim']:.4f} | higher |"]
    if "sequence" in r:
        s = r["sequence"]
        name = f"held-out video {s['video']} from {s['start_s']:g} s ({s['frames']} frames)"
        lines += [f"| {name} | PSNR mouth crop (dB) | {s['psnr_raw']:.2f} | {s['psnr_refined']:.2f} | higher |",
                  f"| {name} | SSIM mouth crop | {s['ssim_raw']:.4f} | {s['ssim_refined']:.4f} | higher |",
                  f"| {name} | mouth sharpness / real frame's | {s['sharp_raw']:.3f} | {s['sharp_refined']:.3f} | 1.0 |",
                  f"| {name} | identity distance to real frame | {s['id_raw']:.4f} | {s['id_refined']:.4f} | lower |",
                  f"| {name} | flicker (real video: {s['flicker_real']:.2f}) | {s['flicker_raw']:.2f} | "
                  f"{s['flicker_refined']:.2f} | lower |"]
    if "portraits" in r and r["portraits"]["per_portrait"]:
        m = r["portraits"]["mean"]
        name = f"{len(r['portraits']['per_portrait'])} portraits, real speech (mean)"
        lines += [f"| {name} | mouth sharpness / portrait's | {m['sharp_raw']:.3f} | {m['sharp_refined']:.3f} | 1.0 |",
                  f"| {name} | identity distance to portrait | {m['id_raw']:.4f} | {m['id_refined']:.4f} | lower |",
                  f"| {name} | flicker | {m['flicker_raw']:.2f} | {m['flicker_refined']:.2f} | lower |"]
        lines += ["", "| portrait | sharpness raw / refined | identity raw / refined | flicker raw / refined |",
                  "|---|---|---|---|"]
        for row in r["portraits"]["per_portrait"]:
            lines.append(f"| {row['portrait']} | {row['sharp_raw']:.3f} / {row['sharp_refined']:.3f} | "
                         f"{row['id_raw']:.4f} / {row['id_refined']:.4f} | "
                         f"{row['flicker_raw']:.2f} / {row['flicker_refined']:.2f} |")
        if r["portraits"]["skipped"]:
            lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in r["portraits"]["skipped"].items())]
    return "\n".join(lines) + "\n"

