"""Distillation: teacher routing, the teacher trajectory and the ODE stage, the DMD stage with
self-rollout, critic and tail forcing, resume, and the guidance calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.data.build import BuildConfig, build
from engine.data.corpus import SCENARIOS
from engine.models.loading import load_student
from engine.models.sampling import GuidanceSchedule
from engine.models.teacher import MotionTeacher
from engine.train import distill as D
from engine.train import loop
from engine.train.config import CalibrateConfig, DistillConfig, StudentModelConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    build(root, BuildConfig(hours=0.006, seed=3, shard_seconds=10, workers=2, scenarios=("speech", "singing")))
    return root


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny generalist and a singing specialist (same motion statistics), saved like the shipped ones."""
    root = tmp_path_factory.mktemp("teachers")
    for i, name in enumerate(("generalist", "singing")):
        torch.manual_seed(i)
        t = MotionTeacher(dim=32, depth=1, heads=2, mlp_ratio=2.0, window=20, audio={"channels": 32})
        with torch.no_grad():
            for n, p in t.named_parameters():
                if n.startswith(("head", "final_mod")) or "modulation" in n:
                    p.normal_(0, 0.05)  # not zero: the student must learn something
        t.save_pretrained(root / name)
    return root


def _cfg(corpus, teachers, out, **kw) -> DistillConfig:
    args = {"steps": 4, "batch": 4, "lr": 1e-3, "warmup": 1, "checkpoint_every": 2, "log_every": 1,
            "model": StudentModelConfig(chunk=3, window=6, sink_frames=1), "teachers": teachers, **kw}
    return DistillConfig(corpus=corpus, out=out, **args)


def test_routing_sends_each_scenario_to_its_specialist(teachers):
    pool = D.TeacherPool(teachers, routing=True, device=torch.device("cpu"))
    scen = torch.tensor([SCENARIOS.index(s) for s in ("speech", "singing", "singing", "hard")])
    groups = pool.groups(scen)
    assert groups["singing"].tolist() == [1, 2] and groups["generalist"].tolist() == [0, 3]
    flat = D.TeacherPool(teachers, routing=False, device=torch.device("cpu"))
    assert list(flat.groups(scen)) == ["generalist"]


def test_student_starts_as_the_teacher(teachers):
    t = MotionTeacher.from_pretrained(str(teachers / "generalist"))
    st = D.new_student(t, _cfg(None, teachers, None))
    assert st.config.dim == 32 and st.config.chunk == 3
    assert torch.equal(st.blocks[0].attn.qkv.weight, t.blocks[0].attn.qkv.weight)
    assert all((p == 0).all() for p in st.guide[2].parameters())  # guidance embedding starts neutral


def test_ode_stage_learns_and_resumes_exactly(corpus, teachers, tmp_path, monkeypatch):
    full = D.train(_cfg(corpus, teachers, tmp_path / "a", steps=6))
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(np.isfinite(r["loss"]) for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    real_save = loop.save_checkpoint

    def crash_after_first_save(*args, **kw):
        real_save(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        D.train(_cfg(corpus, teachers, tmp_path / "b", steps=6))
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = D.train(_cfg(corpus, teachers, tmp_path / "b", steps=6))
    a, b = load_student(full), load_student(resumed)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=n)


def test_dmd_stage_with_tail_forcing(corpus, teachers, tmp_path):
    ode = D.train(_cfg(corpus, teachers, tmp_path / "ode", steps=2))
    out = D.train(_cfg(corpus, teachers, tmp_path / "dmd", stage="dmd", init=ode, steps=3, rollout_steps=(1, 2),
                       tail_context=4))
    log = [json.loads(line) for line in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines()]
    assert all({"dmd", "tail", "critic"} <= set(r) for r in log)
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["critic"]) for r in log)
    before, after = load_student(ode), load_student(out)
    assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters()))
    assert (tmp_path / "dmd" / "critic" / "trainer_state.json").exists()


def test_rollout_is_the_streaming_path(teachers):
    """The rollout used in training is the inference path: the recomputed final step equals its output."""
    t = MotionTeacher.from_pretrained(str(teachers / "generalist"))
    st = D.new_student(t, _cfg(None, teachers, None)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in st.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    B, T = 2, 10
    from tests.models.test_student import _conditions

    c = _conditions(st, B, T, gen)
    g = torch.tensor([1.0, 3.0])
    x0, last_x, last_s, tail = D.rollout(st, c, g, 2, torch.Generator().manual_seed(1))
    assert not tail.any()
    with torch.no_grad():
        v = st(last_x, last_s, c, g, x0)
    torch.testing.assert_close(last_x - last_s[..., None] * v, x0, rtol=1e-4, atol=1e-5)


def test_tail_window_holds_sink_and_recent_frames():
    assert D.tail_window(3, 1, 24) == [0, 1, 2]
    assert D.tail_window(30, 1, 4) == [0, 26, 27, 28, 29]
    assert D.tail_window(30, 0, 4) == [26, 27, 28, 29]


def test_schedule_weights_follow_steps_and_groups():
    from engine.motion import MOTION_NAMES, index

    sched = GuidanceSchedule({"mouth": [1, 1, 0, 0], "eyes": [0, 0, 0, 0], "head": [0, 0, 0, 1]})
    w1 = sched.per_dim(1.0, MOTION_NAMES)
    assert w1[index("jawOpen")] == 1 and w1[index("eyeBlink_L")] == 0 and w1[index("headYaw")] == 0
    w4 = sched.per_dim(0.25, MOTION_NAMES)
    assert w4[index("jawOpen")] == 0 and w4[index("headYaw")] == 1
    assert sched.guided_cells() == 3 and GuidanceSchedule.uniform().guided_cells() == 12


def test_calibration_writes_a_schedule(corpus, teachers, tmp_path):
    from engine.train.calibrate import calibrate

    res = calibrate(CalibrateConfig(heldout=corpus, out=tmp_path, teacher=teachers / "generalist", clips=1,
                                    scenarios=("speech",)))
    assert res["chosen"] in res["candidates"]
    assert res["candidates"]["none"]["passes_per_step"] == 1.0 and res["candidates"]["full"]["passes_per_step"] == 2.0
    assert set(res["effect"]) == {"mouth", "eyes", "head"} and all(len(v) == 4 for v in res["effect"].values())
    sched = GuidanceSchedule.load(tmp_path / "calibration.json")
    assert sched.weights == {g: [float(w) for w in ws] for g, ws in res["schedule"].items()}
    assert "chosen" in (tmp_path / "calibration.md").read_text()
