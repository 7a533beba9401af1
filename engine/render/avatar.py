"""Portrait file -> avatar: the one factory every caller uses (live, render, say, the benchmarks, the
evaluations, training's refiner data and checks).

`prepare_portrait` finds the face (`engine.face.load_portrait`: landmarks, checks, on-disk cache) and frames it
at the output size, never enlarging the photo past `RendererConfig.max_upscale` (a `FramedPortrait`: the frame,
its landmarks and the face shape the student is told); `build_avatar` adds the renderer, with the refiner
runner the caller built once for all portraits. The motion stream (`engine.runtime.stream.StudentStream`)
takes the avatar's `shape`; the live engine (`engine.runtime.live.AvatarEngine`) pairs the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.face import FramedPortrait, frame_portrait, load_portrait
from engine.face.landmarks import FaceLandmarker
from engine.render.renderer import AvatarRenderer, RendererConfig


@dataclass
class Avatar:
    """A portrait ready to animate: framed for output, with its renderer (and refiner)."""

    framed: FramedPortrait
    renderer: AvatarRenderer

    @property
    def path(self) -> Path:
        return self.framed.path

    @property
    def shape(self) -> np.ndarray:
        """The face shape the student is told."""
        return self.framed.shape


def prepare_portrait(portrait: Path | str, size: tuple[int, int] = RendererConfig.size,
                     max_upscale: float = RendererConfig.max_upscale, *, cache_dir: Path | None = None,
                     require_skin: bool = True, landmarker: FaceLandmarker | None = None) -> FramedPortrait:
    """Find the face in `portrait` (PortraitError with the reason when there is no usable one) and frame it
    for output `size` (w, h)."""
    face = load_portrait(portrait, cache_dir=cache_dir, landmarker=landmarker, require_skin=require_skin)
    return frame_portrait(face, size, max_upscale=max_upscale)


def build_avatar(portrait: Path | str | FramedPortrait, render: RendererConfig | None = None, *,
                 device: str | torch.device = "cpu", refiner_runner=None, cache_dir: Path | None = None,
                 require_skin: bool = True, landmarker: FaceLandmarker | None = None) -> Avatar:
    """`prepare_portrait` (unless given its result) + the renderer for `render` on `device`. `refiner_runner`:
    the refiner network or a backend over it, built once for every portrait
    (`engine.render.refiner.refiner_runner_for`); without it a renderer with `render.refiner` builds its own.
    A framed portrait given must be framed at `render.size` (its framing, `max_upscale` included, is kept)."""
    render = render or RendererConfig()
    if isinstance(portrait, FramedPortrait):
        framed = portrait
        h, w = framed.frame.shape[:2]
        if (w, h) != tuple(render.size):
            raise ValueError(f"the portrait is framed at {w}x{h} but the renderer is set to {render.size[0]}x"
                             f"{render.size[1]}: frame it at the renderer's size")
    else:
        framed = prepare_portrait(portrait, render.size, render.max_upscale, cache_dir=cache_dir,
                                  require_skin=require_skin, landmarker=landmarker)
    return Avatar(framed, AvatarRenderer(framed, render, device, refiner_runner))
