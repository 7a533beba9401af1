"""Decoder refiner: a small pixel-space network that repairs what the warp cannot make.

The renderer only moves the portrait's pixels, so an open mouth gets a painted cavity and teeth,
and stretched skin (the chin under an opening jaw, the lip line) blurs. The refiner looks at a
square crop around the mouth, where those defects are, and predicts a correction:

    refined = rendered + window * delta(rendered, reference, mouth mask, motion)

- `rendered`: the renderer's output in the crop;
- `reference`: the portrait's own (unwarped) pixels at the same place: its colours, teeth if it
  shows any, skin texture and sharpness, so the output is anchored to the portrait every frame
  and cannot accumulate drift;
- `mouth mask`: the inner-lip opening at the current motion (where new pixels are needed);
- `motion`: the motion vector (mouth shape), injected by FiLM in the bottleneck;
- `window`: a fixed feather that is 0 at the crop border, so the crop blends in without a seam.

The network is `engine.models.refiner.RefinerNet` (a compact residual U-Net; its ONNX export and
runners are in `engine.backends`).

`FrameRefiner` applies it to full frames: it places the crop per frame (centred on the mouth at that
frame's motion, fixed size per portrait), rasterises the mouth mask and pastes the result back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import motion as M
from engine.face import topology as T
from engine.models.refiner import RefinerNet


@dataclass
class CropConfig:
    """Where the refiner works, relative to the portrait's face."""

    scale: float = 0.6
    """Crop side relative to the face height (forehead to chin): 0.6 covers lips, teeth and chin."""
    feather: float = 0.18
    """Share of the crop side over which the correction fades to zero at the border."""


def feather_window(h: int, w: int, feather: float) -> torch.Tensor:
    """[1, 1, H, W]: 1 inside, a raised-cosine ramp to 0 at the border over `feather` of each side."""
    def ramp(n: int) -> torch.Tensor:
        k = max(1, int(round(feather * n)))
        t = torch.ones(n)
        edge = 0.5 - 0.5 * torch.cos(torch.linspace(0.0, math.pi, k + 2)[1:-1])
        t[:k] = edge
        t[n - k:] = edge.flip(0)
        return t

    return (ramp(h)[:, None] * ramp(w)[None, :])[None, None]


def mouth_gate(mask: torch.Tensor, share: float) -> torch.Tensor:
    """[B, 1, H, W]: 1 on the mouth opening grown by `share` of the crop side, fading to 0 over half as much
    again; all ones when share is 0 (the whole crop may change). Computed on a 4x coarser grid and upsampled
    (the gate is smooth; big pooling windows at full resolution cost more than the network)."""
    if share <= 0:
        return torch.ones_like(mask)
    h, w = mask.shape[-2:]
    s = 4 if h % 4 == 0 and w % 4 == 0 else 1
    coarse = F.max_pool2d(mask, s) if s > 1 else mask
    r = max(1, int(round(share * w / s)))
    k = max(1, r // 2)
    grown = F.max_pool2d(coarse, (1, 2 * (r + k) + 1), stride=1, padding=(0, r + k))
    grown = F.max_pool2d(grown, (2 * (r + k) + 1, 1), stride=1, padding=(r + k, 0))
    grown = F.avg_pool2d(grown, (1, 2 * k + 1), stride=1, padding=(0, k), count_include_pad=False)
    grown = F.avg_pool2d(grown, (2 * k + 1, 1), stride=1, padding=(k, 0), count_include_pad=False)
    return F.interpolate(grown, size=(h, w), mode="bilinear", align_corners=False) if s > 1 else grown


def apply_refiner(net, rendered: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                  motion: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The refined crop, clamped to 0..1 ([B, 3, H, W])."""
    gate = window * mouth_gate(mask, float(getattr(net.config, "gate", 0.0)))
    return (rendered + gate * net(rendered, reference, mask, motion)).clamp(0.0, 1.0)


class CropGeometry:
    """Per portrait: the crop side, and per frame the crop's corner (centred on the mouth)."""

    def __init__(self, landmarks: np.ndarray, basis: M.MotionBasis, frame_hw: tuple[int, int],
                 config: CropConfig | None = None, work: int | None = None) -> None:
        self.config = config or CropConfig()
        oval = landmarks[list(T.FACE_OVAL), :2]
        face_h = float(np.ptp(oval[:, 1]))
        side = int(round(self.config.scale * face_h))
        if work and abs(side - work) <= 0.06 * work:
            side = work  # within 6% of the network's side: crop exactly that (no resampling, no blur)
        fh, fw = frame_hw
        self.side = max(16, min(side, fh, fw))
        self.frame_hw = frame_hw
        self.poly_idx = list(T.inner_mouth_polygon())
        self.lip_idx = list(T.LIPS_OUTER_UPPER + T.LIPS_OUTER_LOWER)
        self.poly_ref = basis.reference[self.poly_idx, :2]
        self.poly_basis = basis.basis[self.poly_idx, :2, :]  # [P, 2, DIM]
        self.lip_ref = basis.reference[self.lip_idx, :2]
        self.lip_basis = basis.basis[self.lip_idx, :2, :]

    def mouth(self, motion: np.ndarray) -> np.ndarray:
        """Inner-lip polygon [P, 2] (frame pixels) at `motion` [DIM]."""
        return self.poly_ref + self.poly_basis @ motion

    def corner(self, motion: np.ndarray) -> tuple[int, int]:
        """Top-left (x, y) of the crop for this motion: centred on the lips, kept inside the frame."""
        lips = self.lip_ref + self.lip_basis @ motion
        cx, cy = lips.mean(0)
        fh, fw = self.frame_hw
        x0 = int(np.clip(round(cx - self.side / 2), 0, fw - self.side))
        y0 = int(np.clip(round(cy - self.side / 2), 0, fh - self.side))
        return x0, y0

    def mask(self, motion: np.ndarray, corner: tuple[int, int], side: int | None = None) -> np.ndarray:
        """[side, side] float32 0..1: the mouth opening at `motion`, anti-aliased, in crop pixels."""
        import cv2

        side = side or self.side
        poly = self.mouth(motion) - np.asarray(corner, np.float32)
        out = np.zeros((side, side), np.uint8)
        shift = 4
        pts = np.round(poly * (1 << shift)).astype(np.int32)
        cv2.fillPoly(out, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
        return out.astype(np.float32) / 255.0


class FrameRefiner:
    """Applies a RefinerNet to full frames of one portrait (the renderer's output).

    The network always runs at its `work` side (fixed cost at any output size); a crop of another side
    is resampled to it, and only the correction is resampled back, so untouched detail keeps the
    output's full resolution.
    """

    def __init__(self, net: RefinerNet, portrait: np.ndarray, landmarks: np.ndarray, basis: M.MotionBasis,
                 device: str | torch.device = "cpu") -> None:
        # a RefinerNet or a runtime backend (OnnxRefiner). The ignore: diffusers wraps ModelMixin.to in
        # functools.wraps, which mypy types as the unbound function (self expected as the first argument)
        self.net = net.to(device).eval() if isinstance(net, nn.Module) else net  # type: ignore[arg-type]
        cfg = net.config
        crop = CropConfig(scale=cfg.crop_scale, feather=cfg.feather)
        self.device = device
        self.portrait = portrait  # [H, W, 3] uint8, the framed portrait (motion 0)
        self.geometry = CropGeometry(landmarks, basis, portrait.shape[:2], crop, cfg.work)
        s, w = self.geometry.side, cfg.work
        self.work = w
        self.window = feather_window(s, s, crop.feather).to(device)

    @property
    def backend(self) -> str:
        """What runs the network: torch, or the runtime backend's name."""
        return "torch" if isinstance(self.net, nn.Module) else getattr(self.net, "name", type(self.net).__name__)

    def crops(self, frames: np.ndarray, motion: np.ndarray):
        """The network's inputs for frames [B, H, W, 3] uint8 rendered at motion [B, DIM]: corners, and the
        rendered crops [B, 3, S, S], reference crops, mouth masks [B, 1, S, S] at the crop side S."""
        s = self.geometry.side
        corners = [self.geometry.corner(m) for m in motion]
        rendered = np.stack([f[y:y + s, x:x + s] for f, (x, y) in zip(frames, corners)])
        reference = np.stack([self.portrait[y:y + s, x:x + s] for x, y in corners])
        masks = np.stack([self.geometry.mask(m, c) for m, c in zip(motion, corners)])
        to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255.0).to(self.device)  # noqa: E731
        mask_t = torch.from_numpy(masks)[:, None].to(self.device)
        return corners, to_t(rendered), to_t(reference), mask_t

    @torch.inference_mode()
    def correct(self, rendered: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                motion: torch.Tensor) -> torch.Tensor:
        """Refined crops [B, 3, S, S] (0..1) for crops at the geometry's side S."""
        s, w = rendered.shape[-1], self.work
        if s == w:
            delta = self.net(rendered, reference, mask, motion)
        else:  # run at the work side, resample only the correction back
            down = lambda t: F.interpolate(t, size=(w, w), mode="area" if s > w else "bilinear")  # noqa: E731
            delta = self.net(down(rendered), down(reference), down(mask), motion)
            delta = F.interpolate(delta, size=(s, s), mode="bilinear", align_corners=False)
        gate = self.window * mouth_gate(mask, float(getattr(self.net.config, "gate", 0.0)))
        return (rendered + gate * delta).clamp(0.0, 1.0)

    def refine(self, frames: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """frames [B, H, W, 3] uint8 (modified in place and returned), motion [B, DIM]."""
        motion = np.atleast_2d(np.asarray(motion, np.float32))
        corners, rendered, reference, mask = self.crops(frames, motion)
        out = self.correct(rendered, reference, mask, torch.from_numpy(motion).to(self.device))
        out_u8 = (out * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        s = self.geometry.side
        for f, (x, y), crop in zip(frames, corners, out_u8):
            f[y:y + s, x:x + s] = crop
        return frames


def refiner_runner_for(config, device: str | torch.device = "cpu"):
    """The shipped (or `config.refiner_model`) refiner, loaded once: on the CPU behind the backend
    `config.refiner_backend` picks (engine.backends.runners), on a GPU the network itself. `config`: the
    renderer's (engine.render.renderer.RendererConfig)."""
    from engine import paths
    from engine.backends.runners import refiner_runner
    from engine.models.loading import load_refiner

    net = load_refiner(config.refiner_model or paths.refiner_dir(), str(device))
    return refiner_runner(net, config.refiner_backend) if str(device) == "cpu" else net
