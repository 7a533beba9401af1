"""Portrait -> Avatar: image loading, face landmarks, framing, masks, on-disk cache."""

from engine.face.avatar import Avatar, FramedAvatar, PortraitError, frame_avatar, prepare_avatar

__all__ = ["Avatar", "FramedAvatar", "PortraitError", "frame_avatar", "prepare_avatar"]
