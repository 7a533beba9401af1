"""Rendering: (portrait, motion) -> frames. `renderer` warps the portrait and paints the mouth and eyes;
`refiner` repairs the mouth with the decoder refiner; `export` writes the renderer as ONNX."""
