"""Teacher training: the conditions built from a batch, the loss going down, and checkpoint/resume
giving exactly the uninterrupted result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine import motion as M
from engine.data.build import BuildConfig, build
from engine.data.corpus import VISEME_NAMES
from engine.data.dataset import WindowConfig
from engine.models.conditions import CONTROL_NAMES
from engine.train import loop
from engine.train import teachers as TT
from engine.train.config import TeacherModelConfig, TeacherTrainConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    build(root, BuildConfig(hours=0.006, seed=3, shard_seconds=10, workers=2, scenarios=("speech", "singing")))
    return root


def _cfg(corpus, out, **kw) -> TeacherTrainConfig:
    model = TeacherModelConfig(dim=32, depth=1, heads=2, mlp_ratio=2.0, dropout=0.0, window=20)
    args = {"steps": 6, "batch": 4, "lr": 1e-3, "warmup": 2, "checkpoint_every": 3, "model": model, **kw}
    return TeacherTrainConfig(corpus=corpus, out=out, **args)


def test_conditions_from_a_batch(corpus):
    model = TT.MotionTeacher(dim=32, depth=1, heads=2, window=20)
    wcfg = WindowConfig(frames=20, past=model.audio_encoder.past_frames, lookahead=2)
    sampler = TT.WindowSampler(corpus, (), wcfg)
    assert {c.info["scenario"] for c in sampler.clips} == {"speech", "singing"}
    b = sampler.draw(6, np.random.default_rng(0))
    assert b["mel"].shape == (6, 4 * (20 + model.audio_encoder.past_frames + 2), 80)
    cfg = _cfg(corpus, corpus, p_listen=1.0, p_controls=1.0, p_context=1.0)
    x0, c, w = TT.make_conditions(model, b, cfg, torch.Generator().manual_seed(0))
    speak = CONTROL_NAMES.index("speak")
    assert (c.controls[..., speak] == 0).all() and (c.control_mask[..., speak] == 1).all()  # listening
    mouth = model.from_model(x0)[..., TT.ARTICULATION]
    assert mouth.abs().max() < 1e-5  # ... with the mouth closed whatever the audio
    assert (c.context_mask[:, 0] == 1).all() and torch.allclose(c.context[:, 0], x0[:, 0])
    assert (w[c.context_mask.bool()] < w.max()).all()  # known frames weigh less in the loss
    yaw = CONTROL_NAMES.index("yaw")
    given = c.control_mask[..., yaw].bool()
    target = model.from_model(x0)[..., M.index("headYaw")]  # (after steering)
    assert torch.allclose(c.controls[..., yaw][given], target[given], atol=1e-5)  # controls read from the target
    b = sampler.draw(32, np.random.default_rng(1))
    plain = TT.make_conditions(model, b, _cfg(corpus, corpus), torch.Generator().manual_seed(1))[2]
    heavy = TT.make_conditions(model, b, _cfg(corpus, corpus, closure_weight=4.0), torch.Generator().manual_seed(1))[2]
    pp = b["viseme"] == VISEME_NAMES.index("PP")
    assert pp.any() and torch.allclose(heavy[pp], 4 * plain[pp])  # bilabial frames weigh 4x
    far = (torch.nn.functional.max_pool1d((b["viseme"] == 1).float()[:, None] + (b["viseme"] == 2).float()[:, None],
                                          3, 1, 1)[:, 0] == 0)
    assert torch.allclose(heavy[far], plain[far])


def test_specialist_sampler_replays_the_other_scenarios(corpus):
    wcfg = WindowConfig(frames=20, past=14, lookahead=2)
    only = TT.WindowSampler(corpus, ("singing",), wcfg)
    assert {c.info["scenario"] for c in only.clips} == {"singing"}
    mixed = TT.WindowSampler(corpus, ("singing",), wcfg, share=0.6)
    scen = np.array([c.info["scenario"] for c in mixed.clips])
    assert np.isclose(mixed.p.sum(), 1) and np.isclose(mixed.p[scen == "singing"].sum(), 0.6)
    assert np.isclose(mixed.p[scen == "speech"].sum(), 0.4)


def test_steering_moves_the_target_and_shows_the_control():
    B, T = 16, 40
    motion = torch.zeros(B, T, M.DIM)
    steered_motion, steered = TT.steer(motion, 1.0, torch.Generator().manual_seed(0))
    yaw_j, smile_j = TT.STEERABLE.index("yaw"), TT.STEERABLE.index("smile")
    yaw = steered_motion[..., M.index("headYaw")]
    assert (yaw[~steered[..., yaw_j]] == 0).all()  # untouched outside the span
    for b in range(B):  # inside it: 4-frame ramps, and a plateau at one target value within the range
        span = yaw[b][steered[b, :, yaw_j]].numpy()
        values, counts = np.unique(span.round(5), return_counts=True)
        assert counts.max() >= len(span) - 8 and abs(values[counts.argmax()]) <= 0.3 + 1e-5
    smile = steered_motion[..., M.index("mouthSmile_L")]
    assert smile.max() > 0.2 and (smile >= 0).all() and (smile <= 1).all()
    assert steered[..., smile_j].float().mean() > 0.2


def test_loss_decreases(corpus, tmp_path):
    cfg = _cfg(corpus, tmp_path / "run", steps=60, checkpoint_every=1000, lr=3e-3, warmup=5, log_every=10,
               p_steer=0.0, p_listen=0.0)  # the plain flow-matching loss (steering adds far-off targets)
    TT.train(cfg)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50, 60]
    assert log[-1]["loss"] < 0.85 * log[0]["loss"]
    assert (tmp_path / "run" / "model" / "config.json").exists()


def test_resume_equals_uninterrupted(corpus, tmp_path, monkeypatch):
    straight = TT.train(_cfg(corpus, tmp_path / "a"))
    real_save = loop.save_checkpoint

    def crash_after_first_save(*args, **kw):
        real_save(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        TT.train(_cfg(corpus, tmp_path / "b"))
    state = json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = TT.train(_cfg(corpus, tmp_path / "b"))
    a = load_file(str(straight / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_specialist_starts_from_the_generalist(corpus, tmp_path):
    gen = TT.train(_cfg(corpus, tmp_path / "gen", steps=3))
    spec = TT.train(_cfg(corpus, tmp_path / "sing", steps=3, scenarios=("singing",), init=gen))
    g = load_file(str(gen / "diffusion_pytorch_model.safetensors"))
    s = load_file(str(spec / "diffusion_pytorch_model.safetensors"))
    torch.testing.assert_close(g["motion_mean"], s["motion_mean"])  # statistics kept from the generalist
    assert any((g[k] - s[k]).abs().max() > 0 for k in g if k.endswith("weight"))  # but fine-tuned
    with pytest.raises(ValueError, match="no clips"):
        TT.train(_cfg(corpus, tmp_path / "pose", steps=3, scenarios=("pose",), init=gen))


def test_same_script_runs_distributed_with_torchrun(corpus, tmp_path):
    """Two processes (gloo on the CPU; NCCL on GPUs) through torchrun: DDP keeps them in step and only
    rank 0 writes."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "engine.cli", "train",
           "teacher", "--corpus", str(corpus), "--out", str(out), "--steps", "4", "--batch", "2", "--dim", "32",
           "--depth", "1", "--heads", "2", "--window", "20", "--checkpoint-every", "2", "--log-every", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # one writer, not two
    assert (out / "model" / "diffusion_pytorch_model.safetensors").exists()


def test_guidance_sweep_and_results_table_commands(corpus, tmp_path, portraits_dir):
    from engine.cli import main

    model = TT.train(_cfg(corpus, tmp_path / "gen", steps=2))
    held = tmp_path / "held"
    build(held, BuildConfig(hours=0.002, seed=5, shard_seconds=8, workers=1, scenarios=("speech",), split="heldout"))
    portrait = str(portraits_dir / "happy.png")
    rc = main(["train", "guidance", "--model", str(model), "--corpus", str(held), "--out", str(tmp_path / "g"),
               "--scales", "1", "2", "--step-counts", "1", "2", "--scenarios", "speech", "--clips", "1",
               "--portrait", portrait, "--size", "128", "128"])
    assert rc == 0
    res = json.loads((tmp_path / "g" / "guidance.json").read_text())
    passes = {(r["steps"], r["audio_guidance"]): r["passes_per_frame"] for r in res["results"]}
    assert passes == {(1, 1.0): 1, (1, 2.0): 2, (2, 1.0): 2, (2, 2.0): 4}
    assert all(-1 <= r["r"] <= 1 and r["jitter"] >= 0 for r in res["results"])
    assert "| 2 |" in (tmp_path / "g" / "guidance.md").read_text()
    rc = main(["train", "compare", "--models", f"tiny={model}", "--corpus", str(held), "--scenarios", "speech",
               "--clips", "1", "--portrait", portrait, "--size", "128", "128", "--out", str(tmp_path / "c")])
    assert rc == 0
    table = (tmp_path / "c" / "compare.md").read_text()
    assert "| procedural |" in table and "| procedural-audio |" in table and "| tiny |" in table
    summary = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert summary["corpus"]["procedural"]["speech"]["clips"] == 1
    assert main(["train", "compare", "--models", "no-equals-sign"]) == 2
