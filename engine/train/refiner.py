"""`talkcam train refiner`: fit the decoder refiner on self-reconstruction pairs of real video.

Each pair (from `talkcam data refiner`) is (rendered crop, reference crop, mouth mask, motion) -> the real
frame's crop. Losses: pixel L1, structure (1 - SSIM), image gradients and the Laplacian (high
frequencies: teeth edges, lip lines), with extra weight in and around the mouth opening. Augmentation
applies one random colour transform, blur and mirror to all three images of a pair (mirroring mirrors
the motion too), so the refiner meets paintings, soft and tinted portraits it never saw.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import motion as M
from engine.models.refiner import RefinerNet
from engine.render.refiner import apply_refiner, feather_window, mouth_gate
from engine.train.config import RefinerTrainConfig
from engine.train.loop import (
    jsonable,
    load_checkpoint,
    lr_at,
    save_checkpoint,
    save_final,
    setup,
    step_randomness,
)
from engine.train.refiner_data import load_pairs

log = logging.getLogger(__name__)


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of images [B, C, H, W] in 0..1 (Gaussian window 11, sigma 1.5), 'valid' region."""
    g = _gauss().to(a)
    c = a.shape[1]
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a**2
    vb = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(x, _LAPLACE.to(x).view(1, 1, 3, 3).expand(c, 1, 3, 3), padding=1, groups=c)


def mouth_weight(mask: torch.Tensor, extra: float) -> torch.Tensor:
    """1 everywhere plus `extra` in and around the mouth opening ([B, 1, H, W])."""
    near = F.max_pool2d(mask, 15, stride=1, padding=7)
    return 1.0 + extra * near


def refiner_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: RefinerTrainConfig) -> dict:
    w = mouth_weight(mask, cfg.mouth_weight)
    wn = w / w.mean()
    l1 = (wn * (pred - target).abs()).mean()
    ssim = 1.0 - ssim_map(pred, target).mean()
    dxp, dxt = pred[..., :, 1:] - pred[..., :, :-1], target[..., :, 1:] - target[..., :, :-1]
    dyp, dyt = pred[..., 1:, :] - pred[..., :-1, :], target[..., 1:, :] - target[..., :-1, :]
    grad = (wn[..., :, 1:] * (dxp - dxt).abs()).mean() + (wn[..., 1:, :] * (dyp - dyt).abs()).mean()
    hf = (wn * (laplacian(pred) - laplacian(target)).abs()).mean()
    detail = (wn * (detail_energy(pred) - detail_energy(target)).abs()).mean()
    total = l1 + cfg.ssim_weight * ssim + cfg.grad_weight * grad + cfg.hf_weight * hf + cfg.detail_weight * detail
    return {"loss": total, "l1": l1, "ssim": ssim, "grad": grad, "hf": hf, "detail": detail}


def detail_energy(x: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Local high-frequency energy [B, 1, H, W]: |Laplacian| of the grey image, box-averaged over `size` px."""
    grey = x.mean(1, keepdim=True)
    return F.avg_pool2d(laplacian(grey).abs(), size, stride=1, padding=size // 2, count_include_pad=False)


class PairBatches:
    """Random training batches from the stored pairs (crops, augmentation) as float tensors."""

    def __init__(self, pairs: dict[str, np.ndarray], crop: int, augment: bool) -> None:
        self.rendered = torch.from_numpy(pairs["rendered"])
        self.reference = torch.from_numpy(pairs["reference"])
        self.target = torch.from_numpy(pairs["target"])
        self.mask = torch.from_numpy(pairs["mask"])
        self.motion = torch.from_numpy(pairs["motion"])
        self.n, self.store = self.rendered.shape[0], self.rendered.shape[1]
        # identity pairs (zero motion): the rendering is the target itself
        self.identity = np.flatnonzero((self.rendered == self.target).flatten(1).all(1).numpy())
        if crop > self.store:
            raise ValueError(f"--crop {crop} is larger than the stored pairs ({self.store})")
        self.crop = crop
        self.augment = augment
        perm, sign = M.mirror_permutation()
        self.perm, self.sign = torch.from_numpy(perm), torch.from_numpy(sign)

    def __len__(self) -> int:
        return self.n

    def take(self, idx: np.ndarray, offsets: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Crops at the given (x, y) offsets -> rendered, reference, target [B, 3, c, c], mask [B, 1, c, c], motion."""
        c = self.crop
        sl = [(slice(int(oy), int(oy) + c), slice(int(ox), int(ox) + c)) for ox, oy in offsets]

        def stack(t):
            return torch.stack([t[i][ys, xs] for i, (ys, xs) in zip(idx, sl)])

        to_f = lambda t: stack(t).permute(0, 3, 1, 2).float().div(255.0)  # noqa: E731
        mask = stack(self.mask).float().div(255.0).unsqueeze(1)
        return to_f(self.rendered), to_f(self.reference), to_f(self.target), mask, self.motion[idx].clone()

    def center(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        o = (self.store - self.crop) // 2
        return self.take(idx, np.full((len(idx), 2), o))

    def sample(self, batch: int, rng: np.random.Generator, gen: torch.Generator,
               identity_share: float = 0.0) -> tuple[torch.Tensor, ...]:
        idx = rng.integers(0, self.n, batch)
        if identity_share > 0 and len(self.identity):
            pick = rng.random(batch) < identity_share
            idx[pick] = rng.choice(self.identity, size=int(pick.sum()))
        offsets = rng.integers(0, self.store - self.crop + 1, (batch, 2))
        rendered, reference, target, mask, motion = self.take(idx, offsets)
        if not self.augment:
            return rendered, reference, target, mask, motion
        imgs = torch.stack([rendered, reference, target])  # [3, B, 3, c, c]: one transform per pair
        flip = torch.from_numpy(rng.random(batch) < 0.5)
        imgs[:, flip] = imgs[:, flip].flip(-1)
        mask[flip] = mask[flip].flip(-1)
        motion[flip] = motion[flip][:, self.perm] * self.sign
        gain = torch.empty(1, batch, 3, 1, 1).uniform_(0.85, 1.15, generator=gen)
        gamma = torch.empty(1, batch, 1, 1, 1).uniform_(0.8, 1.25, generator=gen)
        sat = torch.empty(1, batch, 1, 1, 1).uniform_(0.5, 1.2, generator=gen)
        grey = imgs.mean(2, keepdim=True)
        imgs = (grey + sat * (imgs - grey)).clamp(0, 1)
        imgs = (imgs.clamp_min(1e-4) ** gamma * gain).clamp(0, 1)
        soft = np.flatnonzero(rng.random(batch) < 0.25)  # soft portraits: down- and up-sample
        for i in soft:
            f = float(rng.uniform(0.4, 0.8))
            small = F.interpolate(imgs[:, i], scale_factor=f, mode="area")
            imgs[:, i] = F.interpolate(small, size=(self.crop, self.crop), mode="bilinear", align_corners=False)
        return imgs[0], imgs[1], imgs[2], mask, motion


class MouthDiscriminator(nn.Module):
    """Patch discriminator on the refiner's crop: image [B, 3, H, W] in 0..1 and the mouth mask [B, 1, H, W]
    -> logits [B, 1, H/8, W/8] (one per 8x8 patch, about 22 px of receptive field per side) and the
    features of each level (for feature matching). Spectral norm keeps it stable on small data."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        w = width
        self.levels = nn.ModuleList([
            nn.Sequential(sn(nn.Conv2d(4, w, 4, 2, 1)), nn.LeakyReLU(0.2)),
            nn.Sequential(sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2)),
            nn.Sequential(sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2)),
        ])
        self.head = sn(nn.Conv2d(4 * w, 1, 3, 1, 1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.cat([image * 2.0 - 1.0, mask], dim=1)
        feats = []
        for level in self.levels:
            h = level(h)
            feats.append(h)
        return self.head(h), feats


def diff_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020) on [B, C, H, W] (RGB then the mask): colour (brightness, saturation,
    contrast; RGB only), translation by up to 1/8 of the side and a cutout of half the side, each sample its
    own draw. Differentiable, so the generator learns through it; the same policy for real and fake."""
    b, _, h, w = x.shape
    rgb, rest = x[:, :3], x[:, 3:]
    rgb = rgb + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.4
    mean = rgb.mean(1, keepdim=True)
    rgb = (rgb - mean) * (torch.rand(b, 1, 1, 1, generator=gen) * 2.0) + mean
    mean = rgb.mean((1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * (torch.rand(b, 1, 1, 1, generator=gen) + 0.5) + mean
    x = torch.cat([rgb, rest], 1)
    shift = max(1, h // 8)
    pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    offs = torch.randint(0, 2 * shift + 1, (b, 2), generator=gen)
    x = torch.stack([pad[i, :, int(oy):int(oy) + h, int(ox):int(ox) + w] for i, (ox, oy) in enumerate(offs)])
    cut = torch.ones(b, 1, h, w)
    cy, cx = torch.randint(0, h, (b,), generator=gen), torch.randint(0, w, (b,), generator=gen)
    for i in range(b):
        y0, x0 = max(0, int(cy[i]) - h // 4), max(0, int(cx[i]) - w // 4)
        cut[i, :, y0:y0 + h // 2, x0:x0 + w // 2] = 0.0
    return x * cut.to(x)


def _weighted(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (v * weight).sum() / weight.sum().clamp_min(1e-6)


def adversarial_terms(disc: MouthDiscriminator, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      gate: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Generator terms: the hinge adversarial loss and feature matching, both over the mouth region's patches."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    fake_in = diff_augment(torch.cat([pred, mask, gate], 1), torch.Generator().manual_seed(seed))
    real_in = diff_augment(torch.cat([target, mask, gate], 1), torch.Generator().manual_seed(seed))  # same draws
    logits, f_fake = disc(fake_in[:, :3], fake_in[:, 3:4])
    with torch.no_grad():
        _, f_real = disc(real_in[:, :3], real_in[:, 3:4])
    w = F.adaptive_avg_pool2d(fake_in[:, 4:5], logits.shape[-2:])
    adv = -_weighted(logits, w)
    fm = sum(_weighted((a - b).abs().mean(1, keepdim=True), F.adaptive_avg_pool2d(fake_in[:, 4:5], a.shape[-2:]))
             for a, b in zip(f_fake, f_real)) / len(f_fake)
    return adv, cast(torch.Tensor, fm)  # a sum of tensors (f_fake is never empty), not sum()'s int start


def discriminator_loss(disc: MouthDiscriminator, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       gate: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    fake_in = diff_augment(torch.cat([pred.detach(), mask, gate], 1), gen)
    real_in = diff_augment(torch.cat([target, mask, gate], 1), gen)
    lf, _ = disc(fake_in[:, :3], fake_in[:, 3:4])
    lr_, _ = disc(real_in[:, :3], real_in[:, 3:4])
    wf = F.adaptive_avg_pool2d(fake_in[:, 4:5], lf.shape[-2:])
    wr = F.adaptive_avg_pool2d(real_in[:, 4:5], lr_.shape[-2:])
    return _weighted(F.relu(1.0 - lr_), wr) + _weighted(F.relu(1.0 + lf), wf)


def temporal_term(net, rendered, reference, mask, motion, window, pred, gen: torch.Generator) -> torch.Tensor:
    """Shift every input by the same 1-2 px: the refined crop must move with it (inside a 4 px margin)."""
    dx, dy = (int(v) * int(s) for v, s in zip(torch.randint(1, 3, (2,), generator=gen),
                                               torch.randint(0, 2, (2,), generator=gen) * 2 - 1))
    roll = lambda t: torch.roll(t, shifts=(dy, dx), dims=(2, 3))  # noqa: E731
    moved = apply_refiner(net, roll(rendered), roll(reference), roll(mask), motion, window)
    m = 4
    return (moved - roll(pred))[..., m:-m, m:-m].abs().mean()


def psnr(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (dB) per image of [B, 3, H, W] in 0..1, optionally over a weighted region [B, 1, H, W]."""
    err = (a - b) ** 2
    if weight is None:
        mse = err.mean((1, 2, 3))
    else:
        mse = (err * weight).sum((1, 2, 3)) / (3 * weight.sum((1, 2, 3))).clamp_min(1e-6)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.inference_mode()
def pair_metrics(net: RefinerNet | None, batches: PairBatches, batch: int = 32) -> dict:
    """Held-out pairs, centre crops: PSNR/SSIM of the rendering and of the refined rendering against the
    real frame (whole crop and mouth region). Identity pairs (zero motion: the rendering is the target)
    are scored apart: how much the refiner changes an untouched portrait (0-255 units, mean and max)."""
    out: dict[str, list[float]]
    out = {k: [] for k in ("psnr", "ssim", "psnr_mouth", "psnr_raw", "ssim_raw", "psnr_mouth_raw", "identity_change")}
    window = None
    ident = np.zeros(len(batches), bool)
    ident[batches.identity] = True
    identity_max = 0.0
    for s in range(0, len(batches), batch):
        idx = np.arange(s, min(len(batches), s + batch))
        rendered, reference, target, mask, motion = batches.center(idx)
        if window is None:
            window = feather_window(rendered.shape[-2], rendered.shape[-1], net.config.feather if net else 0.18)
        is_id = torch.from_numpy(ident[idx])
        if is_id.any():
            if net is not None:
                same = apply_refiner(net, rendered[is_id], reference[is_id], mask[is_id], motion[is_id], window)
                change = 255.0 * (same - rendered[is_id]).abs()
                out["identity_change"] += change.mean((1, 2, 3)).tolist()
                identity_max = max(identity_max, float(change.max()))
            keep = ~is_id
            rendered, reference, target, mask, motion = (t[keep] for t in (rendered, reference, target, mask, motion))
            if len(rendered) == 0:
                continue
        mouth = (F.max_pool2d(mask, 15, stride=1, padding=7) > 0.01).float()
        for suffix, img in (("_raw", rendered),
                            ("", apply_refiner(net, rendered, reference, mask, motion, window) if net else rendered)):
            out["psnr" + suffix] += psnr(img, target).tolist()
            out["ssim" + suffix] += ssim_map(img, target).mean((1, 2, 3)).tolist()
            has = mouth.sum((1, 2, 3)) > 0
            pm = psnr(img, target, mouth)
            out["psnr_mouth" + suffix] += pm[has].tolist()
    res = {k: round(float(np.mean(v)), 4) for k, v in out.items() if v}
    res["pairs"], res["identity_pairs"] = int((~ident).sum()), int(ident.sum())
    if net is not None and ident.any():
        res["identity_change_max"] = round(identity_max, 2)
    return res


def train(cfg: RefinerTrainConfig) -> Path:
    rt = setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data)
    built = json.loads((data / "build.json").read_text("utf-8"))["config"]
    work = int(built["work"])
    train_set = PairBatches(load_pairs(data / "train.safetensors"), work, cfg.augment)
    held = PairBatches(load_pairs(data / "heldout.safetensors"), work, False) \
        if (data / "heldout.safetensors").exists() else None
    net = RefinerNet(channels=tuple(cfg.channels), bottleneck_blocks=cfg.bottleneck_blocks,
                     crop_scale=built["crop"]["scale"], feather=built["crop"]["feather"], work=work,
                     gate=cfg.gate).to(rt.device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    disc = MouthDiscriminator().to(rt.device) if cfg.adv_weight > 0 else None
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999)) if disc is not None else None
    window = feather_window(work, work, built["crop"]["feather"]).to(rt.device)
    ckpt = out / "checkpoint"
    step, history = 0, []
    started = time.time()
    if (ckpt / "trainer_state.json").exists():
        state = load_checkpoint(ckpt, net, opt)
        step, history = state["step"], state.get("history", [])
        if disc is not None and (ckpt / "discriminator.safetensors").exists():
            from safetensors.torch import load_file

            disc.load_state_dict(load_file(str(ckpt / "discriminator.safetensors")))
        log.info("Resumed from %s at step %d", ckpt, step)
    else:
        if cfg.init is not None:
            from safetensors.torch import load_model

            load_model(net, str(Path(cfg.init) / "diffusion_pytorch_model.safetensors"))
            log.info("Starting from %s", cfg.init)
        (out / "config.json").write_text(json.dumps(jsonable(cfg), indent=1), "utf-8")
        if held is not None:
            history.append({"step": 0, **pair_metrics(None, held)})
    log.info("Refiner: %d parameters, %d training pairs, %s held-out", sum(p.numel() for p in net.parameters()),
             len(train_set), len(held) if held is not None else "no")
    t0 = time.time()
    run: dict[str, float] = {}
    while step < cfg.steps:
        rng, gen = step_randomness(cfg.seed, step, rt.rank, torch.device("cpu"))
        rendered, reference, target, mask, motion = (t.to(rt.device) for t in train_set.sample(cfg.batch, rng, gen, cfg.identity_share))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        net.train()
        pred = apply_refiner(net, rendered, reference, mask, motion, window)
        losses = refiner_loss(pred, target, mask, cfg)
        if cfg.temporal_weight > 0:
            losses["temporal"] = temporal_term(net, rendered, reference, mask, motion, window, pred, gen)
            losses["loss"] = losses["loss"] + cfg.temporal_weight * losses["temporal"]
        if disc is not None:
            gate = window * mouth_gate(mask, cfg.gate if cfg.gate > 0 else 0.1)
            losses["adv"], losses["fm"] = adversarial_terms(disc, pred, target, mask, gate, gen)
            losses["loss"] = losses["loss"] + cfg.adv_weight * losses["adv"] + cfg.fm_weight * losses["fm"]
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if disc is not None:
            assert d_opt is not None  # created with the discriminator
            losses["d"] = discriminator_loss(disc, pred, target, mask, gate, gen)
            d_opt.zero_grad(set_to_none=True)
            losses["d"].backward()
            d_opt.step()
        step += 1
        for k, v in losses.items():
            run[k] = run.get(k, 0.0) + float(v.detach())
        if step % 50 == 0:
            log.info("step %d  %s  %.2f s/step", step, "  ".join(f"{k} {v / 50:.4f}" for k, v in run.items()),
                     (time.time() - t0) / 50)
            run, t0 = {}, time.time()
        if held is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            net.eval()
            metrics = pair_metrics(net, held)
            history.append({"step": step, **metrics})
            log.info("held-out at step %d: %s", step, metrics)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, net, opt, step, {"history": history})
            if disc is not None:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in disc.state_dict().items()},
                          str(ckpt / "discriminator.safetensors"))
    net.eval()
    return save_final(out, net, cfg, step, history, started, "Refiner")
