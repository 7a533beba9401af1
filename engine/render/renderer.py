"""Renderer: (framed portrait, motion latent) -> RGB frames, by a dense warp of the face region.

Per portrait, `AvatarRig` precomputes (numpy, once):
- the face region (a box around the face in the output frame; outside it nothing moves),
- a flow basis [DIM, 2, gh, gw]: the displacement of every flow-grid point for a unit of each
  motion dimension, interpolated (barycentric, Delaunay) from the landmarks' blendshape basis,
  a ring of head points that move rigidly with the head, and the region border (fixed);
- its spatial Jacobian basis [DIM, 4, gh, gw], used to invert the forward map exactly;
- the inner-mouth polygon and its basis, and the portrait's own mouth-opening mask.

Per frame, `Renderer` (a pure nn.Module of tensors in, tensors out; exportable to ONNX):
1. flow d = basis . motion on the grid (one small matmul);
2. backward map: solve s + d(s) = p for every grid point p with Newton steps (warps that
   compress, like a closing eyelid, stay exact where a first-order p - d(p) would smear);
3. upsample the sampling offsets to the region's pixels and `grid_sample` the portrait;
4. paint a mouth interior (cavity, upper and lower teeth) where the lips have parted further
   than in the portrait (the refiner later replaces this with learned pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.spatial import Delaunay
from torch import nn

from engine import motion as M
from engine.backends import RefinerBackendName
from engine.face import FramedPortrait
from engine.face import topology as T
from engine.limits import Range


@dataclass
class RendererConfig:
    """Renderer settings."""

    size: tuple[int, int] = (512, 512)
    """Output frame width and height in pixels (up to 1920x1080)."""
    max_upscale: Annotated[float, Range(0.0, 8.0)] = 1.35
    """The portrait is enlarged at most this much to fill the frame: a small face is framed wider (more of its
    photo around it) rather than blown up past its detail into a soft picture. 0: no limit (the face always
    fills the same share of the frame); values under 1 count as 1 (never enlarged)."""
    grid: Annotated[int, Range(16, 512)] = 128
    """Flow-grid points along the face region's longer side."""
    region_scale: Annotated[float, Range(1.0, 4.0)] = 2.0
    """Face region side relative to the face's size (forehead-to-chin)."""
    newton_steps: Annotated[int, Range(0, 10)] = 3
    """Newton iterations that invert the warp."""
    smooth: Annotated[float, Range(0, 8)] = 0.8
    """Gaussian blur of the flow basis, in grid cells."""
    mouth_interior: bool = True
    """Paint cavity and teeth where the mouth opens wider than in the portrait, and eyelid skin
    where closing lids cover the eyes (off: the plain warp, for comparison)."""
    refiner: bool = False
    """Pass the mouth through the decoder refiner (`engine.render.refiner`). Off by default: the retrained
    refiner darkens the structured mouth's teeth and lowers its detail on held-out portraits (docs/mouth.md),
    so the renderer's own output is what looks most real today; --refiner turns it on, for comparison."""
    refiner_model: Path | None = None
    """Refiner folder (default: the shipped one, assets/models/refiner)."""
    refiner_backend: RefinerBackendName = "auto"
    """Run the refiner with torch or onnxruntime (auto: onnxruntime when installed, else torch)."""


class Renderer(nn.Module):
    """Warps a portrait region by a motion vector. The avatar rig's data comes in as tensors."""

    def __init__(self, config: RendererConfig | None = None) -> None:
        super().__init__()
        self.config = config or RendererConfig()

    def forward(
        self,
        src: torch.Tensor,  # [1, 3, Rh, Rw] portrait region, float 0..1
        flow_basis: torch.Tensor,  # [DIM, 2, gh, gw] pixels per unit motion
        jac_basis: torch.Tensor,  # [DIM, 4, gh, gw] d(flow)/d(position), per unit motion
        src_masks: torch.Tensor,  # [1, 2, Rh, Rw] inside the portrait's own mouth / eye openings
        mouth_px: torch.Tensor,  # [Hm, Wm, 2] region-pixel (x, y) of the box the mouth can reach
        mouth_ref: torch.Tensor,  # [Pm, 2] inner-lip polygon, region pixels
        mouth_basis: torch.Tensor,  # [Pm, 2, DIM]
        eye_px_l: torch.Tensor,  # [Hl, Wl, 2] box the subject's left eye can reach
        eye_px_r: torch.Tensor,  # [Hr, Wr, 2]
        eye_ref: torch.Tensor,  # [2, Pe, 2] eye-opening polygons (subject's left, right)
        eye_basis: torch.Tensor,  # [2, Pe, 2, DIM]
        colors: torch.Tensor,  # [N_COLORS, 3] mouth and eyelid colours, and the paint parameters (`Paint`)
        teeth_ref: torch.Tensor,  # [2, 3, 2] upper / lower teeth frame: centre, image-left end, image-right end
        teeth_basis: torch.Tensor,  # [2, 3, 2, DIM]
        mouth_grain: torch.Tensor,  # [Hm, Wm] the portrait's grain, for the painted pixels
        motion: torch.Tensor,  # [B, DIM]
    ) -> torch.Tensor:  # [B, 3, Rh, Rw]
        b = motion.shape[0]
        rh, rw = src.shape[-2], src.shape[-1]
        gh, gw = flow_basis.shape[-2], flow_basis.shape[-1]
        flow = torch.einsum("bm,mchw->bchw", motion, flow_basis)  # [B, 2, gh, gw]
        jac = torch.einsum("bm,mchw->bchw", motion, jac_basis)  # [B, 4, gh, gw]
        fields = torch.cat([flow, jac], dim=1)  # [B, 6, gh, gw]
        ys = torch.linspace(0.0, 1.0, gh, dtype=src.dtype, device=src.device) * (rh - 1)
        xs = torch.linspace(0.0, 1.0, gw, dtype=src.dtype, device=src.device) * (rw - 1)
        py, px = torch.meshgrid(ys, xs, indexing="ij")
        p = torch.stack([px, py], dim=0).unsqueeze(0)  # [1, 2, gh, gw] pixels
        scale = torch.tensor([rw - 1.0, rh - 1.0], dtype=src.dtype, device=src.device).view(1, 2, 1, 1)
        s = p - flow
        max_step = 0.5 * (rh + rw) / (gh + gw) * 4.0  # at most ~4 grid cells per step
        for _ in range(self.config.newton_steps):
            f = _sample(fields, s, scale)  # [B, 6, gh, gw]
            rx = s[:, 0] + f[:, 0] - p[:, 0]
            ry = s[:, 1] + f[:, 1] - p[:, 1]
            a, bb, c, d = 1.0 + f[:, 2], f[:, 3], f[:, 4], 1.0 + f[:, 5]
            det = a * d - bb * c
            det = torch.where(det.abs() < 0.05, torch.full_like(det, 0.05), det)
            dx = ((d * rx - bb * ry) / det).clamp(-max_step, max_step)
            dy = ((a * ry - c * rx) / det).clamp(-max_step, max_step)
            s = s - torch.stack([dx, dy], dim=1)
        # normalised sample positions are linear in the pixel grid, so upsampling them is exact
        grid = F.interpolate(s * 2.0 / scale - 1.0, size=(rh, rw), mode="bilinear", align_corners=True)
        grid = grid.permute(0, 2, 3, 1)  # [B, Rh, Rw, 2]
        out = F.grid_sample(src.expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                            align_corners=True)
        if not self.config.mouth_interior:
            return out
        flat = out.reshape(b, 3, rh * rw)
        grid_flat = grid.reshape(b, rh * rw, 2)
        masks = src_masks.expand(b, -1, -1, -1)
        # mouth: paint where the lips are parted now but the source pixel was not inside the mouth
        poly = mouth_ref.unsqueeze(0) + torch.einsum("pcm,bm->bpc", mouth_basis, motion)  # [B, Pm, 2]
        height = lambda q: q[..., 1].amax(-1) - q[..., 1].amin(-1)  # noqa: E731
        growth = (height(poly) - height(mouth_ref)).clamp(min=0.0).view(b, 1)  # px the mouth opened by
        ext = growth.clamp(max=1.0)  # grow the painted opening by up to 1 px: covers the stretched lip line
        own = colors[Paint.PARAMS, 2]  # 1 when the portrait shows its own teeth: its opening is always kept
        keep = own + (1.0 - own) * torch.exp(-growth / 2.0)  # else the portrait's own gap fades as it opens
        in_dst, d_up, d_lo = _inside_box(poly, mouth_px, ext)
        idx = _flat_index(mouth_px, rw)
        teeth = teeth_ref.unsqueeze(0) + torch.einsum("kpcm,bm->bkpc", teeth_basis, motion)  # [B, 2, 3, 2]
        paint = _mouth_interior(mouth_px.reshape(-1, 2), d_up, d_lo, teeth, colors, mouth_grain.reshape(1, 1, -1))
        flat = _composite(flat, idx, paint, (in_dst - keep * _at(masks, grid_flat, idx)[:, 0]).clamp(min=0.0))
        # eyes: paint eyelid skin where the source pixel was eyeball but the lids now cover it
        zero = torch.zeros(b, 1, dtype=src.dtype, device=src.device)
        for e, box in ((0, eye_px_l), (1, eye_px_r)):
            lids = eye_ref[e].unsqueeze(0) + torch.einsum("pcm,bm->bpc", eye_basis[e], motion)  # [B, Pe, 2]
            in_lid, d_up, _ = _inside_box(lids, box, zero)
            idx = _flat_index(box, rw)
            cover = (_at(masks, grid_flat, idx)[:, 1] - in_lid).clamp(min=0.0)
            lash = torch.exp(-0.5 * (d_up / 1.2) ** 2)  # dark line along the lid edge
            paint = colors[Paint.EYELID].view(1, 3, 1) * (0.92 - 0.55 * lash).unsqueeze(1)  # lids: a shade darker
            flat = _composite(flat, idx, paint, cover)
        return flat.reshape(b, 3, rh, rw)


def _sample(field: torch.Tensor, pos: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of field [B, C, gh, gw] at region-pixel positions pos [B, 2, gh, gw]."""
    g = (pos * 2.0 / scale - 1.0).permute(0, 2, 3, 1)
    return F.grid_sample(field, g, mode="bilinear", padding_mode="border", align_corners=True)


def _at(masks: torch.Tensor, grid_flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sample masks [B, C, Rh, Rw] where the pixels `index` take their colour from -> [B, C, K]."""
    g = grid_flat[:, index].unsqueeze(1)  # [B, 1, K, 2]
    return F.grid_sample(masks, g, mode="bilinear", padding_mode="zeros", align_corners=True)[:, :, 0]


def source_masks(mouth_ref: torch.Tensor, eye_ref: torch.Tensor, boxes: list[torch.Tensor],
                 rh: int, rw: int) -> torch.Tensor:
    """[1, 2, Rh, Rw]: the portrait's own mouth opening and eye openings, computed exactly as the
    renderer computes the current ones (so zero motion paints nothing)."""
    masks = torch.zeros(1, 2, rh * rw, dtype=mouth_ref.dtype)
    zero = torch.zeros(1, 1, dtype=mouth_ref.dtype)
    for channel, poly, box in ((0, mouth_ref, boxes[0]), (1, eye_ref[0], boxes[1]), (1, eye_ref[1], boxes[2])):
        alpha, _, _ = _inside_box(poly.unsqueeze(0), box, zero)
        idx = _flat_index(box, rw)
        masks[0, channel, idx] = torch.maximum(masks[0, channel, idx], alpha[0])
    return masks.reshape(1, 2, rh, rw)


def _flat_index(box: torch.Tensor, width: int) -> torch.Tensor:
    """Box pixel coordinates [H, W, 2] -> flat region indices [H * W]."""
    xy = box.reshape(-1, 2).round().to(torch.int64)
    return xy[:, 1] * width + xy[:, 0]


def _inside_box(poly: torch.Tensor, box: torch.Tensor, ext: torch.Tensor):
    """`_inside` over every pixel of a box [H, W, 2], evaluated on every other pixel and upsampled
    (signed distances are smooth, so this is 4x cheaper at the same sharpness) -> 3 x [B, H*W]."""
    h, w = box.shape[0], box.shape[1]
    half = box[::2, ::2]
    signed, d_up, d_lo = _inside(poly, half.reshape(1, -1, 2), ext)
    fields = torch.stack([signed, d_up, d_lo], dim=1).reshape(poly.shape[0], 3, half.shape[0], half.shape[1])
    fields = F.interpolate(fields, size=(h, w), mode="bilinear", align_corners=True).flatten(2)
    return torch.sigmoid(fields[:, 0] / 0.6), fields[:, 1], fields[:, 2]


def _composite(flat: torch.Tensor, index: torch.Tensor, paint: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Blend paint [B, 3, K] over flat [B, 3, N] at index [K] with alpha [B, K]."""
    idx = index.view(1, 1, -1).expand(flat.shape[0], 3, -1)
    vals = torch.gather(flat, 2, idx)
    return torch.scatter(flat, 2, idx, vals + alpha.unsqueeze(1) * (paint - vals))


def _inside(poly: torch.Tensor, pts: torch.Tensor, ext: torch.Tensor):
    """Signed distance of points to a closed polygon, and their distances to its two halves.

    poly: [B, P, 2], upper contour (P/2 + 1 points, corner to corner) then the lower one back;
    pts: [B or 1, K, 2]; ext: [B, 1] pixels by which to grow the polygon.
    Returns the signed distance [B, K] to the grown outline (> 0 inside) and the distances [B, K]
    to the upper and the lower contour.
    """
    n_poly = poly.shape[1]
    a = poly
    c = torch.roll(poly, shifts=-1, dims=1)
    px, py = pts[..., 0].unsqueeze(-1), pts[..., 1].unsqueeze(-1)  # [B, K, 1]
    ax, ay, cx, cy = a[..., 0].unsqueeze(1), a[..., 1].unsqueeze(1), c[..., 0].unsqueeze(1), c[..., 1].unsqueeze(1)
    straddle = (ay > py) != (cy > py)  # crossing-number parity
    denom = torch.where((cy - ay).abs() < 1e-6, torch.full_like(cy, 1e-6), cy - ay)
    x_cross = ax + (py - ay) * (cx - ax) / denom
    inside = torch.remainder((straddle & (px < x_cross)).to(pts.dtype).sum(-1), 2.0)  # [B, K]
    ex, ey = cx - ax, cy - ay
    t = (((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey + 1e-6)).clamp(0.0, 1.0)
    dist = torch.sqrt((px - ax - t * ex) ** 2 + (py - ay - t * ey) ** 2 + 1e-9)  # [B, K, P]
    n_up = n_poly // 2 + 1
    d_up = dist[..., : n_up - 1].amin(-1)
    d_lo = dist[..., n_up - 1:].amin(-1)
    edge = torch.minimum(d_up, d_lo)
    signed = torch.where(inside > 0.5, edge, -edge)
    return signed + ext, d_up, d_lo


class Paint:
    """Rows of the renderer's `colors` input."""

    CAVITY, TEETH, EYELID, GUM, TONGUE, WET, PARAMS = range(7)
    """The mouth's dark back, teeth, eyelid skin, gums, tongue, the wet inside of the lips (colours, 0..1),
    and the paint parameters: edge softness in pixels, unused, 1 when the portrait shows its own teeth."""
    COUNT = 7


# Teeth along the dental arch, seen from the front: the boundaries between neighbouring teeth as a share
# of the visible arch's half width (sine of the angle round the arch; central incisor, lateral incisor,
# canine and first premolar crown widths 8.5/6.5/7.5/7.0 mm upper, 5.4/5.9/6.9/7.0 mm lower).
_UPPER_WIDTHS = np.array([8.5, 6.5, 7.5, 7.0, 7.0])
_LOWER_WIDTHS = np.array([5.4, 5.9, 6.9, 7.0, 7.0])


def _gaps(widths: np.ndarray) -> tuple[float, ...]:
    s = np.cumsum(widths)[:-1] / widths.sum()
    g = np.sin(0.5 * np.pi * s)
    return (0.0, *g.tolist(), *(-g).tolist())


UPPER_GAPS, LOWER_GAPS = _gaps(_UPPER_WIDTHS), _gaps(_LOWER_WIDTHS)


def _arch(pts: torch.Tensor, pix: torch.Tensor):
    """Pixel coordinates in a teeth frame pts [B, 3, 2] (centre, image-left end, image-right end): a along
    the arch (-1..1 at its ends), b across it in pixels (+ = toward the chin), and the half width [B, 1]."""
    axis = pts[:, 2] - pts[:, 1]
    hw = 0.5 * torch.sqrt((axis ** 2).sum(-1, keepdim=True) + 1e-6)  # [B, 1]
    ux, uy = (axis[:, 0:1] / (2 * hw)), (axis[:, 1:2] / (2 * hw))
    rx = pix[:, 0].unsqueeze(0) - pts[:, 0, 0:1]
    ry = pix[:, 1].unsqueeze(0) - pts[:, 0, 1:2]
    return (rx * ux + ry * uy) / hw, ry * ux - rx * uy, hw


def _teeth_row(a, b, hw, gaps: tuple[float, ...], side: float, curve: float, crown: float, soft):
    """One row of teeth in its frame: coverage (1 on a tooth or its gum), crown (1 on the tooth, 0 on the
    gum), the dark line between teeth, and the distance from the biting edge in pixels. side = +1 for the
    upper row (teeth above the edge), -1 for the lower."""
    bounds = torch.tensor(gaps, dtype=a.dtype, device=a.device)
    d = (a.unsqueeze(-1) - bounds).abs().amin(-1) * hw  # pixels to the nearest gap between teeth
    r = 0.07 * hw
    notch = r * torch.exp(-((d / r) ** 2))  # rounded corners: the edge recedes at each gap
    edge = -side * curve * hw * a * a  # the biting edge curves toward the gums at the sides
    depth = side * (edge - b) - notch  # > 0 on the tooth side of the edge
    cover = torch.sigmoid(depth / soft) * torch.sigmoid((1.0 - a.abs()) * hw / soft)
    on_crown = torch.sigmoid((crown * hw - depth) / soft)
    line = torch.exp(-((d / (0.35 + 0.008 * hw)) ** 2)) * torch.sigmoid(depth / soft)
    return cover, on_crown, line, depth


def _mouth_interior(pix: torch.Tensor, d_up: torch.Tensor, d_lo: torch.Tensor, teeth: torch.Tensor,
                    colors: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
    """The inside of an open mouth at pixels pix [K, 2] -> [B, 3, K].

    Back to front: the dark cavity (lighter and wetter toward the lips), the tongue (on the jaw, darker
    toward the back), the lower teeth and gums (on the jaw), the upper teeth and gums (fixed to the skull),
    then the upper lip's shadow and the portrait's grain. The lips are drawn over all of it by the caller's
    mask: they only cover or reveal."""
    col = lambda i: colors[i].view(1, 3, 1)  # noqa: E731
    soft = colors[Paint.PARAMS, 0].clamp(min=0.3)
    au, bu, hw = _arch(teeth[:, 0], pix)
    al, bl, hwl = _arch(teeth[:, 1], pix)
    near = torch.exp(-torch.minimum(d_up, d_lo) / (0.08 * hw))
    out = col(Paint.CAVITY) + (col(Paint.WET) - col(Paint.CAVITY)) * (0.7 * near).unsqueeze(1)
    top = -0.35 * hwl + 0.7 * hwl * al * al  # the tongue's outline: it rises behind the lower teeth
    tongue = torch.sigmoid((bl - top) / (soft + 0.04 * hwl)) * torch.sigmoid((0.8 - al.abs()) * hwl / soft)
    shade = 0.7 + 0.3 * ((bl - top) / (0.25 * hwl)).clamp(0.0, 1.0)
    out = out + tongue.unsqueeze(1) * (col(Paint.TONGUE) * shade.unsqueeze(1) - out)
    for a, b, h, gaps, side, curve, crown, dim in ((al, bl, hwl, LOWER_GAPS, -1.0, 0.06, 0.30, 0.8),
                                                   (au, bu, hw, UPPER_GAPS, 1.0, 0.10, 0.48, 1.0)):
        cover, on_crown, line, depth = _teeth_row(a, b, h, gaps, side, curve, crown, soft)
        light = dim * (1.0 - 0.55 * a * a).clamp(min=0.2) * (1.0 - 0.3 * line) * (1.0 - 0.12 * torch.exp(-depth.clamp(min=0) / (0.05 * h)))
        tooth = col(Paint.TEETH) * light.unsqueeze(1)
        paint = col(Paint.GUM) * (dim * (1.0 - 0.4 * a * a).clamp(min=0.2)).unsqueeze(1)
        paint = paint + on_crown.unsqueeze(1) * (tooth - paint)
        out = out + cover.unsqueeze(1) * (paint - out)
    shadow = 1.0 - 0.25 * torch.exp(-d_up / (0.05 * hw))  # under the upper lip
    return out * shadow.unsqueeze(1) + grain


@dataclass
class AvatarRig:
    """Per-portrait precomputation for the renderer (numpy arrays)."""

    frame: np.ndarray  # [H, W, 3] uint8 output-size portrait
    box: tuple[int, int, int, int]  # region x0, y0, x1, y1 in frame pixels
    flow_basis: np.ndarray  # [DIM, 2, gh, gw]
    jac_basis: np.ndarray  # [DIM, 4, gh, gw]
    mouth_box: tuple[int, int, int, int]  # x0, y0, x1, y1 in region pixels
    mouth_ref: np.ndarray  # [Pm, 2]
    mouth_basis: np.ndarray  # [Pm, 2, DIM]
    eye_boxes: tuple[tuple[int, int, int, int], tuple[int, int, int, int]]  # subject's left, right
    eye_ref: np.ndarray  # [2, Pe, 2]
    eye_basis: np.ndarray  # [2, Pe, 2, DIM]
    colors: np.ndarray  # [Paint.COUNT, 3]
    teeth_ref: np.ndarray  # [2, 3, 2] region pixels
    teeth_basis: np.ndarray  # [2, 3, 2, DIM]
    grain: np.ndarray  # [Hm, Wm] the portrait's grain over the mouth box (0..1 units)
    basis: M.MotionBasis

    @classmethod
    def build(cls, framed: FramedPortrait, config: RendererConfig) -> AvatarRig:
        frame, lm = framed.frame, framed.landmarks
        h, w = frame.shape[:2]
        basis = M.MotionBasis(lm)
        oval = lm[list(T.FACE_OVAL), :2]
        face = max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1]))
        cx, cy = oval[:, 0].mean(), oval[:, 1].mean() - 0.1 * face
        half = config.region_scale * face / 2
        x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
        x1, y1 = int(min(w, np.ceil(cx + half))), int(min(h, np.ceil(cy + half)))
        rh, rw = y1 - y0, x1 - x0
        gh = max(8, round(config.grid * rh / max(rh, rw)))
        gw = max(8, round(config.grid * rw / max(rh, rw)))
        origin = np.array([x0, y0], np.float32)

        # control points: landmarks, a rigid head ring, and the fixed region border
        pts = [lm[:, :2] - origin]
        bases = [basis.basis[:, :2, :]]
        ang = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        rx, ry = 0.5 * np.ptp(oval[:, 0]) * 1.22, 0.5 * np.ptp(oval[:, 1]) * 1.18
        ocx, ocy = oval[:, 0].mean(), oval[:, 1].mean()
        ring = np.stack([ocx + rx * np.cos(ang), ocy + ry * np.sin(ang) - 0.08 * ry * (np.sin(ang) < 0)], 1)
        ring[:, 0] = np.clip(ring[:, 0], x0 + 0.06 * rw, x1 - 1 - 0.06 * rw)
        ring[:, 1] = np.clip(ring[:, 1], y0 + 0.06 * rh, y1 - 1 - 0.06 * rh)
        ring3 = np.concatenate([ring, np.full((len(ring), 1), basis.pivot_local[2] * basis.frame.scale
                                              + basis.frame.origin[2])], 1)
        pts.append(ring - origin)
        bases.append(basis.pose_basis_for(ring3)[:, :2, :])
        k = 10
        edge_x = np.linspace(0, rw - 1, k)
        edge_y = np.linspace(0, rh - 1, k)
        border = np.concatenate([np.stack([edge_x, np.zeros(k)], 1), np.stack([edge_x, np.full(k, rh - 1)], 1),
                                 np.stack([np.zeros(k), edge_y], 1), np.stack([np.full(k, rw - 1), edge_y], 1)])
        pts.append(border)
        bases.append(np.zeros((len(border), 2, M.DIM), np.float32))
        ctrl = np.concatenate(pts).astype(np.float64)
        ctrl_basis = np.concatenate(bases).astype(np.float64)  # [N, 2, DIM]

        gy, gx = np.meshgrid(np.linspace(0, rh - 1, gh), np.linspace(0, rw - 1, gw), indexing="ij")
        grid_pts = np.stack([gx.ravel(), gy.ravel()], 1)
        tri = Delaunay(ctrl)
        simplex = tri.find_simplex(grid_pts)
        simplex = np.where(simplex < 0, 0, simplex)
        trans = tri.transform[simplex]  # [G, 3, 2]
        bary2 = np.einsum("gij,gj->gi", trans[:, :2], grid_pts - trans[:, 2])
        bary = np.concatenate([bary2, 1 - bary2.sum(1, keepdims=True)], 1)  # [G, 3]
        verts = tri.simplices[simplex]  # [G, 3]
        flow = np.einsum("gk,gkcm->mcg", bary, ctrl_basis[verts]).reshape(M.DIM, 2, gh, gw)
        # a light blur makes the piecewise-linear field (and its Jacobian) continuous
        flow = gaussian_filter(flow, sigma=(0, 0, config.smooth, config.smooth), mode="nearest")
        step_y, step_x = (rh - 1) / (gh - 1), (rw - 1) / (gw - 1)
        dfx_dy, dfx_dx = np.gradient(flow[:, 0], step_y, step_x, axis=(1, 2))
        dfy_dy, dfy_dx = np.gradient(flow[:, 1], step_y, step_x, axis=(1, 2))
        jac = np.stack([dfx_dx, dfx_dy, dfy_dx, dfy_dy], axis=1)

        poly_idx = list(T.inner_mouth_polygon())
        mouth_ref = lm[poly_idx, :2] - origin
        mouth_basis = basis.basis[poly_idx, :2, :]
        reach = basis.landmarks(_extremes())[..., :2] - origin  # [n_extremes, 478, 2]
        mouth_box = _reach(reach, poly_idx, rh, rw, margin=2.0)
        eye_idx = [list(T.eye_polygon("L")), list(T.eye_polygon("R"))]
        eye_ref = np.stack([lm[i, :2] - origin for i in eye_idx])
        eye_basis = np.stack([basis.basis[i, :2, :] for i in eye_idx])
        eye_boxes = (_reach(reach, eye_idx[0], rh, rw, margin=2.0),
                     _reach(reach, eye_idx[1], rh, rw, margin=2.0))
        upscale = _upscale(framed)
        colors = _feature_colors(frame, lm, upscale)
        teeth_ref, teeth_basis = _teeth_frames(lm, basis)
        mx0, my0, mx1, my1 = mouth_box
        grain = _grain(frame, lm, (my1 - my0, mx1 - mx0), upscale)
        return cls(frame=frame, box=(x0, y0, x1, y1), flow_basis=flow.astype(np.float32),
                   jac_basis=jac.astype(np.float32), mouth_box=mouth_box, mouth_ref=mouth_ref.astype(np.float32),
                   mouth_basis=mouth_basis.astype(np.float32), eye_boxes=eye_boxes,
                   eye_ref=eye_ref.astype(np.float32), eye_basis=eye_basis.astype(np.float32), colors=colors,
                   teeth_ref=(teeth_ref - origin).astype(np.float32), teeth_basis=teeth_basis, grain=grain, basis=basis)

    def tensors(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        x0, y0, x1, y1 = self.box
        src = torch.from_numpy(np.ascontiguousarray(self.frame[y0:y1, x0:x1])).permute(2, 0, 1)[None]
        arrays = {"flow_basis": self.flow_basis, "jac_basis": self.jac_basis, "mouth_ref": self.mouth_ref,
                  "mouth_basis": self.mouth_basis, "eye_ref": self.eye_ref, "eye_basis": self.eye_basis,
                  "colors": self.colors, "teeth_ref": self.teeth_ref, "teeth_basis": self.teeth_basis,
                  "mouth_grain": self.grain}
        out = {"src": (src.to(dtype) / 255.0).to(device)}
        out.update({k: torch.from_numpy(v).to(device=device, dtype=dtype) for k, v in arrays.items()})
        boxes = [_box_pixels(bx, dtype) for bx in (self.mouth_box, *self.eye_boxes)]
        out["src_masks"] = source_masks(torch.from_numpy(self.mouth_ref).to(dtype),
                                        torch.from_numpy(self.eye_ref).to(dtype), boxes, y1 - y0, x1 - x0).to(device)
        out["mouth_px"], out["eye_px_l"], out["eye_px_r"] = (bx.to(device) for bx in boxes)
        return out


def _extremes() -> np.ndarray:
    """Motion vectors at the corners of what moves a facial feature: each expression at 1 and each
    pose dimension at its limits, alone and combined with a wide-open mouth."""
    out = [M.zeros()]
    for i in range(len(M.EXPRESSIONS)):
        m = M.zeros()
        m[i] = 1.0
        out.append(m)
    wide = M.zeros()
    for name in ("jawOpen", "mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R"):
        wide[M.index(name)] = 1.0
    out.append(wide)
    for name in M.POSE:
        for lim in M.RANGES[M.index(name)]:
            for base in (M.zeros(), wide):
                m = base.copy()
                m[M.index(name)] = lim
                out.append(m)
    return np.stack(out)


def _box_pixels(box: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
    x0, y0, x1, y1 = box
    ys, xs = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
    return torch.stack([xs, ys], dim=-1).to(dtype)


def _reach(reach: np.ndarray, idx: list[int], rh: int, rw: int, margin: float) -> tuple[int, int, int, int]:
    """The box (odd width and height, for exact 2x subsampling) that landmarks `idx` can reach,
    given their region-pixel positions at the motion extremes `reach` [n, 478, 2]."""
    pts = reach[:, idx].reshape(-1, 2)
    x0, y0 = np.floor(pts.min(0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(0) + margin).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(rw, x1), min(rh, y1)
    if (x1 - x0) % 2 == 0:
        x1, x0 = (x1 + 1, x0) if x1 < rw else (x1, x0 + 1)
    if (y1 - y0) % 2 == 0:
        y1, y0 = (y1 + 1, y0) if y1 < rh else (y1, y0 + 1)
    return int(x0), int(y0), int(x1), int(y1)


# Inside a real open mouth, relative to the cheek's colour (per channel, sRGB), measured on the open-mouth
# frames of the real training speakers (docs/mouth.md): teeth are 1.12x the skin's luminance (their hue
# varies with each video's white balance, so they get an ivory white), the back of the mouth is dark and
# reddish brown, the wet inside of the lips and the tongue a darker, redder skin tone. SKIN_CHROMA is those cheeks' median
# saturation ((max - min) / max).
TEETH_LUMA = 1.12
IVORY = np.array([1.0, 0.97, 0.89], np.float32)
CAVITY_RATIO = np.array([0.30, 0.18, 0.22], np.float32)
WET_RATIO = np.array([0.62, 0.45, 0.46], np.float32)
TONGUE_RATIO = np.array([0.80, 0.50, 0.50], np.float32)
SKIN_CHROMA = 0.44


def _cheek_mask(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """[H, W] bool: two discs (0.13 interocular distances) on the cheeks below the eyes, beside the nose."""
    import cv2

    d = float(np.linalg.norm(lm[468, :2] - lm[473, :2]))
    mask = np.zeros(shape, np.uint8)
    for i in (205, 425):
        cv2.circle(mask, (int(round(lm[i, 0])), int(round(lm[i, 1]))), max(1, int(round(0.13 * d))), 1, -1)
    return mask.astype(bool)


def _cheek_skin(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Median cheek colour (0..1) below the eyes, beside the nose."""
    px = frame[_cheek_mask(frame.shape[:2], lm)].astype(np.float32) / 255.0
    return np.median(px, axis=0) if len(px) else np.array([0.75, 0.6, 0.5], np.float32)


def _own_teeth(frame: np.ndarray, lm: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """The portrait's own teeth colour (0..1) when its open mouth shows at least 30 teeth pixels."""
    import cv2

    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[list(T.inner_mouth_polygon()), :2]).astype(np.int32)], 1)
    px = frame[mask.astype(bool)].astype(np.float32) / 255.0
    if len(px) < 30:
        return None
    lum = px @ np.array([0.299, 0.587, 0.114], np.float32)
    teeth = px[(lum >= 0.45 * float(skin @ np.array([0.299, 0.587, 0.114]))) & (np.ptp(px, axis=1) <= 0.3 * lum + 0.025)]
    if len(teeth) < 30:
        return None
    t_lum = teeth @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.median(teeth[t_lum >= np.median(t_lum)], axis=0)  # the lit half: the shade is painted


def _feature_colors(frame: np.ndarray, lm: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """The mouth's colours matched to the portrait: real mouths' colours relative to the skin, applied to
    this portrait's skin, and only as saturated as the portrait is (a black-and-white photo gets grey teeth,
    a sepia painting sepia ones); its own teeth where it shows them. Plus the eyelid skin and the paint
    parameters (`Paint`)."""
    import cv2

    skin = _cheek_skin(frame, lm)
    chroma = float(np.ptp(skin) / max(skin.max(), 1e-3))
    colourful = float(np.clip(chroma / SKIN_CHROMA, 0.0, 1.0))
    grey = lambda c: float(c @ np.array([0.299, 0.587, 0.114]))  # noqa: E731
    toned = lambda c: np.clip(grey(c) + colourful * (c - grey(c)), 0.0, 1.0)  # noqa: E731
    lips = np.zeros(frame.shape[:2], np.uint8)
    outer = T.LIPS_OUTER_UPPER + tuple(reversed(T.LIPS_OUTER_LOWER[1:-1]))
    cv2.fillPoly(lips, [np.round(lm[list(outer), :2]).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(lm[list(T.inner_mouth_polygon()), :2]).astype(np.int32)], 0)
    px = frame[lips.astype(bool)].astype(np.float32) / 255.0
    lip = px.mean(0) if len(px) else skin * np.array([1.0, 0.8, 0.8], np.float32)
    own = _own_teeth(frame, lm, skin)
    teeth = own if own is not None else toned(np.minimum(TEETH_LUMA * grey(skin) * IVORY / grey(IVORY), 0.92))
    cavity = toned(skin * CAVITY_RATIO)
    wet = toned(skin * WET_RATIO)
    tongue = toned(skin * TONGUE_RATIO)
    gum = toned(lip * np.array([1.0, 0.78, 0.80], np.float32))
    # eyelid: the skin between the upper lid and the brow, just above the eye
    lid_xy = []
    for upper, brow in ((T.EYE_L_UPPER, T.BROW_L_LOWER), (T.EYE_R_UPPER, T.BROW_R_LOWER)):
        for u in upper[2:-2]:
            b = lm[brow, :2][np.argmin(np.abs(lm[brow, 0] - lm[u, 0]))]
            for t in (0.3, 0.45):
                lid_xy.append(lm[u, :2] * (1 - t) + b * t)
    lid_pts = np.round(np.array(lid_xy)).astype(int)
    h, w = frame.shape[:2]
    lid_pts[:, 0] = np.clip(lid_pts[:, 0], 0, w - 1)
    lid_pts[:, 1] = np.clip(lid_pts[:, 1], 0, h - 1)
    lid = np.median(frame[lid_pts[:, 1], lid_pts[:, 0]].astype(np.float32) / 255.0, axis=0)
    params = np.array([0.6 * max(1.0, upscale), 0.0, 1.0 if own is not None else 0.0], np.float32)
    rows = {Paint.CAVITY: cavity, Paint.TEETH: teeth, Paint.EYELID: lid, Paint.GUM: gum, Paint.TONGUE: tongue,
            Paint.WET: wet, Paint.PARAMS: params}
    return np.stack([rows[i] for i in range(Paint.COUNT)]).astype(np.float32)


def _upscale(framed: FramedPortrait) -> float:
    """How much the framing enlarged the portrait's face (1 when it was shrunk or kept): painted edges are
    made as soft as the enlarged photo's."""
    src, dst = framed.portrait.landmarks, framed.landmarks
    a = float(np.linalg.norm(src[468, :2] - src[473, :2]))
    b = float(np.linalg.norm(dst[468, :2] - dst[473, :2]))
    return max(1.0, b / max(a, 1e-6))


def _grain(frame: np.ndarray, lm: np.ndarray, shape: tuple[int, int], upscale: float) -> np.ndarray:
    """A fixed grain image [H, W] (0..1 units) with the portrait's own noise level and grain size, measured
    on the cheeks: painted pixels get the same texture as the photo around them (fixed: no flicker)."""
    import cv2

    grey = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    resid = grey - cv2.GaussianBlur(grey, (0, 0), 1.0)
    r = resid[_cheek_mask(frame.shape[:2], lm)]
    level = float(1.4826 * np.median(np.abs(r - np.median(r)))) if len(r) else 0.0
    noise = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if upscale > 1.0:
        noise = cast(np.ndarray, cv2.GaussianBlur(noise, (0, 0), 0.5 * upscale))  # float32 in, float32 out
        noise /= max(float(noise.std()), 1e-6)
    return (min(level, 0.05) * noise).astype(np.float32)


def _teeth_frames(lm: np.ndarray, basis: M.MotionBasis) -> tuple[np.ndarray, np.ndarray]:
    """The upper and lower rows of teeth as frames (centre, image-left end, image-right end; frame pixels)
    and their motion basis [2, 3, 2, DIM]. The upper row moves with the head only (it is fixed to the
    skull); the lower row with the head and the jaw (0.85 of the lower lip's drop: the teeth sit nearer the
    jaw's hinge). At rest the upper biting edge is 0.07 interocular distances below the upper lip, and the
    lower edge just behind it."""
    d = float(np.linalg.norm(lm[468, :2] - lm[473, :2]))
    ic_r, ic_l = lm[T.INNER_CORNER_R, :2], lm[T.INNER_CORNER_L, :2]
    u = (ic_l - ic_r) / max(float(np.linalg.norm(ic_l - ic_r)), 1e-6)
    v = np.array([-u[1], u[0]])  # toward the chin
    half = float(np.clip(0.45 * np.linalg.norm(ic_l - ic_r), 0.26 * d, 0.40 * d))
    centre_u = lm[13, :2] + 0.07 * d * v
    centre_l = centre_u - 0.025 * d * v
    rows = np.stack([np.stack([centre_u, centre_u - half * u, centre_u + half * u]),
                     np.stack([centre_l, centre_l - 0.86 * half * u, centre_l + 0.86 * half * u])])  # [2, 3, 2]
    z = np.full((3, 1), lm[13, 2])
    bases = np.stack([basis.pose_basis_for(np.concatenate([rows[k], z], 1))[:, :2, :] for k in range(2)])
    jaw = M.index("jawOpen")
    bases[1, :, :, jaw] += 0.85 * basis.basis[14, :2, jaw]
    return rows.astype(np.float32), bases.astype(np.float32)


class FrameRenderer(Protocol):
    """What turns motion into frames for the pipeline (`engine.runtime.pipeline.Pipeline`): `AvatarRenderer`,
    or any stand-in with the same calls (a test's, a benchmark's)."""

    config: RendererConfig
    """Read for the output size (`config.size`)."""
    device: str | torch.device

    def render(self, motion: np.ndarray, refine: bool = True) -> np.ndarray:
        """motion [DIM] or [B, DIM] -> frames [B, H, W, 3] uint8."""
        ...


class AvatarRenderer:
    """Convenience: one rig + the renderer module (+ the refiner) -> full uint8 frames with paste-back."""

    def __init__(self, framed: FramedPortrait, config: RendererConfig | None = None,
                 device: str | torch.device = "cpu", refiner_runner=None) -> None:
        """`refiner_runner`: the refiner network or a backend over it, built once by the caller for every
        portrait (`engine.render.refiner.refiner_runner_for`); without it a renderer with `config.refiner`
        builds its own."""
        self.config = config or RendererConfig()
        self.rig = AvatarRig.build(framed, self.config)
        self.module = Renderer(self.config).to(device).eval()
        self.inputs = self.rig.tensors(device)
        self.device = device
        self.refiner = None
        if self.config.refiner:
            from engine.render.refiner import FrameRefiner, refiner_runner_for

            runner = refiner_runner if refiner_runner is not None else refiner_runner_for(self.config, device)
            self.refiner = FrameRefiner(runner, self.rig.frame, framed.landmarks, self.rig.basis, device=device)

    @torch.inference_mode()
    def render_region(self, motion: np.ndarray) -> torch.Tensor:
        m = torch.as_tensor(np.atleast_2d(motion), dtype=torch.float32, device=self.device)
        return self.module(**self.inputs, motion=m)

    def render(self, motion: np.ndarray, refine: bool = True) -> np.ndarray:
        """motion [DIM] or [B, DIM] -> frames [B, H, W, 3] uint8 (refined unless `refine` is False or the
        renderer has no refiner)."""
        region = self.render_region(motion)
        region_u8 = (region.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        x0, y0, x1, y1 = self.rig.box
        frames = np.repeat(self.rig.frame[None], len(region_u8), axis=0)
        frames[:, y0:y1, x0:x1] = region_u8
        if refine and self.refiner is not None:
            self.refiner.refine(frames, np.atleast_2d(motion))
        return frames

    def landmarks(self, motion: np.ndarray) -> np.ndarray:
        """Where the renderer puts the 478 landmarks for this motion (frame pixels)."""
        return self.rig.basis.landmarks(motion)
