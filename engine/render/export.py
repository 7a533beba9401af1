"""ONNX export of the renderer (the warp and the painted mouth and eyes as one graph)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from engine.render.renderer import AvatarRenderer

log = logging.getLogger(__name__)

RENDERER_INPUTS = ("src", "flow_basis", "jac_basis", "src_masks", "mouth_px", "mouth_ref", "mouth_basis",
                   "eye_px_l", "eye_px_r", "eye_ref", "eye_basis", "colors", "teeth_ref", "teeth_basis",
                   "mouth_grain", "motion")


def export_renderer(renderer: AvatarRenderer, path: Path, batch: int = 1) -> Path:
    """Write the renderer as one ONNX file. The avatar rig's data are graph inputs, so one file serves any
    portrait whose region and flow-grid sizes match (those sizes are fixed in the graph)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    motion = torch.zeros(batch, renderer.rig.flow_basis.shape[0])
    args = tuple(renderer.inputs[k] for k in RENDERER_INPUTS[:-1]) + (motion,)
    program = torch.onnx.export(renderer.module.eval(), args, input_names=list(RENDERER_INPUTS),
                                output_names=["region"], dynamo=True, external_data=False,
                                verbose=False)
    if program is None:  # the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no ONNX program for the renderer")
    program.save(str(path))
    log.info("Renderer exported to %s", path)
    return path
