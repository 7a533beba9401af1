"""Refiner training data (self-reconstruction pairs from a real video, held-out range kept apart) and the
trainer (losses, augmentation with mirrored motion, resume, held-out metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from engine import motion as M
from engine.train.config import RefinerTrainConfig
from engine.train.refiner import PairBatches, pair_metrics, refiner_loss, ssim_map, train
from engine.train.refiner_data import RefinerDataConfig, build_pairs, load_pairs

HELD_FROM = 2.0  # seconds: d0 is 3.1 s long


@pytest.fixture(scope="module")
def pairs(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("refiner_pairs")
    build_pairs(RefinerDataConfig(videos=(data_dir / "real" / "faces" / "d0.mp4",), out=out,
                                  heldout=(f"d0:{HELD_FROM}",), refs_per_clip=4, targets_per_ref=6))
    return out


def _meta(path: Path) -> list[dict]:
    with safe_open(str(path), "np") as f:
        return json.loads(f.metadata()["meta"])


def test_pairs_keep_the_held_out_range_apart_and_line_up(pairs):
    info = json.loads((pairs / "build.json").read_text())
    assert info["pairs"]["train"] >= 10 and info["pairs"]["heldout"] >= 5
    first_held = int(HELD_FROM * 25)
    for split, inside in (("train", lambda f: f < first_held), ("heldout", lambda f: f >= first_held)):
        meta = _meta(pairs / f"{split}.safetensors")
        assert all(inside(m["ref"]) and inside(m["frame"]) for m in meta)
        assert all(m["fit_error"] <= 0.05 for m in meta)
        d = load_pairs(pairs / f"{split}.safetensors")
        n = len(meta)
        assert d["rendered"].shape == (n, 144, 144, 3) and d["mask"].shape == (n, 144, 144)
        ident = np.array([bool(m.get("identity")) for m in meta])
        # identity pairs (zero motion): the rendering is the target itself
        assert ident.any()
        assert all((d["rendered"][i] == d["target"][i]).all() for i in np.flatnonzero(ident))
        # real pairs: rendering frame i at frame j's motion brings it closer to frame j than frame i is
        real = np.flatnonzero(~ident)
        err = lambda a, b: np.abs(a.astype(float) - b.astype(float)).mean()  # noqa: E731
        closer = [err(d["rendered"][i], d["target"][i]) <= err(d["reference"][i], d["target"][i]) + 0.5 for i in real]
        assert np.mean(closer) > 0.7


def test_mirrored_motion_is_an_involution_that_swaps_sides():
    perm, sign = M.mirror_permutation()
    m = np.random.default_rng(0).uniform(0, 0.3, M.DIM).astype(np.float32)
    np.testing.assert_allclose(m[perm][perm] * sign * sign[perm], m)
    one = M.zeros()
    one[M.index("mouthSmile_L")] = 0.7
    one[M.index("headYaw")] = 0.2
    mir = one[perm] * sign
    assert mir[M.index("mouthSmile_R")] == pytest.approx(0.7) and mir[M.index("mouthSmile_L")] == 0
    assert mir[M.index("headYaw")] == pytest.approx(-0.2)


def test_augmentation_transforms_a_pair_consistently(pairs):
    data = load_pairs(pairs / "train.safetensors")
    idx_id = np.flatnonzero((data["rendered"] == data["target"]).reshape(len(data["target"]), -1).all(1))
    rng = np.random.default_rng(1)
    gen = torch.Generator().manual_seed(1)
    # identity pairs stay identical under any augmentation (one transform per pair)
    sub = PairBatches({k: v[idx_id] for k, v in data.items()}, 128, True)
    r, ref, t, mask, motion = sub.sample(8, rng, gen)
    assert torch.equal(r, t) and r.shape == (8, 3, 128, 128)
    assert mask.shape == (8, 1, 128, 128) and motion.shape == (8, M.DIM)
    assert ssim_map(r, t).mean() > 0.999


def test_training_reduces_the_loss_resumes_and_reports(pairs, tmp_path):
    torch.set_num_threads(2)
    cfg = RefinerTrainConfig(data=pairs, out=tmp_path / "run", steps=12, batch=4, lr=5e-4, warmup=2, eval_every=6,
                             checkpoint_every=6, augment=False)
    train(cfg)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 12
    hist = json.loads((tmp_path / "run" / "train.json").read_text())["history"]
    assert [h["step"] for h in hist] == [0, 6, 12]
    assert hist[0]["psnr"] == hist[0]["psnr_raw"]  # an untrained refiner is the identity
    assert hist[-1]["pairs"] >= 5 and hist[-1]["identity_pairs"] >= 1 and "identity_change" in hist[-1]
    # resume: more steps continue from the checkpoint
    train(RefinerTrainConfig(**{**cfg.__dict__, "steps": 14}))
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 14
    from engine.models.loading import load_refiner

    net = load_refiner(tmp_path / "run" / "model")
    assert net.config.work == 128 and net.config.crop_scale == pytest.approx(0.6)
    assert float(net.head.weight.abs().sum()) > 0  # the zero-initialised output layer has learned
    m = pair_metrics(net, PairBatches(load_pairs(pairs / "heldout.safetensors"), 128, False))
    assert np.isfinite(m["psnr"]) and m["identity_change"] < 5.0


def test_loss_is_zero_only_for_the_target():
    cfg = RefinerTrainConfig(data=Path("."), out=Path("."))
    g = torch.Generator().manual_seed(0)
    t = torch.rand(2, 3, 32, 32, generator=g)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 12:20, 10:22] = 1
    same = refiner_loss(t, t, mask, cfg)
    assert float(same["loss"]) < 1e-4
    blurred = torch.nn.functional.avg_pool2d(t, 3, 1, 1)
    worse = refiner_loss(blurred, t, mask, cfg)
    assert float(worse["hf"]) > 0.01 and float(worse["loss"]) > 0.05


def test_adversarial_and_temporal_training_with_the_mouth_gate(pairs, tmp_path):
    from safetensors.torch import load_file

    from engine.models.refiner import RefinerNet

    torch.set_num_threads(2)
    cfg = RefinerTrainConfig(data=pairs, out=tmp_path / "gan", steps=6, batch=4, lr=5e-4, warmup=2, eval_every=6,
                             checkpoint_every=3, gate=0.1, adv_weight=0.05, fm_weight=1.0, temporal_weight=2.0)
    train(cfg)
    ckpt = tmp_path / "gan" / "checkpoint"
    assert (ckpt / "discriminator.safetensors").exists()
    d_before = load_file(str(ckpt / "discriminator.safetensors"))
    train(RefinerTrainConfig(**{**cfg.__dict__, "steps": 9}))  # resumes the discriminator too
    d_after = load_file(str(ckpt / "discriminator.safetensors"))
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before)
    net = RefinerNet.from_pretrained(str(tmp_path / "gan" / "model"))
    assert net.config.gate == pytest.approx(0.1)


def test_the_mouth_gate_confines_the_correction():
    from engine.render.refiner import apply_refiner, feather_window, mouth_gate

    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 60:70, 50:80] = 1.0
    gate = mouth_gate(mask, 0.1)
    assert gate[..., 65, 65] == 1.0 and gate[..., 10, 10] == 0.0 and gate[..., 65, 20] == 0.0
    assert torch.equal(mouth_gate(mask, 0.0), torch.ones_like(mask))

    class Shift(torch.nn.Module):  # a "network" that changes every pixel
        config = type("C", (), {"gate": 0.1})()

        def forward(self, rendered, reference, mask, motion):
            return torch.full_like(rendered, 0.2)

    img = torch.full((1, 3, 128, 128), 0.5)
    out = apply_refiner(Shift(), img, img, mask, torch.zeros(1, M.DIM), feather_window(128, 128, 0.18))
    assert torch.equal(out[..., :30, :], img[..., :30, :])  # far from the mouth: untouched
    assert out[..., 65, 65].min() > 0.65  # at the mouth: changed
