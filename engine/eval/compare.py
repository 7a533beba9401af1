"""Results table: several motion sources (the procedural baseline, teachers) side by side, on the
held-out TTS corpus per scenario (phoneme ground truth) and on real recordings (the sun clip against
the real speaker's mouth curve; the other real voices, which have no reference, by how well the mouth
separates speech from silence and by stability)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from engine.eval.evaluate import EvalConfig, Evaluator, evaluate, evaluate_corpus

log = logging.getLogger(__name__)

REAL_CLIPS = {  # file -> (style prompt, reference video or None)
    "sun_audio.wav": ("speaking", "sun_video.mp4"),
    "eng.wav": ("speaking", None),
    "RD_Radio31_000.wav": ("speaking", None),
    "chinese_news.wav": ("speaking", None),
    "deyu.wav": ("speaking", None),
    "japanese.wav": ("speaking", None),
    "itosinger1.wav": ("singing", None),
}


PROCEDURAL = ("procedural", "procedural-audio")


def compare(sources: dict[str, str | Path | tuple[Path, int]], corpus: Path | None, portrait: Path, out: Path,
            scenarios=("speech", "singing", "pose", "hard"), clips: int = 4, real: Path | None = None,
            config: EvalConfig | None = None, cache_dir: Path | None = None, include: tuple[Path, ...] = ()) -> dict:
    """`sources`: name -> a model folder, or "procedural" (the animator with the corpus's phonemes: the
    teachers' training target, an oracle on TTS) or "procedural-audio" (its audio-only mouth: the
    baseline an audio-driven model must beat). On real recordings, which have no phonemes, the two
    procedural sources are the same, so only "procedural" is run there."""
    cfg = config or EvalConfig()
    ev = Evaluator(cfg)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"portrait": str(portrait), "size": list(cfg.size), "corpus": {}, "real": {}}
    for path in include:  # earlier results (same settings) shown first in the table
        prev = json.loads(Path(path).read_text("utf-8"))
        summary["corpus"].update(prev.get("corpus", {}))
        summary["real"].update(prev.get("real", {}))
    for name, what in sources.items():
        steps = cfg.steps
        if isinstance(what, tuple):  # (model folder, denoising steps)
            what, steps = what
        source = str(what) if str(what) in PROCEDURAL else "model"
        folder = None if source != "model" else Path(what)
        ev.config = replace(cfg, model=folder, steps=steps)
        if corpus is not None:
            s = evaluate_corpus(corpus, portrait, out / name, tuple(scenarios), clips, source, ev.config,
                                cache_dir, evaluator=ev)
            summary["corpus"][name] = s["scenarios"]
        if real is not None and source != "procedural-audio":
            rows = {}
            for fname, (style, ref) in REAL_CLIPS.items():
                if not (real / fname).exists():
                    continue
                ev.config = replace(cfg, model=folder, style=style, steps=steps)
                r = evaluate(portrait, real / fname, out / name / Path(fname).stem, real / ref if ref else None,
                             source, ev.config, cache_dir, evaluator=ev)
                st = r["stability"]
                rows[fname] = {"seconds": r["seconds"], "open_voiced": st["mouth_open_voiced"],
                               "open_silent": st["mouth_open_silent"], "stuck_open": st["stuck_open"],
                               "stuck_closed": st["stuck_closed"], "jitter": st["jitter_iod"],
                               "identity": r.get("identity", {}).get("mean", float("nan")),
                               "motion_cpu_ms_per_frame": r.get("motion_cpu_ms_per_frame"),
                               "reference_r": r.get("lipsync_reference", {}).get("r"),
                               "reference_r0": r.get("lipsync_reference", {}).get("r0"),
                               "reference_offset": r.get("lipsync_reference", {}).get("offset")}
                log.info("%s %s: %s", name, fname, rows[fname])
            summary["real"][name] = rows
        (out / "compare.json").write_text(json.dumps(summary, indent=1, default=float), "utf-8")
    summary["table"] = table(summary)
    (out / "compare.md").write_text(summary["table"], "utf-8")
    (out / "compare.json").write_text(json.dumps(summary, indent=1, default=float), "utf-8")
    return summary


def table(summary: dict) -> str:
    lines = []
    if summary["corpus"]:
        scen = list(next(iter(summary["corpus"].values())))
        lines += ["Held-out TTS (voices and words never seen in training), lip sync against phoneme ground truth: "
                  "r at the best offset (offset in frames) / bilabial closure / jitter (IOD).", "",
                  "| source | " + " | ".join(scen) + " | motion CPU ms/frame |", "|---" * (len(scen) + 2) + "|"]
        for name, per in summary["corpus"].items():
            cells = [f"{a['lipsync_r']:.3f} ({a['offset']:+.1f}) / {a['bilabial_closure']:.2f} / {a['jitter_iod']:.4f}"
                     if a else "-" for a in (per.get(s) for s in scen)]
            cpu = [a.get("motion_cpu_ms_per_frame") for a in per.values() if a]
            cpu = [c for c in cpu if c is not None and c == c]
            cells.append(f"{sum(cpu) / len(cpu):.2f}" if cpu else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["real"]:
        files = sorted({f for rows in summary["real"].values() for f in rows})
        lines += ["Real recordings: mouth opening when voiced / silent (IOD; a good model opens for speech and "
                  "closes in pauses), jitter (IOD); sun: lip-sync r against the real speaker's mouth (offset).", "",
                  "| source | " + " | ".join(files) + " |", "|---" * (len(files) + 1) + "|"]
        for name, rows in summary["real"].items():
            cells = []
            for f in files:
                r = rows.get(f)
                if r is None:
                    cells.append("-")
                    continue
                cell = f"{r['open_voiced']:.3f} / {r['open_silent']:.3f}, {r['jitter']:.4f}"
                if r.get("reference_r") is not None:
                    cell += f"; r {r['reference_r']:.3f} ({r['reference_offset']:+d})"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
