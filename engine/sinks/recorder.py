"""MP4 recording (PyAV): H.264 video + AAC audio, same length, readable by any player.

`Mp4Writer` writes a file; `RecorderSink` is the pipeline's recorder: it writes on its own thread, keeps
audio and video on one clock, and writes a fragmented MP4 (a self-contained fragment every second),
so a crash, a kill or a full disk leaves a file that plays up to its last second.
"""

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
                 crf: int = 20, preset: str = "veryfast", fragmented: bool = False) -> None:
        self.path = Path(path)
        self.fps = fps
        self.sample_rate = sample_rate
        self.frames_written = 0
        self.samples_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # fragmented: moov first, then one self-contained fragment per keyframe (one a second): what was
            # written before a crash or a full disk stays playable
            flags = "frag_keyframe+empty_moov+default_base_moof" if fragmented else "+faststart"
            self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": flags})
        except (OSError, av.error.FFmpegError) as exc:
            raise RecorderError(f"Cannot create {self.path}: {exc}") from exc
        w, h = size
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height = w - w % 2, h - h % 2
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset, **({"tune": "zerolatency"} if fragmented else {})}
        self._video.codec_context.gop_size = fps
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
            raise RecorderError(f"Writing {self.path} failed ({_why(exc)}); what was recorded before stays "
                                "playable.") from exc

    def close(self) -> None:
        try:
            self._mux(self._video.encode())
            self._mux(self._audio.encode())
        finally:
            try:
                self._container.close()
            except (OSError, av.error.FFmpegError) as exc:
                raise RecorderError(f"Finishing {self.path} failed: {exc}") from exc

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    text = str(exc)
    if any(k in text for k in ("No space", "ENOSPC", "File too large", "EFBIG", "Disk quota")):
        return f"the disk is full: {text}"
    return text


class RecorderSink:
    """The pipeline's recorder. Frames and captured audio go through a queue to a writer thread.

    A/V sync: both are on the audio clock. The first frame fixes the start; video frame i gets pts
    i - first, audio sample s gets pts s - first * piece; audio is written only up to the end of the
    newest frame, so the two streams end together. Frames the pipeline dropped are filled with the
    previous frame. Offline (`blocking`) a full queue makes the pipeline wait; live, frames are dropped
    (and filled) rather than stall the renderer. A write error (disk full) stops the recording, keeps the
    file playable, and is kept in `error` (and passed to `on_error`).
    """

    name = "recorder"

    def __init__(self, path: Path | str, blocking: bool = False, queue_seconds: float = 4.0,
                 crf: int = 20, preset: str = "veryfast", on_error=None) -> None:
        self.path = Path(path)
        self.blocking = blocking
        self.queue_seconds = queue_seconds
        self.crf, self.preset = crf, preset
        self.on_error = on_error
        self.error: BaseException | None = None
        self.frames_written = 0
        self.frames_filled = 0
        self.frames_dropped = 0
        self._writer: Mp4Writer | None = None
        self._q = None
        self._thread = None

    def open(self, size: tuple[int, int], fps: int, sample_rate: int) -> None:
        import queue
        import threading

        self.fps, self.sample_rate = fps, sample_rate
        self.piece = sample_rate // fps
        self._writer = Mp4Writer(self.path, size, fps, sample_rate, self.crf, self.preset, fragmented=True)
        self._q = queue.Queue(maxsize=max(8, int(self.queue_seconds * fps * 2)))
        self._thread = threading.Thread(target=self._run, name="talkcam-recorder", daemon=True)
        self._thread.start()
        log.info("Recording to %s", self.path)

    def write_frame(self, frame) -> None:
        self._enqueue(("v", frame.index, frame.image))

    def write_audio(self, piece) -> None:
        self._enqueue(("a", piece.start, piece.samples))

    def _enqueue(self, item) -> None:
        import queue

        if self.error is not None or self._q is None:
            return
        if not self.blocking and item[0] == "v":
            try:
                self._q.put_nowait(item)
            except queue.Full:
                self.frames_dropped += 1  # the writer fills it with the previous frame
            return
        while self._thread.is_alive():  # offline frames and all audio wait for the writer
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        w = self._writer
        first = None
        last_image = None
        audio: list = []  # (start, samples) waiting for their frames
        a_next = None  # next audio sample to write
        try:
            while True:
                item = self._q.get()
                if item is None:
                    break
                kind, pos, data = item
                if kind == "a":
                    audio.append((pos, data))
                else:
                    if first is None:
                        first = pos
                        a_next = first * self.piece
                    if pos < first + w.frames_written:
                        continue  # late duplicate
                    while last_image is not None and first + w.frames_written < pos:
                        w.write_video(last_image)  # frames the pipeline dropped: repeat the last one
                        self.frames_filled += 1
                    w.write_video(data)
                    last_image = data
                if first is not None:
                    a_next = self._write_audio(audio, a_next, (first + w.frames_written) * self.piece)
                self.frames_written = w.frames_written
        except RecorderError as exc:
            self.error = exc
            log.error("%s", exc)
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            try:
                w.close()
            except RecorderError as exc:
                if self.error is None:
                    self.error = exc
                    log.error("%s", exc)
            while True:  # unblock writers still queueing
                try:
                    self._q.get_nowait()
                except Exception:
                    break

    def _write_audio(self, audio: list, a_next: int, until: int) -> int:
        """Write queued audio in [a_next, until) (samples on the stream clock)."""
        while audio:
            start, samples = audio[0]
            end = start + len(samples)
            if end <= a_next:
                audio.pop(0)
                continue
            lo = max(a_next, start)
            hi = min(end, until)
            if hi <= lo:
                break
            if lo > a_next:  # a gap in the captured audio: keep the clock with silence
                self._writer.write_audio(np.zeros(lo - a_next, np.float32))
            self._writer.write_audio(samples[lo - start: hi - start])
            a_next = hi
            if hi < end:
                break
            audio.pop(0)
        return a_next

    def close(self) -> None:
        if self._thread is None:
            return
        self._q.put(None)
        self._thread.join()
        self._thread = None
        log.info("Recorded %s: %d frames (%.1f s)%s", self.path, self.frames_written, self.frames_written / self.fps,
                 f", {self.frames_filled} repeated for frames dropped upstream" if self.frames_filled else "")
