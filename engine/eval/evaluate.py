"""Evaluate a motion source by rendering the portrait and re-measuring the RENDERED frames.

Models the project does not train do the measuring: MediaPipe's face mesh (mouth opening, head
position, jitter) and dlib's face-recognition ResNet (identity distance). Motion sources:
  procedural   the procedural animator (phonemes when known, else the audio-only mouth)
  procedural-audio  the procedural animator's audio-only mouth, even where phonemes are known
  corpus       the clip's stored motion (for corpus clips)
  reference    motion fitted from the reference video (retargeting; an upper bound for (b))
  model        a trained motion model (a teacher: --model FOLDER), sampled with --steps/--audio-guidance
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.audio.io import FPS, SAMPLE_RATE, load_audio
from engine.data.animator import AnimatorConfig, ProceduralAnimator
from engine.data.tts import Phoneme
from engine.eval import metrics as E
from engine.eval.identity import IdentityModel
from engine.face import FramedPortrait
from engine.face.landmarks import FaceLandmarker
from engine.face.tracking import Track, mouth_opening, track
from engine.render.avatar import build_avatar, prepare_portrait
from engine.render.renderer import RendererConfig

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Evaluation settings."""

    size: tuple[int, int] = (512, 512)
    """Render size for evaluation."""
    identity_every: int = 5
    """Embed every Nth frame for the identity metric."""
    max_offset: int = 10
    """Largest lip-sync offset searched, in frames (400 ms)."""
    closed_gap: float = E.CLOSED_GAP
    """Inner-lip gap (IOD units) counted as closed."""
    model: Path | None = None
    """Model folder for --source model (e.g. runs/generalist/model)."""
    steps: int = 4
    """Denoising steps for --source model."""
    audio_guidance: float = 3.0
    """Audio guidance scale for --source model (1 = none)."""
    style_guidance: float = 1.0
    """Style guidance scale for --source model (1 = none)."""
    style: str = ""
    """Style prompt for --source model (default: from the clip's scenario, else "speaking")."""
    seed: int = 0
    tail_forcing: bool = False
    """For a student (--source model with a student folder): correct each chunk's tail frame."""
    max_seconds: float = 0.0
    """Evaluate only the first seconds of --audio (0 = all)."""
    refiner: bool = True
    """Refine the rendered frames with the decoder refiner (--no-refiner: the renderer's own output)."""
    voice_activity: bool = True
    """For a student: close the mouth where the voice-activity detector hears no speech, as live
    (--no-voice-activity: the model alone)."""


@dataclass
class Measured:
    """What was re-detected on rendered (or real) frames."""

    mouth: np.ndarray
    landmarks: np.ndarray
    found: np.ndarray
    identity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    identity_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    sharpness: float = float("nan")


class Evaluator:
    """Holds the measuring models; renders and scores motion on one portrait."""

    def __init__(self, config: EvalConfig | None = None, landmarker: FaceLandmarker | None = None) -> None:
        self.config = config or EvalConfig()
        self.landmarker = landmarker or FaceLandmarker()
        self.identity = IdentityModel()

    def frame(self, portrait: Path, cache_dir: Path | None = None, require_skin: bool = True) -> FramedPortrait:
        """The portrait framed at the evaluation's size. Fixed framing (no upscale limit): every face fills the
        same share of the frame, so figures compare across portraits and with earlier runs."""
        return prepare_portrait(portrait, self.config.size, max_upscale=0.0, cache_dir=cache_dir,
                                landmarker=self.landmarker, require_skin=require_skin)

    def render(self, framed: FramedPortrait, motion: np.ndarray, batch: int = 16):
        renderer = build_avatar(framed, RendererConfig(size=self.config.size, refiner=self.config.refiner)).renderer
        for i in range(0, len(motion), batch):
            yield from renderer.render(motion[i:i + batch])

    def measure(self, frames, portrait_image: np.ndarray | None = None,
                portrait_landmarks: np.ndarray | None = None) -> Measured:
        """Track the face on `frames` (any iterable of RGB frames); identity against the portrait."""
        kept: dict[int, np.ndarray] = {}
        every = self.config.identity_every

        def keep(it):
            for i, f in enumerate(it):
                if i % every == 0:
                    kept[i] = f
                yield f

        tr = track(keep(frames), self.landmarker)
        out = Measured(mouth=mouth_opening(tr.landmarks), landmarks=tr.landmarks, found=tr.found)
        if portrait_image is not None and portrait_landmarks is not None:
            ref = self.identity.embed(portrait_image, portrait_landmarks)
            idx = [i for i in sorted(kept) if tr.found[i]]
            out.identity = np.array([self.identity.distance(ref, self.identity.embed(kept[i], tr.landmarks[i]))
                                     for i in idx])
            out.identity_frames = np.array(idx, int)
            sharp = [E.sharpness(kept[i], E.mouth_box(tr.landmarks[i])) for i in idx]
            base = E.sharpness(portrait_image, E.mouth_box(portrait_landmarks))
            out.sharpness = float(np.nanmean(sharp) / base) if sharp and base > 0 else float("nan")
        return out

    def score(self, m: Measured, audio: np.ndarray, phonemes: list[Phoneme] | None = None,
              reference_mouth: np.ndarray | None = None) -> dict:
        """All metrics for one measured clip."""
        cfg = self.config
        n = len(m.mouth)
        res: dict = {"frames": n, "seconds": n / FPS, "face_found": float(m.found.mean()) if n else 0.0}
        mouth = m.mouth
        if phonemes is not None:
            gt = E.phoneme_openness(phonemes, n, FPS)
            lc = E.lag_corr(mouth, gt, cfg.max_offset)
            res["lipsync_tts"] = asdict(lc)
            rate, count = E.bilabial_closure(mouth, phonemes, FPS, cfg.closed_gap)
            res["bilabial_closure"] = rate
            res["bilabials"] = count
        if reference_mouth is not None:
            res["lipsync_reference"] = asdict(E.lag_corr(mouth, reference_mouth, cfg.max_offset))
        voiced = E.voiced_frames(audio, SAMPLE_RATE, n, FPS)
        so, sc = E.stuck_shares(mouth, voiced, FPS, closed=cfg.closed_gap)
        head = E.head_track(m.landmarks)
        res["stability"] = {
            "stuck_open": so, "stuck_closed": sc,
            "mouth_mean_drift_per_min": E.drift_slope(mouth, FPS),
            "mouth_open_voiced": float(np.nanmean(mouth[voiced[:n]])) if voiced[:n].any() else float("nan"),
            "mouth_open_silent": float(np.nanmean(mouth[~voiced[:n]])) if (~voiced[:n]).any() else float("nan"),
            "jitter_iod": E.jitter(m.landmarks),
            "head_wander_iod": float(np.nanmax(np.linalg.norm(head, axis=1))) if n else 0.0,
            "head_std_iod": float(np.nanstd(np.linalg.norm(head, axis=1))) if n else 0.0,
            "head_drift_per_min": E.drift_slope(np.linalg.norm(head, axis=1), FPS),
        }
        if len(m.identity):
            res["identity"] = {
                "mean": float(m.identity.mean()), "max": float(m.identity.max()),
                "drift_per_min": E.drift_slope(np.interp(np.arange(n), m.identity_frames, m.identity), FPS),
                "same_person_share": float((m.identity < 0.6).mean()),
            }
            res["mouth_sharpness_vs_portrait"] = m.sharpness
        return res


def motion_for(source: str, audio: np.ndarray, n_frames: int, phonemes: list[Phoneme] | None,
               animator: AnimatorConfig | None = None, model=None, config: EvalConfig | None = None,
               shape: np.ndarray | None = None, style: str = "speaking", mel: np.ndarray | None = None) -> np.ndarray:
    """Motion [n_frames, M] from `source`: "procedural" (phonemes if given, else audio only) or "model"
    (`model` = a loaded motion model, audio only; `shape` = the portrait's standardised face shape)."""
    if source == "procedural":
        return ProceduralAnimator(animator).animate(phonemes, n_frames, FPS, audio, SAMPLE_RATE)
    if source == "procedural-audio":  # the audio-only baseline, even where phonemes are known
        return ProceduralAnimator(animator).animate(None, n_frames, FPS, audio, SAMPLE_RATE)
    if source == "model":
        from engine.audio.frontend import front_end
        from engine.models.sampling import Guidance, SampleConfig, generate

        if model is None:
            raise ValueError("--source model needs --model FOLDER (a trained teacher or student, e.g. assets/models/student)")
        cfg = config or EvalConfig()
        if type(model).__name__ == "SessionModels":  # a student: the live path (audio in 40 ms pieces, voice activity)
            from engine.runtime.config import SessionConfig
            from engine.runtime.stream import StudentStream

            sess = StudentStream(model.student, SessionConfig(steps=cfg.steps, guidance=cfg.audio_guidance,
                                                               tail_forcing=model.corrector is not None, seed=cfg.seed,
                                                               voice_activity=cfg.voice_activity),
                                  model.corrector, model.schedule, shape, cfg.style or style)
            mo = np.concatenate(list(sess.stream(np.asarray(audio, np.float32), 640, n_frames)))
            if len(mo) < n_frames:
                raise RuntimeError(f"session produced {len(mo)} of {n_frames} frames")
            return mo[:n_frames]
        if mel is None:
            mel = front_end(model.audio_encoder.config).offline(audio, n_frames)
        sc = SampleConfig(steps=cfg.steps, guidance=Guidance(cfg.audio_guidance, cfg.style_guidance), seed=cfg.seed)
        return generate(model, mel.astype(np.float32), n_frames, sc, shape=shape, style=cfg.style or style)
    raise ValueError(f"unknown motion source {source!r} (available: procedural, procedural-audio, model, reference, corpus)")


def load_model(folder: Path | None, tail_forcing: bool = False):
    """A trained motion model from its folder (config.json + safetensors), on the CPU, in eval mode: a
    teacher, or for a student what its streaming session runs (`SessionModels`: the student, the
    corrector when `tail_forcing`, its guidance calibration)."""
    if folder is None:
        return None
    from engine.models.loading import is_student, load_teacher

    if is_student(folder):
        from engine.runtime.stream import load_session_models

        return load_session_models(folder, tail_forcing=tail_forcing)
    return load_teacher(folder)


def reference_mouth(video: Path, landmarker: FaceLandmarker, n_frames: int | None = None) -> tuple[np.ndarray, Track]:
    """The real speaker's mouth curve (and the face track) from a reference video at 25 fps."""
    from engine.data.ingest import track_face

    tr = track_face(Path(video), landmarker, n_frames)
    return mouth_opening(tr.landmarks), tr


def evaluate(portrait: Path, audio_path: Path, out: Path, reference_video: Path | None = None,
             source: str = "procedural", config: EvalConfig | None = None, cache_dir: Path | None = None,
             evaluator: Evaluator | None = None, phonemes: list[Phoneme] | None = None) -> dict:
    """`talkcam eval`: render `portrait` speaking `audio_path`, measure, and write report/ (JSON, Markdown, PNGs)."""
    ev = evaluator or Evaluator(config)
    audio = load_audio(audio_path)
    if ev.config.max_seconds > 0:
        audio = audio[: int(ev.config.max_seconds * SAMPLE_RATE)]
    n = max(1, math.ceil(len(audio) / SAMPLE_RATE * FPS))
    ref_curve, ref_track = None, None
    if reference_video is not None:
        ref_curve, ref_track = reference_mouth(reference_video, ev.landmarker, n)
        n = min(n, len(ref_curve))
        ref_curve = ref_curve[:n]
    framed = ev.frame(portrait, cache_dir)
    if source == "reference":
        if ref_track is None:
            raise ValueError("--source reference needs --reference-video")
        from engine.data.ingest import fit_motion

        motion, _ = fit_motion(ref_track)
        motion = motion[:n]
    else:
        model = load_model(ev.config.model, ev.config.tail_forcing)
        t0 = time.process_time()
        motion = motion_for(source, audio, n, phonemes, model=model, config=ev.config,
                            shape=framed.shape)
        cpu_ms = 1e3 * (time.process_time() - t0) / n
    m = ev.measure(ev.render(framed, motion), framed.frame, framed.landmarks)
    res = ev.score(m, audio, phonemes, ref_curve)
    if source != "reference":
        res["motion_cpu_ms_per_frame"] = cpu_ms
    res.update({"portrait": str(portrait), "audio": str(audio_path), "source": source,
                "reference_video": str(reference_video) if reference_video else None})
    series = {"mouth": m.mouth, "reference_mouth": ref_curve,
              "phoneme_openness": E.phoneme_openness(phonemes, n, FPS) if phonemes else None,
              "identity": m.identity, "identity_frames": m.identity_frames, "head": E.head_track(m.landmarks)}
    write_report(Path(out), res, series)
    return res


def evaluate_corpus(corpus: Path, portrait: Path, out: Path, scenarios: tuple[str, ...] = ("speech", "singing", "hard"),
                    clips: int = 8, source: str = "procedural", config: EvalConfig | None = None,
                    cache_dir: Path | None = None, evaluator: Evaluator | None = None) -> dict:
    """Score `source` on the first `clips` clips of each scenario of a (held-out) corpus; phoneme ground
    truth comes from the corpus. Writes corpus_result.json and a Markdown table; returns the summary."""
    from engine.audio.frontend import model_rows
    from engine.data import styles
    from engine.data.corpus import scenario_clips

    ev = evaluator or Evaluator(config)
    framed = ev.frame(portrait, cache_dir)
    shape = framed.shape
    model = load_model(ev.config.model, ev.config.tail_forcing) if source == "model" else None
    chosen = scenario_clips(Path(corpus), tuple(scenarios), clips)
    per: dict[str, list[dict]] = {}
    for sc in scenarios:
        if not any(s == sc for s, _, _ in chosen):
            log.warning("%s has no %s clips", corpus, sc)
    for sc, row, clip in chosen:
        phon = clip.phonemes or None
        t0 = time.process_time()
        if source == "corpus":
            motion = clip.motion
        else:
            motion = motion_for(source, clip.audio, clip.frames, phon, model=model, config=ev.config,
                                shape=shape, style=styles.scenario_prompt(sc),
                                mel=None if model is None or hasattr(model, "student") else model_rows(model, clip))
        cpu_ms = 1e3 * (time.process_time() - t0) / clip.frames
        m = ev.measure(ev.render(framed, motion), framed.frame, framed.landmarks)
        res = ev.score(m, clip.audio, phon)
        res["id"] = row["id"]
        res["motion_cpu_ms_per_frame"] = cpu_ms
        per.setdefault(sc, []).append(res)
        log.info("%s %s: %s", sc, row["id"], _brief(res))
    summary = {"corpus": str(corpus), "portrait": str(portrait), "source": source,
               "model": str(ev.config.model) if source == "model" else None,
               "scenarios": {sc: aggregate(v) for sc, v in per.items()}, "clips": per}
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus_result.json").write_text(json.dumps(summary, indent=2, default=_json), "utf-8")
    (out / "corpus_report.md").write_text(table(summary), "utf-8")
    return summary


def aggregate(results: list[dict]) -> dict:
    def mean(get):
        vals = [get(r) for r in results]
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "clips": len(results), "seconds": float(sum(r["seconds"] for r in results)),
        "lipsync_r": mean(lambda r: r.get("lipsync_tts", {}).get("r")),
        "lipsync_r0": mean(lambda r: r.get("lipsync_tts", {}).get("r0")),
        "offset": mean(lambda r: r.get("lipsync_tts", {}).get("offset")),
        "bilabial_closure": mean(lambda r: r.get("bilabial_closure")),
        "jitter_iod": mean(lambda r: r["stability"]["jitter_iod"]),
        "stuck_open": mean(lambda r: r["stability"]["stuck_open"]),
        "stuck_closed": mean(lambda r: r["stability"]["stuck_closed"]),
        "identity": mean(lambda r: r.get("identity", {}).get("mean")),
        "sharpness": mean(lambda r: r.get("mouth_sharpness_vs_portrait")),
        "motion_cpu_ms_per_frame": mean(lambda r: r.get("motion_cpu_ms_per_frame")),
    }


def table(summary: dict) -> str:
    lines = [f"Motion source **{summary['source']}**, portrait {Path(summary['portrait']).name}, "
             f"corpus {summary['corpus']}", "",
             "| scenario | clips | seconds | lip-sync r (best) | offset (frames) | r at 0 | bilabial closure | "
             "jitter (IOD) | stuck open | stuck closed | identity dist. | mouth sharpness |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for sc, a in summary["scenarios"].items():
        lines.append(f"| {sc} | {a['clips']} | {a['seconds']:.0f} | {a['lipsync_r']:.3f} | {a['offset']:+.1f} | "
                     f"{a['lipsync_r0']:.3f} | {a['bilabial_closure']:.2f} | {a['jitter_iod']:.4f} | "
                     f"{a['stuck_open']:.3f} | {a['stuck_closed']:.3f} | {a['identity']:.3f} | {a['sharpness']:.2f} |")
    return "\n".join(lines) + "\n"


def _brief(r: dict) -> str:
    ls = r.get("lipsync_tts", {})
    return (f"r={ls.get('r', float('nan')):.3f} offset={ls.get('offset', 0):+d} "
            f"closure={r.get('bilabial_closure', float('nan')):.2f} jitter={r['stability']['jitter_iod']:.4f}")


def write_report(out: Path, result: dict, series: dict) -> None:
    """result.json, report.md and plots (mouth curves overlaid, identity distance and head position over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=_json), "utf-8")
    (out / "series.json").write_text(json.dumps(series, default=_json), "utf-8")
    t = np.arange(len(series["mouth"])) / FPS
    fig, ax = plt.subplots(figsize=(12, 3.5))
    ax.plot(t, series["mouth"], label="rendered mouth (re-detected)", lw=1.2)
    for key, label in (("reference_mouth", "reference speaker's mouth"), ("phoneme_openness", "phoneme ground truth")):
        if series.get(key) is not None:
            y = np.asarray(series[key], float)
            z = (y - np.nanmean(y)) / (np.nanstd(y) + 1e-9) * np.nanstd(series["mouth"]) + np.nanmean(series["mouth"])
            ax.plot(t[: len(z)], z[: len(t)], label=label + " (rescaled)", lw=1.0, alpha=0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("inner-lip gap / IOD")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "mouth.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    if len(series["identity"]):
        axes[0].plot(np.asarray(series["identity_frames"]) / FPS, series["identity"], ".-")
    axes[0].axhline(0.6, color="r", ls="--", lw=0.8)
    axes[0].set_ylabel("identity distance")
    head = np.asarray(series["head"])
    axes[1].plot(t[: len(head)], head[:, 0], label="x")
    axes[1].plot(t[: len(head)], head[:, 1], label="y")
    axes[1].set_ylabel("head position (IOD)")
    axes[1].set_xlabel("seconds")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "stability.png", dpi=100)
    plt.close(fig)
    (out / "report.md").write_text(markdown(result), "utf-8")


def markdown(r: dict) -> str:
    lines = [f"# talkcam evaluation: {Path(str(r.get('portrait', '?'))).name} + {Path(str(r.get('audio', '?'))).name}",
             "", f"Motion source: **{r.get('source')}**, {r['frames']} frames ({r['seconds']:.1f} s), "
             f"face re-detected on {r['face_found']:.0%} of rendered frames.", "", "| metric | value |", "|---|---|"]
    for key, label in (("lipsync_tts", "lip sync vs phonemes"), ("lipsync_reference", "lip sync vs real speaker")):
        if key in r:
            v = r[key]
            lines.append(f"| {label}: r at best offset / offset (frames) / r at 0 | {v['r']:.3f} / {v['offset']:+d} / "
                         f"{v['r0']:.3f} |")
    if "bilabial_closure" in r:
        lines.append(f"| bilabial closure (p/b/m that close) | {r['bilabial_closure']:.2f} of {r['bilabials']} |")
    if "identity" in r:
        i = r["identity"]
        lines.append(f"| identity distance mean / max / drift per min | {i['mean']:.3f} / {i['max']:.3f} / "
                     f"{i['drift_per_min']:+.4f} |")
        lines.append(f"| mouth sharpness vs portrait | {r['mouth_sharpness_vs_portrait']:.2f} |")
    s = r["stability"]
    lines += [f"| mouth stuck open (silent) / closed (voiced) | {s['stuck_open']:.3f} / {s['stuck_closed']:.3f} |",
              f"| jitter (IOD per frame) | {s['jitter_iod']:.4f} |",
              f"| head wander max / drift per min (IOD) | {s['head_wander_iod']:.3f} / {s['head_drift_per_min']:+.4f} |",
              "", "Plots: mouth.png (mouth curves overlaid), stability.png (identity distance, head position).", ""]
    return "\n".join(lines)


def _json(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
