"""`talkcam train student`: asymmetric distillation of the bidirectional teachers into the causal student.

    talkcam train student --corpus data/train --calibration runs/calib/calibration.json --out runs/student_ode
    talkcam train student --stage dmd --init runs/student_ode/model --corpus data/train \
        --calibration runs/calib/calibration.json --out runs/student_dmd

Stage `ode` (teacher forcing): each window's scenario picks its teacher (the specialist of that
scenario; the generalist elsewhere, or everywhere with --no-routing). The teacher samples the window
on the student's 4-step grid with the calibrated audio guidance (`engine.train.calibrate`) at a
guidance scale drawn per sample; the student sees, per chunk, a point of that trajectory (a random
step) and the teacher's clean result as its cache context, and regresses the trajectory's end point
(x0 = x_s - s v). One student pass per step whatever the guidance: the scale is an input.

Stage `dmd` (self-rollout): the student generates whole windows chunk by chunk through its own KV
cache (`MotionStudent.generate_chunk`, exactly as at inference: its context is its own past output),
with 1, 2 or 4 steps. Its final denoising step of every chunk is recomputed with gradients (full-
sequence form, same values) and trained by distribution matching: the gradient is the difference
between a critic (a teacher copy trained meanwhile by flow matching on the student's rollouts: the
"fake" score) and the routed, calibrated-guidance teacher (the "real" score) at a random noise level.
Hybrid long tail forcing: during the rollout the tail frame of each chunk is replaced by the
generalist's bidirectional correction anchored to the sink frames (`sampling.tail_correct`), the same
correction the streaming session applies at inference, and the student's tail frame is aligned to it.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from engine import motion as M
from engine import paths
from engine.audio.frontend import front_end
from engine.data.corpus import SCENARIOS
from engine.data.dataset import window_config
from engine.models.conditions import Conditions
from engine.models.loading import load_student, load_teacher
from engine.models.sampling import GuidanceSchedule, step_grid, tail_correct, weighted_guidance
from engine.models.student import MotionStudent
from engine.models.teacher import MotionTeacher
from engine.train import loop
from engine.train.config import DistillConfig
from engine.train.teachers import SOUND, WindowSampler, flow_loss, make_conditions

log = logging.getLogger(__name__)

PER_FRAME = ("controls", "control_mask", "context", "context_mask")
GRID = step_grid(4)
"""The noise levels the student learns (1, .75, .5, .25; the 1- and 2-step grids are subsets)."""


# ------------------------------------------------------------------------------------------------
class TeacherPool:
    """The teachers and who teaches which scenario (routing)."""

    def __init__(self, folder: Path, routing: bool, device: torch.device) -> None:
        self.models: dict[str, MotionTeacher] = {"generalist": load_teacher(folder / "generalist", str(device))}
        self.route = {sc: "generalist" for sc in SCENARIOS}
        if routing:
            for sc in SCENARIOS:
                if (folder / sc / "config.json").exists():
                    self.models[sc] = load_teacher(folder / sc, str(device))
                    self.route[sc] = sc
        for m in self.models.values():
            m.requires_grad_(False)
        ref = self.models["generalist"]
        for name, m in self.models.items():
            if not torch.allclose(m.motion_mean, ref.motion_mean) or not torch.allclose(m.motion_std, ref.motion_std):
                raise ValueError(f"teacher {name} has other motion statistics than the generalist")

    @property
    def generalist(self) -> MotionTeacher:
        return self.models["generalist"]

    def groups(self, scenario: torch.Tensor) -> dict[str, torch.Tensor]:
        """teacher name -> indices of the batch it teaches."""
        names = [self.route[SCENARIOS[int(i)]] for i in scenario.tolist()]
        return {n: torch.tensor([i for i, m in enumerate(names) if m == n], device=scenario.device)
                for n in dict.fromkeys(names)}

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, s: torch.Tensor, c: Conditions, mel: torch.Tensor, g: torch.Tensor,
                 scenario: torch.Tensor, schedule: GuidanceSchedule | None, audio_cache: dict | None = None) -> torch.Tensor:
        """Routed, calibrated-guidance teacher velocity for the batch (s [B] one level per sample)."""
        out = torch.empty_like(x)
        for name, idx in self.groups(scenario).items():
            t = self.models[name]
            audio = audio_cache[name] if audio_cache is not None and name in audio_cache else t.audio_encoder(mel[idx])
            if audio_cache is not None:
                audio_cache[name] = audio
            ci = _select(c, idx).replace(audio=audio)
            w = None if schedule is None else schedule.per_dim(s[idx], M.MOTION_NAMES)  # [b, M]
            out[idx] = weighted_guidance(t, x[idx], s[idx], ci, g[idx], w)
        return out


def _select(c: Conditions, idx: torch.Tensor) -> Conditions:
    return Conditions(**{k: v[idx] for k, v in c.__dict__.items()})


@torch.no_grad()
def teacher_trajectory(pool: TeacherPool, c: Conditions, mel: torch.Tensor, g: torch.Tensor, scenario: torch.Tensor,
                       schedule: GuidanceSchedule | None, gen: torch.Generator) -> list[torch.Tensor]:
    """Points x_s at s = 1, .75, .5, .25 and the end point x_0 of each sample's teacher trajectory."""
    B, T = c.audio.shape[:2]
    x = torch.randn(B, T, pool.generalist.config.motion_dim, generator=gen, device=mel.device)
    traj = [x]
    cache: dict[str, torch.Tensor] = {}
    grid = GRID + [0.0]
    for s, s_next in zip(grid[:-1], grid[1:]):
        v = pool.velocity(x, torch.full((B,), s, device=x.device), c, mel, g, scenario, schedule, cache)
        x = x + (s_next - s) * v
        traj.append(x)
    return traj


def _chunk_levels(B: int, T: int, chunk: int, gen: torch.Generator, device) -> torch.Tensor:
    """A random grid index per chunk, expanded to frames [B, T]."""
    n = (T + chunk - 1) // chunk
    lvl = torch.randint(0, len(GRID), (B, n), generator=gen, device=device)
    return lvl.repeat_interleave(chunk, 1)[:, :T]


def ode_loss(net: nn.Module, chunk: int, pool: TeacherPool, batch: dict, c: Conditions, w: torch.Tensor,
             g: torch.Tensor, schedule, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Regression on the teachers' ODE trajectories. `net`: the student or its DistributedDataParallel wrapper
    (which runs the forward pass but does not pass its attributes through: hence `chunk`, the student's)."""
    traj = teacher_trajectory(pool, c, batch["mel"], g, batch["scenario"], schedule, gen)
    x0 = traj[-1]
    B, T, _ = x0.shape
    lvl = _chunk_levels(B, T, chunk, gen, x0.device)
    stack = torch.stack(traj[:-1])  # [4, B, T, M]
    x_in = stack.gather(0, lvl[None, ..., None].expand(1, B, T, x0.shape[-1]))[0]
    s = torch.tensor(GRID, device=x0.device)[lvl]
    v = net(x_in, s, c, g, x0)
    pred = x_in - s[..., None] * v
    loss = ((pred - x0) ** 2 * w).sum() / w.sum().clamp(min=1)
    return loss, {}


# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def rollout(student: MotionStudent, c: Conditions, g: torch.Tensor, steps: int, gen: torch.Generator,
            corrector: MotionTeacher | None = None, corrector_audio: torch.Tensor | None = None,
            schedule: GuidanceSchedule | None = None, cfg: DistillConfig | None = None):
    """Self-rollout through the KV cache. Returns (committed x0 [B, T, M], the last step's input and level
    per frame, the corrected tail frames and their mask [B, T])."""
    B, T = c.audio.shape[:2]
    dev = c.audio.device
    Mdim = student.config.motion_dim
    k = student.config.chunk
    tokens = student.frame_tokens(c)
    cache = student.new_cache(c)
    out = torch.zeros(B, T, Mdim, device=dev)
    last_x, last_s = torch.zeros_like(out), torch.zeros(B, T, device=dev)
    tail = torch.zeros(B, T, dtype=torch.bool, device=dev)
    for a in range(0, T, k):
        b = min(a + k, T)
        noise = torch.randn(B, b - a, Mdim, generator=gen, device=dev)
        x, last_x[:, a:b], last_s[:, a:b] = student.sample_chunk(tokens[:, a:b], cache, steps, g, noise)
        if corrector is not None and a > 0:
            assert corrector_audio is not None and cfg is not None  # given with the corrector
            x = correct_tail(corrector, out[:, :a], x, c, corrector_audio, a, g, schedule, cfg, gen,
                             student.config.sink_frames)
            tail[:, b - 1] = True
        out[:, a:b] = x
        student.commit(x, tokens[:, a:b], cache)
    return out, last_x, last_s, tail


def tail_window(a: int, sink: int, context: int) -> list[int]:
    """Frames the tail correction of the chunk starting at frame `a` sees as known: the sink frames, then
    the last `context` frames before the chunk."""
    return list(range(min(sink, a))) + list(range(max(sink, a - context), a))


def correct_tail(corrector: MotionTeacher, past: torch.Tensor, chunk: torch.Tensor, c: Conditions, audio: torch.Tensor,
                 a: int, g: torch.Tensor, schedule, cfg: DistillConfig, gen, sink: int) -> torch.Tensor:
    """The chunk with its tail frame replaced by the corrector's (training side of tail forcing; the session
    builds the same window from its history)."""
    n = chunk.shape[1]
    known_idx = tail_window(a, sink, cfg.tail_context)
    idx = torch.tensor(known_idx + list(range(a, a + n)), device=chunk.device)
    ct = c.replace(audio=audio[:, idx], **{f: getattr(c, f)[:, idx] for f in PER_FRAME})
    return tail_correct(corrector, past[:, known_idx], chunk, ct, g, schedule, cfg.tail_noise, cfg.tail_steps, gen,
                        M.MOTION_NAMES)


def dmd_loss(student: MotionStudent, critic: MotionTeacher, pool: TeacherPool, batch: dict, c: Conditions,
             w: torch.Tensor, g: torch.Tensor, schedule, cfg: DistillConfig, gen: torch.Generator,
             rng: np.random.Generator) -> tuple[torch.Tensor, dict, torch.Tensor]:
    mel = batch["mel"]
    steps = int(rng.choice(cfg.rollout_steps))
    corr_audio = pool.generalist.audio_encoder(mel) if cfg.tail_forcing else None
    student.eval()
    x0_roll, last_x, last_s, tail = rollout(student, c, g, steps, gen, pool.generalist if cfg.tail_forcing else None,
                                            corr_audio, schedule, cfg)
    student.train()
    B = x0_roll.shape[0]
    v = student(last_x, last_s, c, g, x0_roll)
    pred = last_x - last_s[..., None] * v  # = the rollout's raw chunks, now with gradients
    # distribution matching at a random noise level
    s = 0.02 + 0.96 * torch.rand(B, generator=gen, device=pred.device)
    noise = torch.randn(pred.shape, generator=gen, device=pred.device)
    xt = (1 - s[:, None, None]) * pred.detach() + s[:, None, None] * noise
    with torch.no_grad():
        v_real = pool.velocity(xt, s, c, mel, g, batch["scenario"], schedule)
        v_fake = critic(xt, s, c.replace(audio=critic.audio_encoder(mel)))
        x_real = xt - s[:, None, None] * v_real
        x_fake = xt - s[:, None, None] * v_fake
        norm = (pred.detach() - x_real).abs().mean(dim=(1, 2), keepdim=True).clamp(min=1e-3)
        grad = (x_fake - x_real) / norm
    target = (pred - grad).detach()
    loss = 0.5 * ((pred - target) ** 2 * w).sum() / w.sum().clamp(min=1)
    info = {"dmd": float(loss.detach()), "rollout_steps": steps}
    if cfg.tail_forcing and tail.any():
        tw = w * tail[..., None]
        lt = ((pred - x0_roll) ** 2 * tw).sum() / tw.sum().clamp(min=1)
        loss = loss + cfg.tail_weight * lt
        info["tail"] = float(lt.detach())
    return loss, info, x0_roll


# ------------------------------------------------------------------------------------------------
def new_student(teacher: MotionTeacher, cfg: DistillConfig) -> MotionStudent:
    """A student with the teacher's width/depth and weights (the guidance embedding starts at zero)."""
    tc = teacher.config
    st = MotionStudent(motion_dim=tc.motion_dim, dim=tc.dim, depth=tc.depth, heads=tc.heads, mlp_ratio=tc.mlp_ratio,
                       dropout=0.0, chunk=cfg.model.chunk, window=cfg.model.window, sink_frames=cfg.model.sink_frames,
                       train_frames=tc.window, shape_dim=tc.shape_dim, style_vocab=tc.style_vocab,
                       audio={**(tc.audio or {}), "dropout": 0.0})
    missing, unexpected = st.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any(not k.startswith("guide.") for k in missing):
        raise ValueError(f"teacher and student do not match: missing {missing}, unexpected {unexpected}")
    return st


def train(cfg: DistillConfig) -> Path:
    if cfg.stage not in ("ode", "dmd"):
        raise ValueError(f"--stage is ode or dmd, got {cfg.stage!r}")
    rt = loop.setup(cfg.device, cfg.precision)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    pool = TeacherPool(Path(cfg.teachers or paths.teachers_dir()), cfg.routing, rt.device)
    schedule = GuidanceSchedule.load(cfg.calibration) if cfg.calibration is not None else None
    student = load_student(cfg.init).train() if cfg.init is not None else new_student(pool.generalist, cfg)
    # diffusers wraps ModelMixin.to with functools.wraps(nn.Module.to): typeshed's _Wrapped does not bind self
    student.to(rt.device)  # type: ignore[arg-type]
    T = int(student.config.train_frames)
    wcfg = window_config(student.audio_encoder, T)
    kinds = {name: front_end(t.audio_encoder.config).kind for name, t in pool.models.items()}
    if set(kinds.values()) != {wcfg.front.kind}:
        raise ValueError(f"the student reads {wcfg.front.kind} audio features but the teachers read {kinds}: "
                         "distil from teachers trained on the same features")
    sampler = WindowSampler(Path(cfg.corpus), (), wcfg, real_weight=cfg.real_weight)
    log.info("Distilling (%s) from %s on %s: %d clips, %.2f h; student %.2fM parameters, chunk %d, window %d, "
             "sink %d; calibration %s", cfg.stage, ", ".join(f"{sc}->{t}" for sc, t in pool.route.items()), cfg.corpus,
             len(sampler.clips), sampler.frames / 25 / 3600, sum(p.numel() for p in student.parameters()) / 1e6,
             student.config.chunk, student.config.window, student.config.sink_frames,
             schedule.weights if schedule else "none (uniform)")
    net: MotionStudent | torch.nn.parallel.DistributedDataParallel = student
    if rt.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(student, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    critic: MotionTeacher | None = None
    copt: torch.optim.AdamW | None = None
    if cfg.stage == "dmd":
        critic = copy.deepcopy(pool.generalist).train().requires_grad_(True)
        copt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr, weight_decay=0.0, betas=(0.9, 0.99))
    ckpt = out / "checkpoint"
    step, history = 0, []
    if (ckpt / "trainer_state.json").exists():
        state = loop.load_checkpoint(ckpt, student, opt)
        if critic is not None:
            assert copt is not None  # created with the critic
            loop.load_checkpoint(out / "critic", critic, copt)
        step, history = state["step"], state.get("history", [])
        log.info("Resumed %s at step %d", ckpt, step)
    cond_cfg = replace(cfg, gain_db=0.0)  # the gain is applied once here, for student and teachers alike
    logf = (out / "log.jsonl").open("a", encoding="utf-8") if rt.main else None
    t0, losses = time.time(), []
    progress = Progress(TextColumn(f"[bold]student {cfg.stage}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not rt.main)
    with progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            student.train()
            rng, gen = loop.step_randomness(cfg.seed, step, rt.rank, rt.device)
            batch = {k: v.to(rt.device) for k, v in sampler.draw(cfg.batch, rng).items()}
            if cfg.gain_db > 0 and wcfg.front.kind == "logmel":
                B = batch["mel"].shape[0]
                gain = (torch.rand(B, 1, 1, generator=gen, device=rt.device) * 2 - 1) * cfg.gain_db * np.log(10) / 10
                batch["mel"] = torch.where(batch["mel"] > SOUND, batch["mel"] + gain, batch["mel"])
            for gr in opt.param_groups:
                gr["lr"] = loop.lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
            g = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(cfg.batch, generator=gen, device=rt.device)
            with rt.autocast():
                _, c, w = make_conditions(student, batch, cond_cfg, gen)
                if cfg.stage == "ode":
                    loss, info = ode_loss(net, student.config.chunk, pool, batch, c, w, g, schedule, gen)
                else:
                    assert critic is not None  # the dmd stage has one
                    loss, info, x0_roll = dmd_loss(student, critic, pool, batch, c, w, g, schedule, cfg, gen, rng)
                    if cfg.regression_weight > 0:
                        lr_, _ = ode_loss(net, student.config.chunk, pool, batch, c, w, g, schedule, gen)
                        loss = loss + cfg.regression_weight * lr_
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            if critic is not None:  # the fake score follows the student's current rollouts
                assert copt is not None
                for _ in range(cfg.critic_updates):
                    with rt.autocast():
                        cc = c.replace(audio=critic.audio_encoder(batch["mel"]))
                        lc = flow_loss(critic, x0_roll.detach(), cc, w.detach(), gen)
                    copt.zero_grad(set_to_none=True)
                    lc.backward()
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
                    copt.step()
                info["critic"] = float(lc.detach())
            step += 1
            losses.append(float(loss.detach()))
            progress.update(task, completed=step, info=f"loss {np.mean(losses[-25:]):.4f}")
            if rt.main and (step % cfg.log_every == 0 or step == cfg.steps):
                rec = {"step": step, "loss": float(np.mean(losses[-cfg.log_every:])), "grad_norm": float(gn),
                       "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1), **info}
                assert logf is not None  # opened on the main process
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
            if rt.main and cfg.heldout is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                assert logf is not None
                q = quick_eval_student(student, Path(cfg.heldout), cfg.eval_clips)
                history.append({"step": step, "loss": float(np.mean(losses[-25:])), "eval": q})
                logf.write(json.dumps({"step": step, "eval": q}) + "\n")
                logf.flush()
                log.info("step %d eval: %s", step, "; ".join(f"{k} r {v['r']:.3f} closure {v['closure']:.2f}"
                                                             for k, v in q.items()))
            if rt.main and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                loop.save_checkpoint(ckpt, student, opt, step, {"history": history, "config": loop.jsonable(cfg)})
                if critic is not None:
                    assert copt is not None
                    loop.save_checkpoint(out / "critic", critic, copt, step, {})
    final = out / "model"
    if rt.main:
        loop.save_final(out, student, cfg, step, history, t0, "Student")
    loop.teardown(rt)
    return final


def quick_eval_student(student: MotionStudent, heldout: Path, clips: int, steps: int = 4, guidance: float = 3.0,
                       scenarios=("speech", "singing", "hard")) -> dict:
    """Lip sync and closure of the student's streamed motion on held-out clips (landmark level)."""
    from engine.runtime.stream import SessionConfig, stream_motion
    from engine.train.teachers import quick_eval

    was = student.training
    student.eval()
    res = quick_eval(student, heldout, clips, scenarios,
                     generate_fn=lambda m, mel, n, style: stream_motion(
                         m, mel, n, SessionConfig(steps=steps, guidance=guidance, tail_forcing=False), style=style))
    student.train(was)
    return res
