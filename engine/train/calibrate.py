"""`talkcam train calibrate`: adaptive CFG calibration - guide only where and when it helps.

Audio guidance (a second, audio-free teacher pass per step) buys lip sync but costs a pass and adds
jitter. This measures, on held-out clips, per denoising step (the 4-step grid s = 1, .75, .5, .25) and
per motion group (mouth / eyes / head):

1. how much guidance changes the teacher's prediction: |(g - 1)(v(a) - v(-))| relative to |v(a)|;
2. how candidate schedules move lip sync (r, bilabial closure) and jitter, measured on the landmarks
   of the generated motion (no rendering), against no guidance and full guidance.

The chosen schedule is the one with the fewest guided (step, group) cells whose lip-sync score
(r + closure / 2) keeps `keep` of the gain full guidance brings. The student is distilled towards that
schedule (engine.train.distill), so it needs one pass per step whatever the schedule.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from engine import motion as M
from engine import paths
from engine.audio.frontend import model_rows
from engine.data import styles
from engine.data.corpus import scenario_clips
from engine.models.loading import load_teacher
from engine.models.sampling import (
    Guidance,
    GuidanceSchedule,
    SampleConfig,
    audio_embedding,
    conditions_for,
    generate,
    group_dims,
    step_grid,
)
from engine.train.config import CalibrateConfig

log = logging.getLogger(__name__)

GROUPS = ("mouth", "eyes", "head")


def candidates() -> dict[str, GuidanceSchedule]:
    """Schedules to compare (weights per group over the 4 steps)."""
    def sched(**kw):
        return GuidanceSchedule({g: list(kw.get(g, [0.0] * 4)) for g in GROUPS})

    one, zero = [1.0] * 4, [0.0] * 4
    return {
        "none": sched(),
        "full": GuidanceSchedule.uniform(),
        "mouth": sched(mouth=one),
        "mouth+head": sched(mouth=one, head=one),
        "mouth+eyes": sched(mouth=one, eyes=one),
        "mouth steps 1-2": sched(mouth=[1, 1, 0, 0]),
        "mouth steps 2-3": sched(mouth=[0, 1, 1, 0]),
        "mouth steps 1-3": sched(mouth=[1, 1, 1, 0]),
        "mouth step 1": sched(mouth=[1, 0, 0, 0]),
        "mouth steps 3-4": sched(mouth=[0, 0, 1, 1]),
        "all steps 1-2": sched(mouth=[1, 1, 0, 0], eyes=[1, 1, 0, 0], head=[1, 1, 0, 0]),
        "zero": sched(mouth=zero),
    }


@torch.no_grad()
def effect_table(teacher, clips, g: float, steps: int, seed: int) -> dict[str, list[float]]:
    """Per group and step: mean |(g - 1)(v(a) - v(-))| / mean |v(a)| along full-guidance trajectories."""
    dims = group_dims(M.MOTION_NAMES)
    acc = {k: np.zeros(steps) for k in GROUPS}
    gen = torch.Generator().manual_seed(seed)
    for clip in clips:
        T = min(int(teacher.config.window), clip.frames)
        emb = audio_embedding(teacher, model_rows(teacher, clip).astype(np.float32), T)
        c = conditions_for(teacher, emb, None, styles.scenario_prompt(clip.info.get("scenario", "speech")))
        cu = c.replace(drop_audio=torch.ones_like(c.drop_audio))
        x = torch.randn(1, T, teacher.config.motion_dim, generator=gen)
        grid = step_grid(steps) + [0.0]
        for i, (s, s_next) in enumerate(zip(grid[:-1], grid[1:])):
            st = torch.full((1,), s)
            vc, vu = teacher(x, st, c), teacher(x, st, cu)
            for k in GROUPS:
                d = dims[k]
                acc[k][i] += float(((g - 1) * (vc - vu)[..., d]).abs().mean() / vc[..., d].abs().mean().clamp(min=1e-6))
            x = x + (s_next - s) * (vc + (g - 1) * (vc - vu))
    return {k: (v / max(len(clips), 1)).round(4).tolist() for k, v in acc.items()}


def score_schedule(teacher, clips, basis, g: float, steps: int, schedule: GuidanceSchedule, seed: int) -> dict:
    from engine.eval import metrics as E
    from engine.face.tracking import mouth_opening

    rs, cl, jit = [], [], []
    for sc, clip in clips:
        mo = generate(teacher, model_rows(teacher, clip), clip.frames, SampleConfig(steps=steps, guidance=Guidance(g), seed=seed,
                                                                    schedule=schedule),
                      style=styles.scenario_prompt(sc))
        lm = basis.landmarks(mo)
        mouth = mouth_opening(lm)
        phon = clip.phonemes
        rs.append(E.lag_corr(mouth, E.phoneme_openness(phon, clip.frames, 25), 10).r)
        rate, count = E.bilabial_closure(mouth, phon, 25)
        if count:
            cl.append(rate)
        jit.append(E.jitter(lm))
    r, closure = float(np.mean(rs)), float(np.mean(cl)) if cl else 0.0
    return {"r": r, "closure": closure, "jitter": float(np.mean(jit)), "score": r + closure / 2,
            "passes_per_step": float(np.mean([1 + any(schedule.weights[k][i] > 0 for k in GROUPS)
                                              for i in range(steps)]))}


def calibrate(cfg: CalibrateConfig) -> dict:
    from engine.face.portrait import default_portrait_landmarks

    teacher = load_teacher(cfg.teacher or paths.teachers_dir() / "generalist")
    chosen = [(s, c) for s, _, c in scenario_clips(Path(cfg.heldout), tuple(cfg.scenarios), cfg.clips) if c.phonemes]
    if not chosen:
        raise ValueError(f"{cfg.heldout} has no clips with phonemes in scenarios {cfg.scenarios}")
    basis = M.MotionBasis(default_portrait_landmarks())
    effect = effect_table(teacher, [c for _, c in chosen], cfg.guidance, cfg.steps, cfg.seed)
    log.info("Guidance effect (relative change of the prediction) per step: %s", effect)
    results = {}
    for name, sched in candidates().items():
        results[name] = score_schedule(teacher, chosen, basis, cfg.guidance, cfg.steps, sched, cfg.seed)
        results[name]["cells"] = sched.guided_cells()
        log.info("%-16s r %.3f closure %.2f jitter %.4f cells %d", name, results[name]["r"], results[name]["closure"],
                 results[name]["jitter"], results[name]["cells"])
    base, full = results["none"]["score"], results["full"]["score"]
    need = base + cfg.keep * (full - base)
    ok = [n for n, r in results.items() if r["score"] >= need and n not in ("none", "zero")]
    best = min(ok, key=lambda n: (results[n]["cells"], -results[n]["score"])) if ok else "full"
    schedule = candidates()[best]
    out = {"chosen": best, "schedule": schedule.weights, "guidance": cfg.guidance, "steps": cfg.steps,
           "effect": effect, "candidates": results, "clips": len(chosen),
           "teacher": str(cfg.teacher or "generalist"), "keep": cfg.keep}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "calibration.json").write_text(json.dumps(out, indent=1), "utf-8")
    (Path(cfg.out) / "calibration.md").write_text(table(out), "utf-8")
    return out


def table(res: dict) -> str:
    lines = [f"Guidance {res['guidance']}, {res['steps']} steps, {res['clips']} held-out clips; chosen: "
             f"**{res['chosen']}**", "", "Effect of guidance on the prediction (per step, relative):", "",
             "| group | " + " | ".join(f"step {i + 1}" for i in range(res["steps"])) + " |",
             "|---|" + "---|" * res["steps"]]
    for g, v in res["effect"].items():
        lines.append(f"| {g} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
    lines += ["", "| schedule | guided cells | teacher passes/step | lip-sync r | closure | jitter |",
              "|---|---|---|---|---|---|"]
    for n, r in res["candidates"].items():
        lines.append(f"| {n} | {r['cells']} | {r['passes_per_step']:.2f} | {r['r']:.3f} | {r['closure']:.2f} | "
                     f"{r['jitter']:.4f} |")
    return "\n".join(lines) + "\n"
