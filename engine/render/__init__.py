"""Rendering: (portrait, motion) -> frames. `avatar` is the one factory from a portrait file to an avatar
(framed, with its renderer); `renderer` warps the portrait and paints the mouth and eyes; `refiner` repairs
the mouth with the decoder refiner; `export` writes the renderer as ONNX."""
