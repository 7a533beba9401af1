"""MP4 recording (PyAV): H.264 video + AAC audio, same length, readable by any player.

`Mp4Writer` writes a file; `RecorderSink` is the pipeline's recorder: it writes on its own thread, keeps
audio and video on one clock, and writes a fragmented MP4 (a self-contained fragment every second),
so a crash, a kill or a full disk leaves a file that plays up to its last second.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from engine.audio.sources import RECORD_RATES, AudioFormat

if TYPE_CHECKING:
    import queue
    import threading

log = logging.getLogger(__name__)


class RecorderError(OSError):
    """Writing the video failed (disk full, no permission, ...); the message says where and why."""


Progress = Callable[[float, float], None]
"""A long job's progress: (seconds of video done, seconds in all; 0 when not known)."""


class Interrupted(Exception):
    """The user stopped a job (Ctrl-C); the file was closed cleanly where it was."""

    def __init__(self, path: Path, seconds: float, total: float) -> None:
        self.path, self.seconds, self.total = path, seconds, total
        of = f" of {total:.1f} s" if total else ""
        super().__init__(f"Interrupted: {path} holds the first {seconds:.1f} s{of}, and plays.")


VIDEO_SUFFIXES = (".mp4", ".m4v")
"""What the recorder writes: an MP4 container (H.264 + AAC)."""


def check_output(path: Path | str, inputs: tuple[Path | str | None, ...] = (), overwrite: bool = False,
                 suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> Path:
    """Check an output file before any work starts: the name says what is written, it is none of the
    inputs, an existing file is replaced only with `overwrite`, and its folder can be written. Raises
    RecorderError saying that nothing was written and what to do."""
    path = Path(path)
    target = path.resolve()
    for src in inputs:
        if src is not None and Path(src).exists() and Path(src).resolve() == target:
            raise RecorderError(f"{path} is also an input; talkcam never writes over its inputs. Give another "
                                "output name. Nothing was written.")
    if path.is_dir():
        example = path / ("talkcam" + (suffixes[0] if suffixes else ""))
        raise RecorderError(f"Cannot write {path}: it is a folder. Give a file name, e.g. {example}. "
                            "Nothing was written.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise RecorderError(f"Cannot write {path}: talkcam writes {'/'.join(s.lstrip('.').upper() for s in suffixes)} "
                            f"files, not {path.suffix or 'files without an extension'}. Name it "
                            f"{path.with_suffix(suffixes[0]).name}. Nothing was written.")
    if path.exists() and not overwrite:
        raise RecorderError(f"{path} exists. Add --overwrite to replace it, or give another name. Nothing was written.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    why = None
    if not folder.is_dir():
        why = f"{folder} is not a folder"
    else:
        try:  # a real probe: permissions, read-only mounts and root's rights all show here
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".talkcam-probe-"):
                pass
        except OSError as exc:
            why = f"the folder {folder} is not writable ({exc.strerror or exc})"
    if why is not None:
        raise RecorderError(f"Cannot write {path}: {why}. Choose another folder. Nothing was written.")
    return path


class Mp4Writer:
    """Write RGB frames and float audio (mono or stereo, at the source's own rate) to an MP4. Use as a
    context manager."""

    def __init__(self, path: Path | str, size: tuple[int, int], fps: int, sample_rate: int,
                 crf: int = 20, preset: str = "veryfast", fragmented: bool = False, channels: int = 1) -> None:
        if channels not in (1, 2):
            raise ValueError(f"the recorder writes mono or stereo audio, not {channels} channels")
        self.path = Path(path)
        self.fps = fps
        self.sample_rate = sample_rate
        self.channels = channels
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
        self._layout = "stereo" if channels == 2 else "mono"
        self._audio = self._container.add_stream("aac", rate=sample_rate)
        self._audio.layout = self._layout
        self._audio.bit_rate = 96_000 * channels  # transparent for speech and song (FFmpeg's default: 69 kb/s)
        self._audio.time_base = Fraction(1, sample_rate)

    def write_video(self, frame: np.ndarray) -> None:
        """One RGB uint8 frame [H, W, 3]."""
        h, w = self._video.height, self._video.width
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = Fraction(1, self.fps)
        packets = self._video.encode(vf)
        self.frames_written += 1  # counted once the encoder holds it: an interrupt in the mux cannot repeat a pts
        self._mux(packets)

    def write_audio(self, samples: np.ndarray) -> None:
        """Float32 samples in [-1, 1] at `sample_rate`: [n] or [n, channels] (mono is spread over both
        channels of a stereo file)."""
        if not len(samples):
            return
        data = np.clip(samples, -1.0, 1.0).astype(np.float32).reshape(len(samples), -1)
        if data.shape[1] != self.channels:
            data = np.repeat(data[:, :1], self.channels, 1) if data.shape[1] == 1 else data.mean(1, keepdims=True)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data).reshape(1, -1), format="flt", layout=self._layout)
        af.sample_rate = self.sample_rate
        af.pts = self.samples_written
        af.time_base = Fraction(1, self.sample_rate)
        packets = self._audio.encode(af)
        self.samples_written += len(samples)
        self._mux(packets)

    def _mux(self, packets) -> None:
        try:
            for pkt in packets:
                self._container.mux(pkt)
        except (OSError, av.error.FFmpegError) as exc:
            kept = (f"its first {self.frames_written / self.fps:.1f} s stay playable" if self.frames_written
                    else "nothing playable was written")
            raise RecorderError(f"Writing {self.path} failed ({_why(exc)}); {kept}.") from exc

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


def _to_rate(samples: np.ndarray, n: int) -> np.ndarray:
    """16 kHz mono samples stretched to `n` samples by linear interpolation (a piece without its original)."""
    if n == len(samples):
        return samples
    return np.interp((np.arange(n) + 0.5) * len(samples) / n - 0.5, np.arange(len(samples)), samples).astype(np.float32)


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
        self._q: queue.Queue[tuple[str, int, np.ndarray] | None] | None = None
        self._thread: threading.Thread | None = None

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        """`sample_rate`, `channels`: the source's own audio format, which the recording keeps."""
        import queue
        import threading

        self.fps, self.sample_rate = fps, sample_rate
        self.format = AudioFormat(sample_rate, channels)
        self.piece = sample_rate // fps
        if sample_rate not in RECORD_RATES or sample_rate % fps:
            raise RecorderError(f"Cannot record {sample_rate} Hz audio at {fps} fps (AAC takes "
                                f"{', '.join(str(r) for r in RECORD_RATES)} Hz, a whole number of samples a frame).")
        self._writer = Mp4Writer(self.path, size, fps, sample_rate, self.crf, self.preset, fragmented=True,
                                 channels=channels)
        self._q = queue.Queue(maxsize=max(8, int(self.queue_seconds * fps * 2)))
        self._thread = threading.Thread(target=self._run, name="talkcam-recorder", daemon=True)
        self._thread.start()
        log.info("Recording to %s", self.path)

    def write_frame(self, frame) -> None:
        self._enqueue(("v", frame.index, frame.image))

    def write_audio(self, piece) -> None:
        """The piece's own audio (`original`), else its 16 kHz copy brought to the recording's rate."""
        start = self.format.position(piece.start)
        if piece.original is not None and piece.original.shape[1] == self.format.channels:
            samples = piece.original
        else:
            n = self.format.position(piece.start + len(piece.samples)) - start
            samples = _to_rate(piece.samples, n)
        self._enqueue(("a", start, samples))

    def _enqueue(self, item: tuple[str, int, np.ndarray]) -> None:
        import queue

        if self.error is not None or self._q is None:
            return
        if not self.blocking and item[0] == "v":
            try:
                self._q.put_nowait(item)
            except queue.Full:
                self.frames_dropped += 1  # the writer fills it with the previous frame
            return
        writer = self._thread
        if writer is None:  # closed meanwhile (a stage thread still held the old sink list): nothing to write
            return
        while writer.is_alive():  # offline frames and all audio wait for the writer
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        w, q = self._writer, self._q
        assert w is not None and q is not None  # open() sets both before starting this thread
        first = None
        last_image = None
        audio: list = []  # (start, samples) waiting for their frames
        a_next = 0  # next audio sample to write (set with `first`)
        try:
            while True:
                item = q.get()
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
        except RecorderError as exc:  # kept for the owner to report (said once, by the owner)
            self.error = exc
            log.debug("recorder stopped: %s", exc)
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            try:
                w.close()
            except RecorderError as exc:
                if self.error is None:
                    self.error = exc
                    if self.on_error is not None:
                        self.on_error(exc)
            while True:  # unblock writers still queueing
                try:
                    q.get_nowait()
                except Exception:
                    break

    def _write_audio(self, audio: list, a_next: int, until: int) -> int:
        """Write queued audio in [a_next, until) (samples on the stream clock)."""
        w = self._writer
        assert w is not None  # called by the writer thread, which open() starts with the writer
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
                w.write_audio(np.zeros(lo - a_next, np.float32))
            w.write_audio(samples[lo - start: hi - start])
            a_next = hi
            if hi < end:
                break
            audio.pop(0)
        return a_next

    def close(self) -> None:
        if self._thread is None:
            return
        assert self._q is not None  # opened with the thread
        self._q.put(None)
        self._thread.join()
        self._thread = None
        log.info("Recorded %s: %d frames (%.1f s)%s", self.path, self.frames_written, self.frames_written / self.fps,
                 f", {self.frames_filled} repeated for frames dropped upstream" if self.frames_filled else "")
