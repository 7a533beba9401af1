"""Long-run stability of the streaming student: `talkcam drift`.

A stream of N seconds (real recordings from a folder, cycled, with short pauses between them) is pushed
through the live session in 40 ms pieces, with and without tail forcing. From the motion (and the
landmarks it produces on the default face) it reports, per run:

- drift slope per minute of the one-minute means of jaw opening, mouth opening (IOD), head yaw / pitch /
  roll (degrees) and eye openness, and how far the last minute's means are from the first minute's;
- the mouth stuck open (in pauses) / stuck closed (while voiced) shares, for the first and last minutes;
- head-pose wander: the spread (std) and the largest |mean| of the 10-second means of yaw/pitch/roll.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from engine import motion as M
from engine.audio.io import FPS, SAMPLE_RATE, load_audio
from engine.eval import metrics as E

log = logging.getLogger(__name__)
PIECE = SAMPLE_RATE // FPS
AUDIO_EXT = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


def long_audio(folder: Path, seconds: float, pause: float = 0.6) -> np.ndarray:
    """`seconds` of audio: the recordings in `folder` one after another (sorted), with `pause` s of silence
    between them, cycled."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_EXT)
    if not files:
        raise FileNotFoundError(f"{folder} has no audio files ({', '.join(AUDIO_EXT)})")
    parts, total, gap = [], 0, np.zeros(int(pause * SAMPLE_RATE), np.float32)
    clips = [load_audio(f) for f in files]
    while total < seconds * SAMPLE_RATE:
        for a in clips:
            parts += [a, gap]
            total += len(a) + len(gap)
            if total >= seconds * SAMPLE_RATE:
                break
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def stream(session, audio: np.ndarray) -> tuple[np.ndarray, float]:
    """Motion for `audio` through the session (live pieces); returns it and the seconds it took."""
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        motion = np.concatenate(list(session.stream(audio, PIECE)))
    return motion, time.perf_counter() - t0


def _window_means(y: np.ndarray, n: int) -> np.ndarray:
    k = len(y) // n
    return y[: k * n].reshape(k, n, *y.shape[1:]).mean(1)


def drift_metrics(motion: np.ndarray, audio: np.ndarray, basis: M.MotionBasis | None = None) -> dict:
    from engine.face.tracking import mouth_opening

    n = len(motion)
    mouth = mouth_opening(basis.landmarks(motion)) if basis is not None else motion[:, M.index("jawOpen")]
    voiced = E.voiced_frames(audio, SAMPLE_RATE, n, FPS)
    deg = 180 / np.pi
    series = {
        "jaw_open": motion[:, M.index("jawOpen")],
        "mouth_iod": mouth,
        "yaw_deg": motion[:, M.index("headYaw")] * deg,
        "pitch_deg": motion[:, M.index("headPitch")] * deg,
        "roll_deg": motion[:, M.index("headRoll")] * deg,
        "eye_open": 1 - motion[:, [M.index("eyeBlink_L"), M.index("eyeBlink_R")]].mean(1),
    }
    minute = 60 * FPS
    out: dict = {"frames": n, "seconds": n / FPS, "series": {}}
    for name, y in series.items():
        mins = _window_means(y, minute)
        out["series"][name] = {
            "slope_per_min": E.drift_slope(mins, 1 / 60) if len(mins) >= 3 else 0.0,
            "first_min": float(mins[0]) if len(mins) else float(y.mean()),
            "last_min": float(mins[-1]) if len(mins) else float(y.mean()),
            "minute_means_std": float(mins.std()) if len(mins) else 0.0,
        }
    head = np.stack([series["yaw_deg"], series["pitch_deg"], series["roll_deg"]], 1)
    tens = _window_means(head, 10 * FPS)
    out["head_wander_deg"] = {"std_10s_means": tens.std(0).round(3).tolist(),
                              "max_abs_10s_mean": np.abs(tens).max(0).round(3).tolist()}
    stuck = {}
    for part, sl in (("first_min", slice(0, minute)), ("last_min", slice(max(0, n - minute), n)), ("all", slice(0, n))):
        so, sc = E.stuck_shares(mouth[sl], voiced[sl], FPS)
        stuck[part] = {"stuck_open": so, "stuck_closed": sc,
                       "open_voiced": float(mouth[sl][voiced[sl]].mean()) if voiced[sl].any() else float("nan"),
                       "open_silent": float(mouth[sl][~voiced[sl]].mean()) if (~voiced[sl]).any() else float("nan")}
    out["mouth"] = stuck
    return out


def drift(folder: Path, seconds: float, out: Path, session_config, student_dir: Path | None = None,
          variants: tuple[str, ...] = ("tail", "no-tail")) -> dict:
    from dataclasses import replace

    from engine.face.portrait import default_portrait_landmarks
    from engine.runtime.stream import StudentStream, load_session_models

    audio = long_audio(folder, seconds)
    basis = M.MotionBasis(default_portrait_landmarks())
    res: dict = {"seconds": seconds, "audio": str(folder), "runs": {}}
    out.mkdir(parents=True, exist_ok=True)
    student, corrector, schedule = load_session_models(student_dir, tail_forcing="tail" in variants)
    for v in variants:
        cfg = replace(session_config, tail_forcing=(v == "tail"))
        sess = StudentStream(student, cfg, corrector if cfg.tail_forcing else None, schedule)
        motion, took = stream(sess, audio)
        m = drift_metrics(motion, audio, basis)
        m["ms_per_frame"] = 1e3 * took / len(motion)
        res["runs"][v] = m
        np.save(out / f"motion_{v}.npy", motion.astype(np.float16))
        log.info("%s: %d frames in %.0f s (%.2f ms/frame); %s", v, len(motion), took, m["ms_per_frame"], brief(m))
        (out / "drift.json").write_text(json.dumps(res, indent=1), "utf-8")
    (out / "drift.md").write_text(table(res), "utf-8")
    return res


def brief(m: dict) -> str:
    s = m["series"]
    return (f"jaw slope {s['jaw_open']['slope_per_min']:+.4f}/min, yaw slope {s['yaw_deg']['slope_per_min']:+.3f} deg/min, "
            f"head wander {m['head_wander_deg']['std_10s_means']} deg, stuck open/closed "
            f"{m['mouth']['all']['stuck_open']:.3f}/{m['mouth']['all']['stuck_closed']:.3f}")


def table(res: dict) -> str:
    runs = res["runs"]
    names = list(runs)
    lines = [f"{res['seconds']:.0f} s stream of {res['audio']} (cycled), live path (40 ms pieces).", "",
             "| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label, get, fmt):
        lines.append(f"| {label} | " + " | ".join(fmt.format(get(runs[n])) for n in names) + " |")

    for key, unit in (("jaw_open", ""), ("mouth_iod", " IOD"), ("yaw_deg", " deg"), ("pitch_deg", " deg"),
                      ("roll_deg", " deg"), ("eye_open", "")):
        row(f"{key} drift slope per min{unit}", lambda m, k=key: m["series"][k]["slope_per_min"], "{:+.4f}")
        row(f"{key} first min -> last min", lambda m, k=key: (m["series"][k]["first_min"], m["series"][k]["last_min"]),
            "{0[0]:.3f} -> {0[1]:.3f}")
    row("head wander: std of 10 s means (yaw, pitch, roll deg)", lambda m: m["head_wander_deg"]["std_10s_means"], "{}")
    row("head wander: max abs 10 s mean (deg)", lambda m: m["head_wander_deg"]["max_abs_10s_mean"], "{}")
    for part in ("first_min", "last_min", "all"):
        row(f"mouth stuck open / stuck closed ({part})",
            lambda m, p=part: (m["mouth"][p]["stuck_open"], m["mouth"][p]["stuck_closed"]), "{0[0]:.3f} / {0[1]:.3f}")
        row(f"mouth open voiced / silent ({part}, IOD)",
            lambda m, p=part: (m["mouth"][p]["open_voiced"], m["mouth"][p]["open_silent"]), "{0[0]:.3f} / {0[1]:.3f}")
    row("student ms per frame (this CPU)", lambda m: m["ms_per_frame"], "{:.2f}")
    return "\n".join(lines) + "\n"
