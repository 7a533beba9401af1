"""`talkcam data real`: ingest the real talking-people clips (../shared/data/real) with their own audio.

For every clip of `talking_manifest.csv` (folders `talking/` and `talking_lowres/`):
- the face is tracked on every 25 fps frame and the motion fitted (`engine.data.ingest`); the split-screen
  interview is ingested as two speakers, each half on its own;
- the **audio/mouth offset** is measured: the speaker's detrended mouth opening is correlated with the
  audio's loudness envelope at lags of -15..+15 frames; the peak's prominence over far lags (20-50 frames)
  is its z-score. Mouths lead or trail loudness by a natural amount, so the correction is the clip's lag
  minus the median lag of the confidently measured clips (z >= 3); it is applied when the clip's own
  z >= 2.5. Clips shorter than 6 s are too short to measure and keep offset 0 (their sync rests on
  provenance: studio corpora). A longer clip whose z < 1.5 (no audio/mouth relation) or whose peak sits
  at the edge of the search is rejected;
- whole speakers are held out for evaluation (`HELDOUT`), never frames of a training clip.

Writes OUT/train (corpus shards, scenario "real"), OUT/heldout (the held-out clips as shards, plus their
audio as WAV for `talkcam eval realsync`) and OUT/report.json + report.md (offsets, z, decisions).
"""

from __future__ import annotations

import csv
import json
import logging
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from engine.audio.io import FPS, SAMPLE_RATE, load_audio
from engine.curves import detrend, lagged_pearson

log = logging.getLogger(__name__)

HELDOUT = (
    "talking/DFRF__french.mp4",  # E. Macron, French, 50 s
    "talking/video-retalking__1.mp4",  # young man, English, 6 s
    "talking/spectre__M026_level_3_disgusted_018.mp4",  # MEAD M026 (studio)
    "talking/Real3DPortrait__May_5s.mp4",  # Theresa May
    "talking/icpr2020dfdc__lynaeydofd.mp4",  # DFDC real video, man on couch
    "talking/VisualVoice__noisy_restaurant.mp4",  # heavy background noise (voice-activity check)
    "talking_lowres/EDTalk__RD_Radio51_000.mp4",  # HDTF RD_Radio51
)
"""Clips whose speakers never enter training (whole people; no other clip of theirs is in the data)."""

MAX_LAG = 15
"""Lags searched (frames, 600 ms); a peak at the edge is no measurement."""
MIN_MEASURE_SECONDS = 6.0
"""Shorter clips are too short for a trustworthy offset (their far-lag statistics cover the whole clip)."""

SPLIT = {"talking/VisualVoice__interview.mp4": ("left", "right")}
"""Split-screen clips: each half is one speaker."""


@dataclass
class ClipSync:
    lag: int
    """Frames by which the mouth trails (+) or leads (-) the loudness at the correlation peak."""
    r: float
    z: float


class _Measured(TypedDict):
    """One tracked clip (or half of a split-screen clip) before its offset is decided."""

    row: dict
    half: str | None
    motion: np.ndarray
    mouth: np.ndarray
    audio: np.ndarray
    sync: ClipSync
    face_found: float
    neutral: int
    size: tuple[int, int]


def loudness(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Per video frame RMS level in dB (floored 60 dB below the clip's peak)."""
    per = SAMPLE_RATE // FPS
    a = np.zeros(n_frames * per, np.float32)
    a[: min(len(audio), len(a))] = audio[: len(a)]
    rms = np.sqrt((a.reshape(n_frames, per) ** 2).mean(1) + 1e-12)
    db = 20 * np.log10(rms)
    return np.maximum(db, db.max() - 60)


def measure_sync(mouth: np.ndarray, audio: np.ndarray, max_lag: int | None = None) -> ClipSync:
    """Audio/mouth lag of a clip from the loudness envelope (see the module docstring)."""
    max_lag = MAX_LAG if max_lag is None else max_lag
    n = len(mouth)
    x = detrend(np.asarray(mouth, np.float64), 12.0)
    y = detrend(loudness(audio, n).astype(np.float64), 12.0)

    near = {k: lagged_pearson(x, y, k) for k in range(-max_lag, max_lag + 1)}  # mouth at t + k, loudness at t
    lag = max(near, key=near.__getitem__)
    far = [lagged_pearson(x, y, s * k) for k in range(20, min(51, n // 3)) for s in (-1, 1)]
    z = (near[lag] - np.mean(far)) / (np.std(far) + 1e-9) if len(far) >= 6 else 0.0
    return ClipSync(lag=int(lag), r=float(near[lag]), z=float(z))


def manifest_rows(root: Path) -> list[dict]:
    with (root / "talking_manifest.csv").open(encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["file"].startswith(("talking/", "talking_lowres/"))]


def ingest_real(root: Path, out: Path, max_seconds: float | None = None, only: tuple[str, ...] = (),
                train_corpus: Path | None = None) -> dict:
    """Ingest every talking clip of `root` (../shared/data/real) into OUT/heldout and `train_corpus`
    (default OUT/train; give a TTS corpus to train on the mix)."""
    from engine.data.ingest import fit_motion, track_face, write_clip
    from engine.face.landmarks import FaceLandmarker
    from engine.face.tracking import mouth_opening

    root, out = Path(root), Path(out)
    rows = manifest_rows(root)
    if only:
        rows = [r for r in rows if any(o in r["file"] for o in only)]
    landmarker = FaceLandmarker()
    measured: list[_Measured] = []
    try:
        for row in rows:
            video = root / row["file"]
            audio = load_audio(video)
            for half in SPLIT.get(row["file"], (None,)):
                tr = track_face(video, landmarker, int(max_seconds * FPS) if max_seconds else None, half=half)
                motion, ref = fit_motion(tr)
                mouth = mouth_opening(tr.landmarks)
                ok = np.isfinite(mouth)
                mouth = np.interp(np.arange(len(mouth)), np.flatnonzero(ok), mouth[ok]) if ok.any() else mouth
                n = int(min(len(motion), np.ceil(len(audio) / SAMPLE_RATE * FPS)))
                sync = measure_sync(mouth[:n], audio)
                measured.append({"row": row, "half": half, "motion": motion[:n], "mouth": mouth[:n], "audio": audio,
                                 "sync": sync, "face_found": float(tr.found[:n].mean()), "neutral": ref,
                                 "size": tr.size})
                log.info("%s%s: %d frames, lag %+d, r %.2f, z %.1f", row["file"], f" ({half})" if half else "", n,
                         sync.lag, sync.r, sync.z)
    finally:
        landmarker.close()
    confident = [m["sync"].lag for m in measured if m["sync"].z >= 3.0 and len(m["motion"]) >= MIN_MEASURE_SECONDS * FPS
                 and abs(m["sync"].lag) < MAX_LAG]
    natural = int(np.median(confident)) if confident else 0
    clips: list[dict] = []
    report = {"natural_lag": natural, "confident_clips": len(confident), "clips": clips}
    for m in measured:
        row, sync, n = m["row"], m["sync"], len(m["motion"])
        seconds = n / FPS
        if seconds < MIN_MEASURE_SECONDS:
            decision, shift = "kept at offset 0 (too short to measure; sync by provenance)", 0
        elif sync.z < 1.5:
            decision, shift = "rejected: no audio/mouth relation (z < 1.5)", None
        elif abs(sync.lag) >= MAX_LAG:
            decision, shift = f"rejected: correlation peak at the edge of the search (|lag| >= {MAX_LAG})", None
        elif sync.z >= 2.5:
            shift = sync.lag - natural
            decision = f"offset corrected by {shift:+d} frames" if shift else "in sync"
        else:
            decision, shift = "kept at offset 0 (too weak to measure; sync by provenance)", 0
        held = row["file"] in HELDOUT
        name = Path(row["file"]).stem + (f"_{m['half']}" if m["half"] else "")
        rec = {"file": row["file"], "half": m["half"], "name": name, "seconds": round(seconds, 2),
               "lag": sync.lag, "r": round(sync.r, 3), "z": round(sync.z, 2), "shift": shift, "decision": decision,
               "split": "heldout" if held else "train", "face_found": round(m["face_found"], 3),
               "license": row.get("license", ""), "who": row.get("who", "")}
        clips.append(rec)
        if shift is None:
            continue
        motion, audio = m["motion"], m["audio"]
        if shift > 0:  # the mouth trails: motion[t + shift] belongs to audio frame t
            motion = motion[shift:]
        elif shift < 0:
            motion = np.concatenate([np.repeat(motion[:1], -shift, 0), motion])[:n]
        dest = out / "heldout" if held else Path(train_corpus or out / "train")
        info = {"id": f"real-{name}", "scenario": "real", "language": _language(row), "voice": f"real:{name}",
                "style": "real", "text": "", "augment": {},
                "source": {"video": row["file"], "half": m["half"], "license": row.get("license", ""),
                           "neutral_frame": m["neutral"], "face_found": rec["face_found"], "shift": shift,
                           "size": list(m["size"])}}
        write_clip(dest, audio, motion, info)
        if held:  # its sound track, for `talkcam eval realsync`
            pcm = np.round(np.clip(audio[: int(len(motion) / FPS * SAMPLE_RATE)], -1, 1) * 32767).astype("<i2")
            with wave.open(str(dest / f"{name}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes(pcm.tobytes())
    (out / "report.json").write_text(json.dumps(report, indent=1), "utf-8")
    (out / "report.md").write_text(report_markdown(report), "utf-8")
    return report


def _language(row: dict) -> str:
    return "fr" if "french" in row["file"] else "en"


def report_markdown(report: dict) -> str:
    lines = [f"Natural lag (median over {report['confident_clips']} clips with z >= 3): {report['natural_lag']:+d} frames "
             "(mouth after loudness > 0).", "",
             "| clip | split | seconds | lag | r | z | decision |", "|---|---|---|---|---|---|---|"]
    for c in report["clips"]:
        lines.append(f"| {c['name']} | {c['split']} | {c['seconds']:.1f} | {c['lag']:+d} | {c['r']:.2f} | {c['z']:.1f} | "
                     f"{c['decision']} |")
    return "\n".join(lines) + "\n"
