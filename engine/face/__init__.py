"""The portrait's face: image loading, face landmarks (`Portrait`), framing (`FramedPortrait`), face shape, masks,
on-disk cache."""

from engine.face.portrait import FramedPortrait, Portrait, PortraitError, frame_portrait, load_portrait

__all__ = ["Portrait", "FramedPortrait", "PortraitError", "frame_portrait", "load_portrait"]
