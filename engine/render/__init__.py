"""Rendering: (portrait, motion) -> frames. `renderer` warps; the refiner (later) repairs pixels."""
