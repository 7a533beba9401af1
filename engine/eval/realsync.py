"""Real-voice lip sync on held-out real speakers (`talkcam eval realsync`).

For every clip of a held-out real corpus (`talkcam data real`: whole speakers that no model trained on),
each motion source makes the portrait speak the speaker's own audio; the rendered frames are re-measured
with MediaPipe's face mesh and the mouth opening is correlated with the real speaker's own mouth opening
(measured with the same face mesh on the real video, aligned by the offset the ingestion applied) at lags
of -8..+8 frames: r at the best lag, the lag, and r at lag 0.

Sources side by side, in one run:
- ``loudness``: the loudness follower baseline (mouth = smoothed loudness: jawOpen from the level);
- any model folder (a student streams through the live session, audio pushed in 40 ms pieces, with its
  voice-activity gate unless `name:novad`).

Per clip it also writes the mouth curves (CLIP_mouth.png), a crop sheet of the speaker's mouth against each
source at the same frames (CLIP_sheet.png: third-party frames, for looking at locally, never to commit) and
the same sheet without the speaker (CLIP_avatars.png).

Voice activity: on the noisy-restaurant clip the frames where the real speaker's mouth stays closed for
>= 5 frames in a row are the non-speech frames; on a white-noise file every frame is. The share of those
frames where the avatar's lip gap stays < 0.03 IOD is reported.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from engine import motion as M
from engine.audio.io import FPS, SAMPLE_RATE
from engine.data.real import loudness
from engine.eval import metrics as E
from engine.eval.evaluate import EvalConfig, Evaluator

log = logging.getLogger(__name__)
CLOSED = 0.03
"""Lip gap (IOD) below which the mouth counts as closed in the voice-activity check."""
NOISE_CLIP = "VisualVoice__noisy_restaurant"


def loudness_motion(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """The loudness-follower baseline: jawOpen follows the smoothed level (dB between the clip's 10th and
    97th percentile mapped to 0..0.7), everything else neutral."""
    db = loudness(audio, n_frames)
    lo, hi = np.percentile(db, 10), np.percentile(db, 97)
    env = gaussian_filter1d(np.clip((db - lo) / max(hi - lo, 1e-6), 0, 1), 1.0)
    mo = np.zeros((n_frames, M.DIM), np.float32)
    mo[:, M.index("jawOpen")] = 0.7 * env
    return mo


def _load_source(what: str):
    """None for the loudness follower, else (the student's session models, voice gate on)."""
    if what == "loudness":
        return None
    from engine.runtime.stream import load_session_models

    folder, _, flag = str(what).partition(":")
    return load_session_models(Path(folder)), flag != "novad"


def _source_motion(source, audio: np.ndarray, n: int, shape: np.ndarray, steps: int, **session) -> np.ndarray:
    """A source's motion for a clip; a student streams through the live session (`session`: further
    engine.runtime.config.SessionConfig fields, e.g. chunk, lookahead, seed)."""
    if source is None:
        return loudness_motion(audio, n)
    from engine.runtime.config import SessionConfig
    from engine.runtime.stream import StudentStream

    models, gate = source
    sess = StudentStream(models.student, SessionConfig(steps=steps, voice_activity=gate, **session),
                          schedule=models.schedule, shape=shape)
    mo = np.concatenate(list(sess.stream(audio, 640, n)))
    return mo[:n]


def closed_runs(mouth: np.ndarray, closed: float = CLOSED, run: int = 5) -> np.ndarray:
    """Frames inside runs of >= `run` frames whose lip gap is below `closed` (the speaker is not talking)."""
    return E.long_runs(np.nan_to_num(mouth, nan=1.0) < closed, run)


def speaker_mouth(clip, real_root: Path, landmarker, n: int) -> np.ndarray:
    """The real speaker's own mouth opening over a held-out clip's first `n` audio frames: the face mesh on
    its video (`real_root` / the clip's source video), aligned by the offset the ingestion applied (NaN
    where the video has no frame)."""
    from engine.data.ingest import track_face
    from engine.face.tracking import mouth_opening

    src = clip.info["source"]
    shift = int(src.get("shift") or 0)
    tr = track_face(real_root / src["video"], landmarker, n + max(shift, 0) + 1, half=src.get("half"))
    ref = mouth_opening(tr.landmarks)
    ref = ref[shift:] if shift > 0 else np.concatenate([np.full(-shift, np.nan), ref])
    return ref[:n]


def realsync(heldout: Path, real_root: Path, portrait: Path, out: Path, sources: dict[str, str],
             config: EvalConfig | None = None, max_seconds: float = 20.0, noise_seconds: float = 10.0,
             cache_dir: Path | None = None) -> dict:
    """Score every source on every held-out clip (first `max_seconds` of each) and on white noise."""
    from engine.data.corpus import read_manifest, read_shard

    cfg = config or EvalConfig(size=(256, 256))
    ev = Evaluator(cfg)
    framed = ev.frame(portrait, cache_dir)
    shape = framed.shape
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(heldout)
    loaded = {name: _load_source(what) for name, what in sources.items()}
    result: dict = {"portrait": str(portrait), "size": list(cfg.size), "clips": {}, "noise": {},
                    "noise_seconds": noise_seconds}
    for row in rows:
        clip = read_shard(heldout / row["shard"])[row["index"]]
        src = clip.info["source"]
        n = min(clip.frames, int(max_seconds * FPS))
        audio = clip.audio[: int(n / FPS * SAMPLE_RATE)]
        shift = int(src.get("shift") or 0)
        ref = speaker_mouth(clip, real_root, ev.landmarker, n)
        per = {"seconds": n / FPS, "language": clip.info.get("language", "?")}
        picks = _sheet_frames(ref)
        sheet = {"speaker": _video_frames(real_root / src["video"], picks, shift, src.get("half"))}
        curves = {"speaker": ref}
        level = loudness(audio, n)
        quiet = closed_runs(ref) if row["id"].endswith(NOISE_CLIP) else None
        for name, source in loaded.items():
            mo = _source_motion(source, audio, n, shape, cfg.steps)
            kept: dict[int, np.ndarray] = {}
            m = ev.measure(_keep(ev.render(framed, mo), picks, kept))
            sheet[name] = [kept.get(i) for i in picks]
            curves[name] = m.mouth[:n]
            lc = E.lag_corr(m.mouth[:n], ref, 8)
            loud = E.lag_corr(m.mouth[:n], level, 8)
            per[name] = {"r": lc.r, "lag": lc.offset, "r0": lc.r0, "r_loudness": loud.r}
            if quiet is not None:
                per[name]["nonspeech_frames"] = int(quiet.sum())
                per[name]["nonspeech_closed"] = float((np.nan_to_num(m.mouth[:n][quiet], nan=1) < CLOSED).mean()) \
                    if quiet.any() else float("nan")
            log.info("%s %s: r %.3f lag %+d (r0 %.3f)", row["id"], name, lc.r, lc.offset, lc.r0)
        own = E.lag_corr(ref, level, 8)
        per["speaker_vs_loudness"] = own.r
        result["clips"][row["id"]] = per
        name = row["id"].removeprefix("real-")
        _plot_curves(out / f"{name}_mouth.png", curves, name)
        _crop_sheet(out / f"{name}_sheet.png", sheet, ev.landmarker)  # with the speaker: third-party frames, keep local
        _crop_sheet(out / f"{name}_avatars.png", {k: v for k, v in sheet.items() if k != "speaker"}, ev.landmarker)
        _write(out, result)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(int(noise_seconds * SAMPLE_RATE)) * 0.05).astype(np.float32)
    n = int(noise_seconds * FPS)
    for name, source in loaded.items():
        mo = _source_motion(source, noise, n, shape, cfg.steps)
        m = ev.measure(ev.render(framed, mo))
        result["noise"][name] = {"closed": float((np.nan_to_num(m.mouth, nan=1) < CLOSED).mean()),
                                 "mean_gap": float(np.nanmean(m.mouth))}
    result["summary"] = summarize(result, list(sources))
    result["table"] = table(result, list(sources))
    _write(out, result)
    (out / "realsync.md").write_text(result["table"], "utf-8")
    return result


def _sheet_frames(ref: np.ndarray, count: int = 8) -> list[int]:
    """Frames for the crop sheet: the speaker's most open and most closed moments, spread over the clip."""
    ok = np.flatnonzero(np.isfinite(ref))
    if len(ok) < count:
        return ok.tolist()
    parts = np.array_split(ok, count)
    return [int(p[np.nanargmax(ref[p])] if i % 2 == 0 else p[np.nanargmin(ref[p])]) for i, p in enumerate(parts)]


def _keep(frames, picks: list[int], kept: dict):
    want = set(picks)
    for i, f in enumerate(frames):
        if i in want:
            kept[i] = f
        yield f


def _video_frames(video: Path, picks: list[int], shift: int, half: str | None) -> list[np.ndarray | None]:
    """The real speaker's frames at the audio frames `picks` (the ingestion's offset applied)."""
    from engine.data.ingest import video_frames

    if not picks:
        return []
    want = {i + shift: i for i in picks}
    got: dict[int, np.ndarray] = {}
    for j, f in enumerate(video_frames(video, FPS, max(want) + 1, half)):
        if j in want:
            got[want[j]] = f
    return [got.get(i) for i in picks]


def _face_crop(img: np.ndarray | None, landmarker, size: int = 160) -> np.ndarray:
    from PIL import Image

    from engine.face.tracking import track

    if img is None:
        return np.zeros((int(size * 0.8), size, 3), np.uint8)
    tr = track([img], landmarker)
    if not tr.found[0]:
        return np.asarray(Image.fromarray(img).resize((size, int(size * 0.8))))
    lm = tr.landmarks[0]
    mouth = lm[[13, 14, 61, 291], :2].mean(0)
    half = 0.9 * np.linalg.norm(lm[468, :2] - lm[473, :2])
    x0, y0 = int(mouth[0] - half), int(mouth[1] - half * 0.8)
    box = (x0, y0, x0 + int(2 * half), y0 + int(1.6 * half))
    return np.asarray(Image.fromarray(img).crop(box).resize((size, int(size * 0.8))))


def _crop_sheet(path: Path, sheet: dict[str, list], landmarker) -> None:
    """Rows: the real speaker, then each source; columns: the same frames. Mouth crops."""
    from PIL import Image, ImageDraw

    rows = []
    for name, frames in sheet.items():
        crops = [_face_crop(f, landmarker) for f in frames]
        row = np.concatenate(crops, 1)
        label = Image.new("RGB", (110, row.shape[0]), (255, 255, 255))
        ImageDraw.Draw(label).text((4, row.shape[0] // 2 - 6), name, fill=(0, 0, 0))
        rows.append(np.concatenate([np.asarray(label), row], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def _plot_curves(path: Path, curves: dict[str, np.ndarray], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.2))
    t = np.arange(len(curves["speaker"])) / FPS
    for name, y in curves.items():
        y = np.asarray(y, float)
        z = (y - np.nanmean(y)) / (np.nanstd(y) + 1e-9)
        ax.plot(t[: len(z)], z[: len(t)], lw=2.0 if name == "speaker" else 1.0, label=name,
                color="k" if name == "speaker" else None, alpha=1.0 if name == "speaker" else 0.8)
    ax.set_title(f"{title}: mouth opening (standardised), real speaker vs avatar")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right", ncol=len(curves))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summarize(result: dict, names: list[str]) -> dict:
    out = {}
    for name in names:
        rs = [c[name]["r"] for c in result["clips"].values() if name in c]
        lags = [c[name]["lag"] for c in result["clips"].values() if name in c]
        out[name] = {"median_r": float(np.median(rs)) if rs else float("nan"), "min_r": float(np.min(rs)) if rs else float("nan"),
                     "lags": lags, "noise_closed": result["noise"].get(name, {}).get("closed")}
    return out


def table(result: dict, names: list[str]) -> str:
    clips = list(result["clips"])
    lines = ["Held-out real speakers: correlation of the avatar's re-measured mouth opening with the speaker's own "
             "(r at the best lag, lag in frames; + = avatar late). Last column: the speaker's own mouth against loudness.", "",
             "| clip | seconds | " + " | ".join(names) + " | speaker vs loudness |", "|---" * (len(names) + 3) + "|"]
    for cid in clips:
        c = result["clips"][cid]
        cells = [f"{c[n]['r']:.3f} ({c[n]['lag']:+d})" if n in c else "-" for n in names]
        lines.append(f"| {cid.removeprefix('real-')} | {c['seconds']:.0f} | " + " | ".join(cells)
                     + f" | {c['speaker_vs_loudness']:.3f} |")
    s = result.get("summary", {})
    if s:
        lines.append("| **median** | | " + " | ".join(f"**{s[n]['median_r']:.3f}**" for n in names) + " | |")
        lines.append("| min | | " + " | ".join(f"{s[n]['min_r']:.3f}" for n in names) + " | |")
    lines += ["", "Voice activity: share of non-speech frames with the lips closed (< 0.03 IOD).", "",
              "| input | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    noisy = next((c for k, c in result["clips"].items() if k.endswith(NOISE_CLIP)), None)
    if noisy is not None:
        lines.append("| noisy restaurant (frames the speaker's mouth stays shut) | "
                     + " | ".join(f"{noisy[n].get('nonspeech_closed', float('nan')):.2f}" for n in names) + " |")
    if result["noise"]:
        lines.append(f"| white noise, {result.get('noise_seconds', 10):g} s | " + " | ".join(f"{result['noise'][n]['closed']:.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def _write(out: Path, result: dict) -> None:
    (out / "realsync.json").write_text(json.dumps(result, indent=1, default=float), "utf-8")
