"""`talkcam train teacher`: train the generalist teacher, and fine-tune specialists from it.

    talkcam train teacher --corpus data/train --heldout data/heldout --out runs/generalist
    talkcam train teacher --corpus data/train --scenarios singing --init runs/generalist/model \
        --out runs/singing --steps 800 --lr 1e-4

Each step draws random windows of `window` frames from the corpus (all clips held in memory), builds
the conditions (style prompt from the clip, random face shapes, frame controls read from the target
motion at random spans, known-motion context, "listening" samples with a closed mouth), drops
conditions at random (for guidance), and regresses the flow-matching velocity. Checkpoints (weights,
optimizer, step; all randomness is a function of seed and step, so a resumed run equals an uninterrupted one) every `checkpoint_every`
steps; an interrupted run resumes from `out/checkpoint`. Periodic evaluation generates motion for
held-out clips and scores lip sync and closure on the landmarks (`quick_eval`).
Multi-GPU: launch the same command with `torchrun --nproc-per-node N -m engine.cli train teacher ...`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from engine import motion as M
from engine.data.corpus import VISEME_NAMES, Clip, read_manifest, read_shard
from engine.data.dataset import WindowConfig, window, window_config
from engine.face.portrait import default_portrait_landmarks
from engine.face.shape import SHAPE_DIM
from engine.models.conditions import CONTROL_NAMES, N_CONTROLS, Conditions
from engine.models.loading import load_teacher
from engine.models.student import MotionStudent
from engine.models.teacher import MotionTeacher
from engine.train import loop
from engine.train.config import DistillConfig, TeacherModelConfig, TeacherTrainConfig  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

SOUND = -13.0
"""Log-mel values above this are sound (the floor, engine.audio.features.SILENCE, is -13.8)."""
MOUTH = [M.index(n) for n in M.EXPRESSIONS if n.startswith(("jaw", "mouth"))]
ARTICULATION = list(M.ARTICULATION)
"""What closes when listening (a smile may stay)."""


# ------------------------------------------------------------------------------------------------
class WindowSampler:
    """All clips of a corpus in memory; draws random windows (deterministic per seed and step), each
    scenario equally often whatever its share of the audio."""

    def __init__(self, root: Path, scenarios: tuple[str, ...], wcfg: WindowConfig, share: float = 1.0,
                 real_weight: float = 1.0) -> None:
        rows = read_manifest(root)
        if scenarios and not any(r["scenario"] in scenarios for r in rows):
            raise ValueError(f"{root} has no clips of scenarios {scenarios}")
        replay = bool(scenarios) and share < 1.0
        keep = {r["shard"] for r in rows if not scenarios or replay or r["scenario"] in scenarios}
        self.clips: list[Clip] = []
        for shard in sorted(keep):
            self.clips += [c for c in read_shard(root / shard)
                           if not scenarios or replay or c.info.get("scenario") in scenarios]
        if not self.clips:
            raise ValueError(f"{root} has no clips of scenarios {scenarios or 'any'}")
        self.wcfg = wcfg
        frames = np.array([c.frames for c in self.clips], np.float64)
        scen = np.array([c.info.get("scenario", "speech") for c in self.clips])
        per = {sc: frames[scen == sc].sum() for sc in set(scen)}
        weight = {sc: (real_weight if sc == "real" else 1.0) for sc in per}
        total = sum(weight.values())
        self.p = frames / np.array([per[sc] for sc in scen]) * np.array([weight[sc] for sc in scen]) / total
        if replay:
            own = np.isin(scen, scenarios)
            others = len({s for s in per if s not in scenarios})
            self.p = np.where(own, frames / frames[own].sum() * share,
                              self.p * len(per) / max(others, 1) * (1 - share))
        self.frames = int(frames.sum())

    def draw(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        items = []
        for i in rng.choice(len(self.clips), n, p=self.p):
            c = self.clips[i]
            start = int(rng.integers(0, max(1, c.frames - self.wcfg.frames // 2)))
            items.append(window(c, start, self.wcfg, rng=rng))
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


STEERABLE = ("smile", "yaw", "pitch", "roll", "gazeX", "gazeY")
_STEER_DIMS = {"smile": ("mouthSmile_L", "mouthSmile_R"), "yaw": ("headYaw",), "pitch": ("headPitch",),
               "roll": ("headRoll",), "gazeX": ("eyeLookX",), "gazeY": ("eyeLookY",)}
_STEER_RANGE = {"smile": (0.2, 0.9), "yaw": (-0.3, 0.3), "pitch": (-0.25, 0.25), "roll": (-0.25, 0.25),
                "gazeX": (-0.8, 0.8), "gazeY": (-0.6, 0.6)}


def steer(motion: torch.Tensor, p: float, gen: torch.Generator, ramp: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Teach the controls beyond what the corpus happens to contain: on a random span, move one channel
    of the target motion to a random value (smile: raise by an offset; pose/gaze: shift to a target,
    keeping the natural motion around it), with `ramp`-frame transitions. Returns the new motion and
    which (frame, channel) were steered [B, T, len(STEERABLE)]."""
    B, T, _ = motion.shape
    dev = motion.device
    motion = motion.clone()
    steered = torch.zeros(B, T, len(STEERABLE), dtype=torch.bool, device=dev)
    t = torch.arange(T, device=dev, dtype=torch.float32)
    for j, name in enumerate(STEERABLE):
        pick = torch.rand(B, generator=gen, device=dev) < p
        if not pick.any():
            continue
        a = torch.rand(B, generator=gen, device=dev) * T * 0.6
        length = (0.3 + 0.7 * torch.rand(B, generator=gen, device=dev)) * T
        env = ((t[None] - a[:, None] + 1) / ramp).clamp(0, 1) * ((a[:, None] + length[:, None] - t[None]) / ramp).clamp(0, 1)
        env = env * pick[:, None]  # [B, T] 0..1
        lo, hi = _STEER_RANGE[name]
        value = lo + (hi - lo) * torch.rand(B, generator=gen, device=dev)
        idx = [M.index(d) for d in _STEER_DIMS[name]]
        cur = motion[..., idx]
        if name == "smile":
            new = (cur + value[:, None, None] * env[..., None]).clamp(0, 1)
        else:
            inside = env > 0.999
            mean = (cur * inside[..., None]).sum(1, keepdim=True) / inside.sum(1).clamp(min=1)[:, None, None]
            new = cur + (value[:, None, None] - mean) * env[..., None]
        motion[..., idx] = new
        steered[..., j] = env > 0
    return motion, steered


def make_conditions(model: MotionTeacher | MotionStudent, b: dict[str, torch.Tensor],
                    cfg: TeacherTrainConfig | DistillConfig, gen: torch.Generator,
                    train: bool = True) -> tuple[torch.Tensor, Conditions, torch.Tensor]:
    """(x0 [B, T, M] model space, conditions, loss weight [B, T, M]) for a batch of windows."""
    dev = b["motion"].device
    motion = b["motion"].clone()
    B, T, _ = motion.shape

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    mel = b["mel"]
    if train and cfg.gain_db > 0 and model.audio_encoder.config.features == "logmel":  # random level, applied above the silence floor only
        gain = (rand(B, 1, 1) * 2 - 1) * cfg.gain_db * np.log(10) / 10
        mel = torch.where(mel > SOUND, mel + gain, mel)
    if train and cfg.p_steer > 0:
        motion, steered = steer(motion, cfg.p_steer, gen)
    else:
        steered = torch.zeros(B, T, len(STEERABLE), dtype=torch.bool, device=dev)
    # Frame controls read from the target motion (what the avatar did), shown on random spans.
    ctrl = torch.zeros(B, T, N_CONTROLS, device=dev)
    ctrl[..., CONTROL_NAMES.index("smile")] = motion[..., [M.index("mouthSmile_L"), M.index("mouthSmile_R")]].mean(-1)
    ctrl[..., CONTROL_NAMES.index("blink")] = (motion[..., [M.index("eyeBlink_L"), M.index("eyeBlink_R")]].mean(-1) > 0.5).float()
    ctrl[..., CONTROL_NAMES.index("gazeX")] = motion[..., M.index("eyeLookX")]
    ctrl[..., CONTROL_NAMES.index("gazeY")] = motion[..., M.index("eyeLookY")]
    for name, mname in (("yaw", "headYaw"), ("pitch", "headPitch"), ("roll", "headRoll")):
        ctrl[..., CONTROL_NAMES.index(name)] = motion[..., M.index(mname)]
    ctrl[..., CONTROL_NAMES.index("speak")] = 1.0
    mask = torch.zeros(B, T, N_CONTROLS, device=dev)
    if train:
        on = rand(B, N_CONTROLS) < cfg.p_controls
        a = (rand(B, N_CONTROLS) * T).long()
        length = (rand(B, N_CONTROLS) * T).long() + 1
        t = torch.arange(T, device=dev)[None, :, None]
        mask = (on[:, None] & (t >= a[:, None]) & (t < (a + length)[:, None])).float()
        for j, name in enumerate(STEERABLE):  # a steered span is always shown: the control caused it
            k = CONTROL_NAMES.index(name)
            mask[..., k] = torch.maximum(mask[..., k], steered[..., j].float())
        listen = rand(B) < cfg.p_listen
        if listen.any():
            m = motion[listen]
            m[:, :, ARTICULATION] = 0.0
            motion[listen] = m
            ctrl[listen, :, CONTROL_NAMES.index("speak")] = 0.0
            mask[listen, :, CONTROL_NAMES.index("speak")] = 1.0
    x0 = model.to_model(motion)
    context = torch.zeros_like(x0)
    cmask = torch.zeros(B, T, device=dev)
    if train:
        given = rand(B) < cfg.p_context
        k = (rand(B) * (T // 2)).long() + 1
        cmask = (given[:, None] & (torch.arange(T, device=dev)[None] < k[:, None])).float()
        context = x0 * cmask[..., None]
    p = (lambda q: rand(B) < q) if train else (lambda q: torch.zeros(B, dtype=torch.bool, device=dev))
    audio = model.audio_encoder(mel)
    c = Conditions(
        audio=audio,
        shape=torch.randn(B, SHAPE_DIM, generator=gen, device=dev).clamp(-3, 3),
        style=b["style"], controls=ctrl, control_mask=mask, context=context, context_mask=cmask,
        drop_audio=p(cfg.p_drop_audio), drop_style=p(cfg.p_drop_style), drop_identity=p(cfg.p_drop_identity))
    w = torch.ones_like(x0)
    w[..., MOUTH] = 2.0
    if cfg.closure_weight != 1.0:
        vis = b["viseme"]
        hard = (vis == VISEME_NAMES.index("PP")) | (vis == VISEME_NAMES.index("FF"))
        hard = torch.nn.functional.max_pool1d(hard.float()[:, None], 3, 1, 1)[:, 0] > 0  # +- 1 frame
        w = w * torch.where(hard, cfg.closure_weight, 1.0)[..., None]
    w = w * b["valid"][..., None].float() * (1.0 - 0.9 * cmask[..., None])
    return x0, c, w


def flow_loss(model, x0: torch.Tensor, c: Conditions, w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rectified-flow velocity regression at logit-normal noise levels."""
    B = x0.shape[0]
    s = torch.sigmoid(torch.randn(B, generator=gen, device=x0.device))
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    xs = (1 - s[:, None, None]) * x0 + s[:, None, None] * noise
    v = model(xs, s, c)
    return ((v - (noise - x0)) ** 2 * w).sum() / w.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------
def quick_eval(model: MotionTeacher | MotionStudent, heldout: Path, clips: int,
               scenarios=("speech", "singing", "hard", "pose"), steps: int = 4, audio_guidance: float = 2.0,
               reference: np.ndarray | None = None, generate_fn=None) -> dict:
    """Lip sync (r, offset) and bilabial closure of generated motion, measured on the landmarks it
    produces on a reference face (no rendering: fast, for monitoring training). `generate_fn(model, mel,
    n_frames, style)` replaces the teacher's sampler (the student streams)."""
    from engine.audio.frontend import model_rows
    from engine.data import styles
    from engine.data.corpus import scenario_clips
    from engine.eval import metrics as E
    from engine.face.tracking import mouth_opening
    from engine.models.sampling import Guidance, SampleConfig, generate

    if reference is None:
        reference = default_portrait_landmarks()
    basis = M.MotionBasis(reference)
    chosen = scenario_clips(heldout, tuple(scenarios), clips)
    out: dict[str, dict] = {}
    for sc in scenarios:
        rs, cl = [], []
        for clip in [c for s, _, c in chosen if s == sc]:
            phon = clip.phonemes
            if not phon:
                continue
            if generate_fn is not None:
                mo = generate_fn(model, model_rows(model, clip), clip.frames, styles.scenario_prompt(sc))
            else:
                mo = generate(model, model_rows(model, clip), clip.frames, SampleConfig(steps=steps, guidance=Guidance(audio_guidance)),
                              style=styles.scenario_prompt(sc))
            mouth = mouth_opening(basis.landmarks(mo))
            lc = E.lag_corr(mouth, E.phoneme_openness(phon, clip.frames, 25), 10)
            rs.append((lc.r, lc.offset, lc.r0))
            rate, count = E.bilabial_closure(mouth, phon, 25)
            if count:
                cl.append(rate)
        if rs:
            a = np.array(rs)
            out[sc] = {"r": float(a[:, 0].mean()), "offset": float(a[:, 1].mean()), "r0": float(a[:, 2].mean()),
                       "closure": float(np.mean(cl)) if cl else float("nan"), "clips": len(rs)}
    return out


def _stats(sampler: WindowSampler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    mo = np.concatenate([c.motion for c in sampler.clips])
    front = sampler.wcfg.front
    mel = np.concatenate([front.clip_rows(c).astype(np.float32) for c in sampler.clips[:200]])
    if front.kind == "logmel":
        mel = mel[mel.mean(1) > SOUND]
    std = np.maximum(mo.std(0), 0.02)
    return (torch.from_numpy(mo.mean(0)), torch.from_numpy(std.astype(np.float32)),
            torch.from_numpy(mel.mean(0)), torch.from_numpy(np.maximum(mel.std(0), 0.5)))


def train(cfg: TeacherTrainConfig) -> Path:
    """Train (or resume) a teacher; returns the folder of the final model."""
    rt = loop.setup(cfg.device, cfg.precision)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    mc = cfg.model
    if cfg.init is not None:
        model = load_teacher(cfg.init).train()
        log.info("Initialised from %s", cfg.init)
    else:
        model = MotionTeacher(dim=mc.dim, depth=mc.depth, heads=mc.heads, mlp_ratio=mc.mlp_ratio, dropout=mc.dropout,
                              window=mc.window, audio=mc.audio_config())
    wcfg = window_config(model.audio_encoder, model.config.window)
    sampler = WindowSampler(Path(cfg.corpus), tuple(cfg.scenarios), wcfg, cfg.scenario_share, cfg.real_weight)
    log.info("Corpus %s: %d clips, %.2f h%s; model %.2fM parameters", cfg.corpus, len(sampler.clips),
             sampler.frames / 25 / 3600, f" ({', '.join(cfg.scenarios)})" if cfg.scenarios else "",
             sum(p.numel() for p in model.parameters()) / 1e6)
    if cfg.init is None:
        mm, ms, fm, fs = _stats(sampler)
        model.motion_mean.copy_(mm)
        model.motion_std.copy_(ms)
        model.audio_encoder.mel_mean.copy_(fm)
        model.audio_encoder.mel_std.copy_(fs)
    # diffusers wraps ModelMixin.to with functools.wraps(nn.Module.to): typeshed's _Wrapped does not bind self
    model.to(rt.device)  # type: ignore[arg-type]
    net: torch.nn.Module = model
    if rt.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ckpt = out / "checkpoint"
    step = 0
    history: list[dict] = []
    if (ckpt / "trainer_state.json").exists():
        state = loop.load_checkpoint(ckpt, model, opt)
        step, history = state["step"], state.get("history", [])
        log.info("Resumed %s at step %d", ckpt, step)
    reference = default_portrait_landmarks() if cfg.heldout is not None and rt.main else None
    logf = (out / "log.jsonl").open("a", encoding="utf-8") if rt.main else None
    t0, losses = time.time(), []
    progress = Progress(TextColumn("[bold]teacher"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not rt.main)
    with progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            model.train()
            rng, gen = loop.step_randomness(cfg.seed, step, rt.rank, rt.device)
            batch = {k: v.to(rt.device) for k, v in sampler.draw(cfg.batch, rng).items()}
            for g in opt.param_groups:
                g["lr"] = loop.lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
            with rt.autocast():
                x0, c, w = make_conditions(model, batch, cfg, gen)
                loss = flow_loss(net, x0, c, w, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            progress.update(task, completed=step, info=f"loss {np.mean(losses[-50:]):.4f}")
            if rt.main and (step % cfg.log_every == 0 or step == cfg.steps):
                assert logf is not None  # opened on the main process
                rec = {"step": step, "loss": float(np.mean(losses[-cfg.log_every:])), "grad_norm": float(gn),
                       "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
            if rt.main and cfg.heldout is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                assert logf is not None
                q = quick_eval(model, Path(cfg.heldout), cfg.eval_clips, reference=reference)
                history.append({"step": step, "loss": float(np.mean(losses[-50:])), "eval": q})
                logf.write(json.dumps({"step": step, "eval": q}) + "\n")
                logf.flush()
                log.info("step %d eval: %s", step, "; ".join(f"{k} r {v['r']:.3f} off {v['offset']:+.1f} closure "
                                                             f"{v['closure']:.2f}" for k, v in q.items()))
            if rt.main and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                loop.save_checkpoint(ckpt, model, opt, step, {"history": history, "config": loop.jsonable(cfg)})
    final = out / "model"
    if rt.main:
        loop.save_final(out, model, cfg, step, history, t0, "Teacher")
    loop.teardown(rt)
    return final
