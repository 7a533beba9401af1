"""The streaming pipeline: audio source -> student stage -> renderer/refiner stage -> sinks, on threads.

    source thread ──pieces──> student thread ──motion chunks──> render thread ──frames──> sinks
          └──────────── captured audio ──────────────────────────────────────────────> sinks (recorder)

- Stages overlap: while the renderer draws chunk n, the student generates chunk n + 1.
- Queues are bounded. Offline (a file at full speed, `talkcam render`) a full queue blocks the stage
  before it (back-pressure: nothing is lost). Live (microphone) the newest wins: a full queue drops
  its oldest item and counts it, so latency stays bounded when the machine cannot keep up.
- The video clock is the audio clock: frame i shows audio samples [i * piece, (i + 1) * piece), and
  carries the monotonic time that audio was captured; `Frame.latency` is capture -> frame out.
- Stopping: `stop()` sets an event; every stage ends at its next item and passes a sentinel on, so
  the sinks (the recorder) close cleanly. An exception in any stage stops the others and is re-raised
  by `join()` in the caller's thread.
- Controls, guidance, style and the portrait change while running; they apply at the next chunk
  (the portrait switches renderer and student identity on the same frame).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.audio.io import FPS
from engine.audio.sources import AudioFormat, AudioSource, Piece
from engine.sinks.base import Frame, Sink

if TYPE_CHECKING:
    from engine.render.renderer import FrameRenderer
    from engine.runtime.stream import MotionStream

log = logging.getLogger(__name__)

_END = object()  # sentinel passed down the queues


@dataclass
class PipelineConfig:
    queue_chunks: int = 3
    """Motion chunks waiting for the renderer (and 4x as many audio pieces waiting for the student)."""
    live: bool | None = None
    """Newest-wins queues; default: the source's own `live`."""
    student_threads: int = 1
    """torch intra-op threads of the student stage (0: leave torch's setting). One each is fastest on a
    2-core CPU: 38 fps against 25 with torch's default of all cores per stage (they contend)."""
    render_threads: int = 1
    """torch intra-op threads of the renderer stage (0: leave torch's setting)."""


@dataclass
class PipelineStats:
    frames: int = 0
    dropped_frames: int = 0
    """Frames never drawn because the renderer fell behind (live only)."""
    dropped_audio: int = 0
    """Audio pieces the student skipped because it fell behind (live only)."""
    started: float = 0.0
    latency: deque = field(default_factory=lambda: deque(maxlen=5000))
    out_times: deque = field(default_factory=lambda: deque(maxlen=5000))
    processing: deque = field(default_factory=lambda: deque(maxlen=5000))
    student_s: float = 0.0
    render_s: float = 0.0
    student_frames: int = 0
    interrupted: bool = False
    """`run()` ended on Ctrl-C, before the source did."""

    def summary(self, last: int = 0) -> dict:
        """Totals; with `last`, fps and latencies over the last `last` frames (what the status bar shows)."""
        lat = np.array(self.latency)[-last:] * 1e3 if self.latency else np.zeros(1)
        proc = np.array(self.processing)[-last:] * 1e3 if self.processing else np.zeros(1)
        wall = max(time.monotonic() - self.started, 1e-9) if self.started else 1e-9
        fps = self.frames / wall
        if last and len(self.out_times) > 1:
            t = list(self.out_times)[-last:]
            fps = (len(t) - 1) / max(t[-1] - t[0], 1e-9)
        return {"frames": self.frames, "fps": fps, "dropped_frames": self.dropped_frames,
                "dropped_audio_pieces": self.dropped_audio,
                "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p95": float(np.percentile(lat, 95)),
                "processing_ms_p50": float(np.percentile(proc, 50)),
                "processing_ms_p95": float(np.percentile(proc, 95)),
                "student_ms_per_frame": 1e3 * self.student_s / max(self.student_frames, 1),
                "render_ms_per_frame": 1e3 * self.render_s / max(self.frames, 1)}


class Pipeline:
    """Run `stream` (a `MotionStream`: engine.runtime.stream.StudentStream) and `renderer` (a
    `FrameRenderer`: engine.render.renderer.AvatarRenderer, refiner included) on `source`, fanning frames
    out to `sinks`."""

    def __init__(self, source: AudioSource, stream: MotionStream, renderer: FrameRenderer,
                 sinks: list[Sink] | tuple[Sink, ...] = (),
                 config: PipelineConfig | None = None) -> None:
        self.source = source
        self.stream = stream
        self.renderer = renderer
        self.sinks = list(sinks)
        self.config = cfg = config or PipelineConfig()
        self.live = source.live if cfg.live is None else cfg.live
        self.stats = PipelineStats()
        self._audio_q: queue.Queue = queue.Queue(maxsize=4 * cfg.queue_chunks * stream.chunk)
        self._motion_q: queue.Queue = queue.Queue(maxsize=cfg.queue_chunks)
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._error_stage = ""
        self._threads: list[threading.Thread] = []
        self._opened: list[Any] = []
        self._closed = False

    # -- control (any thread) -------------------------------------------------------------------
    def set_control(self, name: str, value: float | None) -> None:
        self._commands.put(("control", name, value))

    def set_guidance(self, scale: float) -> None:
        self._commands.put(("guidance", scale))

    def set_style(self, style: str) -> None:
        self._commands.put(("style", style))

    def set_portrait(self, renderer: FrameRenderer, shape: np.ndarray | None) -> None:
        """Switch to another portrait's renderer (and its face shape for the student) at the next chunk."""
        self._commands.put(("portrait", renderer, shape))

    def reset_motion(self) -> None:
        self._commands.put(("reset",))

    muted = False
    """Live mute: the microphone's audio is replaced by silence (the avatar rests; a recording stays silent)."""

    def add_sink(self, sink: Sink) -> None:
        """Attach a sink to the running pipeline (e.g. start recording): it gets the next frames."""
        self._open(sink)
        self.sinks = self.sinks + [sink]  # the stage threads iterate over the list they took: swap it whole

    def _open(self, sink: Sink) -> None:
        fmt = getattr(self.source, "record_format", None) or AudioFormat()
        sink.open(self.renderer.config.size, FPS, fmt.sample_rate, fmt.channels)
        self._opened.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        """Detach and close a sink (e.g. stop recording) while the avatar keeps running."""
        if sink in self.sinks:
            self.sinks = [s for s in self.sinks if s is not sink]
            self._opened.remove(sink)
            sink.close()

    # -- running --------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.source.open()
            self._opened.append(self.source)
            for s in self.sinks:
                self._open(s)
        except BaseException:
            self._close_all()
            raise
        self.stats.started = time.monotonic()
        for name, fn in (("source", self._source_loop), ("student", self._student_loop), ("render", self._render_loop)):
            t = threading.Thread(target=self._guard, args=(name, fn), name=f"talkcam-{name}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        """Ask every stage to finish (returns at once; `join` waits)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the stages to end (True when they have), close source and sinks, and re-raise the first
        stage error in the caller."""
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        if self.running:
            return False
        self._close_all()
        if self._error is not None:
            err, self._error = self._error, None
            log.debug("pipeline stage %s failed", self._error_stage, exc_info=err)
            raise err
        return True

    def run(self) -> PipelineStats:
        """start() and join(): the whole source (a file) or until stop() (from another thread or Ctrl-C)."""
        self.start()
        try:
            while not self.join(timeout=0.2):
                pass
        except KeyboardInterrupt:
            log.info("Stopping (Ctrl-C)")
            self.stats.interrupted = True
            self.stop()
            self.join()
        return self.stats

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for obj in reversed(self._opened):
            try:
                obj.close()
            except Exception as exc:  # close every sink even if one fails; report the first
                log.error("Closing %s failed: %s", getattr(obj, "name", type(obj).__name__), exc)
                errors.append(exc)
        if errors and self._error is None:
            self._error = errors[0]

    def _guard(self, name: str, fn) -> None:
        try:
            fn()
        except BaseException as exc:
            if self._error is None:
                self._error, self._error_stage = exc, name
            log.debug("stage %s raised %s", name, exc)
            self._stop.set()
        finally:
            if name != "render":
                # a stream that ended by itself waits for room (nothing is lost); after a stop, what was
                # still queued is discarded, not counted as dropped
                self._put(self._audio_q if name == "source" else self._motion_q, _END, final=True)

    # -- queues ---------------------------------------------------------------------------------
    def _put(self, q: queue.Queue, item, final: bool = False) -> list:
        """Put `item`; returns the older items dropped to make room. Offline a full queue blocks
        (back-pressure) until there is room or the pipeline stops. Live the oldest item makes room, except
        for the end marker of a stream that ended by itself: nothing newer follows it, so it waits for room
        (the last frames are shown). After a stop the end marker always gets in. A dropped motion chunk
        hands a portrait switch it carries on to the chunk that replaces it (the renderer and the student
        must switch together)."""
        if not self.live or (final and not self._stop.is_set()):
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return []
                except queue.Full:
                    continue
            if not final:
                return []
        dropped: list = []
        while True:
            try:
                q.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    old = q.get_nowait()
                except queue.Empty:
                    continue
                if old is _END:  # never drop the end marker
                    q.put_nowait(old)
                    return dropped
                dropped.append(old)
                if q is self._motion_q and old[4] is not None:
                    item = self._hand_on_swap(q, old[4], item)

    @staticmethod
    def _hand_on_swap(q: queue.Queue, swap, item):
        """A dropped motion chunk carried a portrait switch: the next chunk to be drawn takes it (the oldest
        still queued, else `item`), unless that chunk carries a newer switch, which makes it moot. Returns
        `item`, changed when it took the switch."""
        with q.mutex:
            if q.queue:
                nxt = q.queue[0]
                if nxt is not _END and nxt[4] is None:
                    q.queue[0] = (*nxt[:4], swap)
                return item
        if item is not _END and item[4] is None:
            return (*item[:4], swap)
        return item

    def _get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    # -- stages ---------------------------------------------------------------------------------
    @staticmethod
    def _threads_setting(n: int) -> None:
        if n:
            torch.set_num_threads(n)  # OpenMP: the setting belongs to the calling thread

    def _source_loop(self) -> None:
        while not self._stop.is_set():
            piece = self.source.read()
            if piece is None:
                break
            if self.muted:
                piece = Piece(np.zeros_like(piece.samples), piece.start, piece.captured)
            for s in self.sinks:
                s.write_audio(piece)
            self.stats.dropped_audio += len(self._put(self._audio_q, piece))

    def _student_loop(self) -> None:
        self._threads_setting(self.config.student_threads)
        with _own_cuda_stream(self.stream.device):  # on a GPU each stage queues work on its own CUDA stream
            self._student_stage()

    def _student_stage(self) -> None:
        sess = self.stream
        per_frame = _rate(self.source) // FPS  # audio samples per video frame
        pending: deque = deque()  # (frame index, capture time) of frames whose audio is in, not yet generated
        last_needed = 0.0
        received = 0  # stream position after the last piece (samples)
        pushed = 0  # samples the stream got (less than `received` when live pieces were dropped)
        swap = None
        with torch.inference_mode():
            while True:
                item = self._get(self._audio_q)
                swap = self._apply_commands(swap)
                if item is _END:
                    if self._stop.is_set():
                        return
                    if received % per_frame:  # the last frame's audio ends inside a piece
                        pending.append((received // per_frame, last_needed))
                    # flush the lookahead with silence
                    self._generate(sess.finish, -(-pushed // per_frame), pending, last_needed, swap)
                    return
                end = item.start + len(item.samples)
                for f in range(max(item.start, received) // per_frame + 1, end // per_frame + 1):
                    # frame f - 1's audio completed inside this piece: when its last sample was captured
                    pending.append((f - 1, item.captured - (end - f * per_frame) / (per_frame * FPS)))
                received = end
                pushed += len(item.samples)
                last_needed = item.captured
                if self._generate(sess.push_audio, item.samples, pending, last_needed, swap):
                    swap = None

    def _generate(self, work, arg, pending: deque, needed: float, swap) -> bool:
        """Run the motion stream (`work(arg)` -> motion frames), time it, and pass the frames on; False if none came."""
        t0 = time.perf_counter()
        motion = work(arg)
        if not len(motion):
            return False
        self.stats.student_s += time.perf_counter() - t0
        self.stats.student_frames += len(motion)
        self._emit(motion, pending, needed, swap)
        return True

    def _emit(self, motion: np.ndarray, pending: deque, needed: float, swap) -> None:
        idx: list[int] = []
        cap: list[float] = []
        for _ in range(len(motion)):
            if pending:
                i, c = pending.popleft()
            else:  # frames past the pushed audio (end of file padding)
                i, c = (idx[-1] + 1 if idx else 0), (cap[-1] if cap else needed)
            idx.append(i)
            cap.append(c)
        dropped = self._put(self._motion_q, (idx, cap, needed, motion, swap))
        self.stats.dropped_frames += sum(len(d[0]) for d in dropped)

    def _apply_commands(self, swap):
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return swap
            kind = cmd[0]
            if kind == "control":
                self.stream.set_control(cmd[1], cmd[2])
            elif kind == "guidance":
                self.stream.set_guidance(cmd[1])
            elif kind == "style":
                self.stream.set_identity(self.stream.shape, cmd[1])
            elif kind == "portrait":
                self.stream.set_identity(cmd[2], None)
                swap = cmd[1]
            elif kind == "reset":
                self.stream.reset()

    def _render_loop(self) -> None:
        self._threads_setting(self.config.render_threads)
        with _own_cuda_stream(getattr(self.renderer, "device", "cpu")), torch.inference_mode():
            while True:
                item = self._get(self._motion_q)
                if item is _END:
                    return
                idx, cap, needed, motion, swap = item
                if swap is not None:
                    self.renderer = swap
                # offline a whole chunk is drawn at once (cheaper per frame); live each frame goes out as
                # soon as it is drawn (the chunk's first frame does not wait for the others)
                step = 1 if self.live else len(motion)
                for j0 in range(0, len(motion), step):
                    t0 = time.perf_counter()
                    images = self.renderer.render(motion[j0:j0 + step])
                    self.stats.render_s += time.perf_counter() - t0
                    out = time.monotonic()
                    for j, image in enumerate(images, j0):
                        frame = Frame(idx[j], image, motion[j], cap[j], needed, out)
                        self.stats.frames += 1
                        self.stats.latency.append(frame.latency)
                        self.stats.processing.append(frame.processing)
                        self.stats.out_times.append(out)
                        for s in self.sinks:
                            s.write_frame(frame)


def _own_cuda_stream(device):
    """A CUDA stream of the calling stage's own on a GPU (so the student's and the renderer's kernels overlap);
    nothing on the CPU."""
    import contextlib

    if torch.device(device).type == "cuda":
        return torch.cuda.stream(torch.cuda.Stream(device=device))
    return contextlib.nullcontext()


def _rate(source) -> int:
    from engine.audio.io import SAMPLE_RATE

    return getattr(source, "sample_rate", SAMPLE_RATE)
