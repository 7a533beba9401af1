"""MP4 writer (PyAV): H.264 video + AAC audio, same length, readable by any player."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)


class RecorderError(OSError):
    """Writing the video failed (disk full, no permission, ...); the message says where and why."""


class Mp4Writer:
    """Write RGB frames and mono float audio to an MP4. Use as a context manager."""

    def __init__(self, path: Path | str, size: tuple[int, int], fps: int, sample_rate: int,
                 crf: int = 20, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.fps = fps
        self.sample_rate = sample_rate
        self.frames_written = 0
        self.samples_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        except (OSError, av.error.FFmpegError) as exc:
            raise RecorderError(f"Cannot create {self.path}: {exc}") from exc
        w, h = size
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height = w - w % 2, h - h % 2
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset}
        self._audio = self._container.add_stream("aac", rate=sample_rate)
        self._audio.layout = "mono"
        self._audio.time_base = Fraction(1, sample_rate)

    def write_video(self, frame: np.ndarray) -> None:
        """One RGB uint8 frame [H, W, 3]."""
        h, w = self._video.height, self._video.width
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = Fraction(1, self.fps)
        self._mux(self._video.encode(vf))
        self.frames_written += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Mono float32 samples in [-1, 1] at `sample_rate`."""
        if not len(samples):
            return
        data = np.clip(samples, -1.0, 1.0).astype(np.float32)[None, :]
        af = av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self.samples_written
        af.time_base = Fraction(1, self.sample_rate)
        self._mux(self._audio.encode(af))
        self.samples_written += len(samples)

    def _mux(self, packets) -> None:
        try:
            for pkt in packets:
                self._container.mux(pkt)
        except (OSError, av.error.FFmpegError) as exc:
            raise RecorderError(f"Writing {self.path} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._mux(self._video.encode())
            self._mux(self._audio.encode())
        finally:
            self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
