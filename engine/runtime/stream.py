"""The motion stream: audio in (any piece size), motion frames out, through the student's KV cache.

Names: a *session* is one run of the avatar from start to stop (its settings `SessionConfig`, its models
`SessionModels`, in the window `SessionViewModel`); within it the *stream* (`StudentStream`, this module)
turns the audio into motion, and the pipeline (`engine.runtime.pipeline`) renders that motion into frames.

This is the one path from sound to motion used live (microphone), by `talkcam render` (a file, as fast
as possible) and by the evaluation of the student. Per chunk of k frames it needs the audio up to the
chunk's end plus the audio encoder's lookahead, so the algorithmic latency is k + lookahead frames.

Chunk and lookahead are the model's by default; `SessionConfig.latency` / `chunk` / `lookahead` run a
speech-feature student on shorter ones (the low-latency mode, docs/latency.md): the stream generates
chunks of that many frames, and the speech features and voice-activity flags read only that lookahead.

State: the student's cache (sink + sliding window, `engine.models.student.StudentCache`), the log-mel
front end, a short motion history for the tail correction, the current controls. `set_identity`
switches portrait or style mid-stream; `reset` starts the motion afresh; `finish` flushes the end of a
clip with silence.

Tail forcing (hybrid long tail forcing, as in training; `SessionConfig.tail_forcing`, off by default,
see docs/student.md): after each chunk is sampled, the generalist teacher re-denoises it
bidirectionally, anchored to the sink frames and the recent past, and the chunk's tail frame is
replaced by that correction before it enters the cache.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from engine import motion as M
from engine.audio.frontend import FrontEnd, front_end
from engine.models.conditions import CONTROL_NAMES, N_CONTROLS
from engine.models.sampling import GuidanceSchedule, conditions_for, tail_correct
from engine.models.student import MotionStudent
from engine.models.student_step import run_step
from engine.models.teacher import MotionTeacher
from engine.runtime.config import SessionConfig

log = logging.getLogger(__name__)


class MotionStream(Protocol):
    """What the pipeline (`engine.runtime.pipeline.Pipeline`) runs to turn audio into motion: a
    `StudentStream`, or a stand-in with the same calls (the benchmark's baselines, a test's)."""

    chunk: int
    """Frames the stream generates at a time."""
    device: torch.device
    shape: np.ndarray | None
    """The face shape the motion is generated for (None: none given)."""

    def push_audio(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz mono samples in (any amount) -> the motion frames [n, M] they completed (often none)."""
        ...

    def finish(self, n_frames: int | None = None) -> np.ndarray:
        """The frames still owed at the end of a stream (its end padded with silence)."""
        ...

    def set_control(self, name: str, value: float | None) -> None: ...

    def set_guidance(self, scale: float) -> None: ...

    def set_identity(self, shape: np.ndarray | None = None, style: str | None = None) -> None: ...

    def reset(self) -> None: ...


class SessionModels(NamedTuple):
    """What a session runs: the student, the tail-forcing corrector (None when off) and the guidance
    calibration the student was distilled with (None if unknown)."""

    student: MotionStudent
    corrector: MotionTeacher | None
    schedule: GuidanceSchedule | None


class MelChunker:
    """The audio side of a motion stream, shared by the student and the benchmark's baseline
    (engine.eval.baselines): samples -> log-mel rows (`StreamingLogMel`) -> `_chunk(n)` as soon as a
    chunk's audio plus the encoder's lookahead is in; `finish` pads the end with silence; frame controls
    held until released. A subclass sets `chunk` and `motion_dim` (and `stream_lookahead` to run another
    lookahead than the encoder's), calls `_init_mel(encoder)`, and implements `_chunk(n)` (which advances
    `_frame`), reading the encoder's input with `_mel_rows` and dropping rows no chunk needs any more with
    `_drop_mel_before`."""

    chunk: int
    motion_dim: int
    stream_lookahead: int | None = None
    """Video frames of audio after a chunk's last frame that the stream waits for (None: the encoder's
    own, `encoder.audio_lookahead`)."""

    def _front_end(self, encoder) -> FrontEnd:
        """The encoder's front end on the stream's chunk grid (`chunk`) and lookahead (`stream_lookahead`:
        what the encoder's convolutions do not read ahead, the speech features' window does)."""
        front = front_end(encoder.config)
        la = encoder.audio_lookahead if self.stream_lookahead is None else self.stream_lookahead
        conv = encoder.context()[1]
        if la < conv:
            raise ValueError(f"lookahead {la} is shorter than the audio encoder's own ({conv} frames): "
                             "this model cannot run it")
        return front.with_geometry(self.chunk, la - conv)

    def _init_mel(self, encoder) -> None:
        self.past, self.lookahead = encoder.context()
        self.front = self._front_end(encoder)
        self.audio_lookahead = self.lookahead + self.front.lookahead  # incl. the speech features' window lookahead
        self.mpf = self.front.rows_per_frame
        self.n_mels = self.front.dim
        self.mel_front = self.front.streaming()
        self.controls = np.zeros(N_CONTROLS, np.float32)
        self.control_mask = np.zeros(N_CONTROLS, np.float32)
        self._reset_mel()

    def _reset_mel(self) -> None:
        self.mel_front.reset()
        self._mel = self.front.pad_rows(self.past)  # silence before the start
        self._mel_start = -self.past  # video frame of the buffer's first row group
        self._frame = 0  # next frame to generate

    def set_control(self, name: str, value: float | None) -> None:
        """Hold a frame control (smile, blink, gazeX, gazeY, yaw, pitch, roll, speak) from now on;
        None releases it."""
        if name not in CONTROL_NAMES:
            raise ValueError(f"unknown control {name!r}; available: {', '.join(CONTROL_NAMES)}")
        i = CONTROL_NAMES.index(name)
        self.controls[i] = 0.0 if value is None else float(value)
        self.control_mask[i] = 0.0 if value is None else 1.0

    @property
    def frames_done(self) -> int:
        return self._frame

    def push_audio(self, samples: np.ndarray) -> np.ndarray:
        """Mono 16 kHz float samples in; the motion frames that became ready out."""
        return self.push_mel(self.mel_front.push(samples))

    def push_mel(self, mel: np.ndarray) -> np.ndarray:
        if len(mel):
            self._mel = np.concatenate([self._mel, np.asarray(mel, np.float32)])
        out = []
        while self._available() >= self._frame + self.chunk + self.lookahead:
            out.append(self._chunk(self.chunk))
        return np.concatenate(out) if out else np.zeros((0, self.motion_dim), np.float32)

    def finish(self, n_frames: int | None = None) -> np.ndarray:
        """End of the clip: flush the mel front end, pad with silence, and generate up to `n_frames`
        frames in all (default: every frame the audio covers). The last chunk may be short, so a new
        clip starts with `reset()`."""
        out = [self.push_mel(self.mel_front.finish())]
        total = self._available() if n_frames is None else n_frames
        while self._frame < total:
            n = min(self.chunk, total - self._frame)
            need = self._frame + n + self.lookahead - self._available()
            if need > 0:
                self._mel = np.concatenate([self._mel, self.front.pad_rows(need)])
            out.append(self._chunk(n))
        return np.concatenate(out)

    def stream(self, audio: np.ndarray, piece: int = 640, n_frames: int | None = None):
        """Push a whole signal in `piece`-sample pieces (640 = 40 ms, as live) and finish it; yields each
        non-empty block of motion frames as it comes out (the caller can time or render them)."""
        for i in range(0, len(audio), piece):
            mo = self.push_audio(audio[i:i + piece])
            if len(mo):
                yield mo
        mo = self.finish(n_frames)
        if len(mo):
            yield mo

    def _available(self) -> int:
        """Video frames of mel received (buffer start + whole frames in it)."""
        return self._mel_start + len(self._mel) // self.mpf

    def _mel_rows(self, first: int, count: int) -> np.ndarray:
        """The encoder's input for frames [first, first + count): rows from its past context to its lookahead."""
        r0 = (first - self.past - self._mel_start) * self.mpf
        return self._mel[r0: r0 + (self.past + count + self.lookahead) * self.mpf]

    def _drop_mel_before(self, frame: int) -> None:
        keep = frame - self._mel_start
        if keep > 0:
            self._mel = self._mel[keep * self.mpf:]
            self._mel_start += keep

    def _chunk(self, n: int) -> np.ndarray:
        raise NotImplementedError


class SpeechGate:
    """Voice activity -> a gain on the articulation dimensions per frame: 1 while speech is heard (the
    detector's flags already include the lookahead, so the mouth may open with the first sound), falling
    to 0 over `release` frames after it stops (the mouth closes instead of snapping shut)."""

    def __init__(self, lookahead: int, release: int = 3) -> None:
        from engine.audio.speech import StreamingVAD, VADConfig

        self.vad = StreamingVAD(VADConfig(lookahead=lookahead))
        self.step = 1.0 / max(1, release)
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._flags = np.zeros(0, bool)  # flags of frames [vad.frame - len(_flags), vad.frame)
        self._gain = 0.0
        self.used = False  # audio was pushed (precomputed feature rows carry no audio to listen to)

    def push(self, samples: np.ndarray) -> None:
        self.used = True
        self._flags = np.concatenate([self._flags, self.vad.push(samples)])

    def finish(self) -> None:
        self._flags = np.concatenate([self._flags, self.vad.finish()])

    def apply(self, first: int, motion: np.ndarray) -> np.ndarray:
        """Gate motion frames [first, first + n) in place (engine.motion units); frames without a flag (past
        the audio's end) count as silence."""
        if not self.used:
            return motion
        start = self.vad.frame - len(self._flags)  # frame index of _flags[0]
        art = list(M.ARTICULATION)
        for i in range(len(motion)):
            k = first + i - start
            speech = bool(self._flags[k]) if 0 <= k < len(self._flags) else False
            self._gain = 1.0 if speech else max(0.0, self._gain - self.step)
            if self._gain < 1.0:
                motion[i, art] *= self._gain
        self._flags = self._flags[max(0, first + len(motion) - start):]
        return motion


class StudentStream(MelChunker):
    """One avatar's stream. `push_audio(samples)` / `push_mel(rows)` -> new motion frames [n, M]
    (engine.motion units). Chunk and lookahead: `config.geometry(...)` (the model's unless the latency preset
    or explicit values say otherwise); feature rows pushed with `push_mel` must come from `self.front`."""

    def __init__(self, student: MotionStudent, config: SessionConfig | None = None,
                 corrector: MotionTeacher | None = None, schedule: GuidanceSchedule | None = None,
                 shape: np.ndarray | None = None, style: str = "speaking", step=None) -> None:
        self.student = student.eval()
        self.step = step  # a backend's chunk step (engine.backends.runners.StudentBackend); None: torch eager
        self.config = cfg = config or SessionConfig()
        if cfg.tail_forcing and corrector is None:
            raise ValueError("tail forcing needs the corrector (the generalist teacher); give it or disable tail forcing")
        self.corrector = corrector.eval() if corrector is not None and cfg.tail_forcing else None
        self.schedule = schedule
        self.chunk, self.stream_lookahead = cfg.geometry(student.config.chunk, student.audio_encoder.audio_lookahead)
        if self.chunk > student.config.window:
            raise ValueError(f"chunk {self.chunk} is longer than the student's window ({student.config.window} frames)")
        self.motion_dim = student.config.motion_dim
        self.device = next(student.parameters()).device
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.g = torch.tensor([float(cfg.guidance)], device=self.device)
        self._init_mel(student.audio_encoder)
        self._step_chunk = student.config.chunk  # chunk size the backend's step takes (fixed shapes)
        if step is not None and self.chunk != student.config.chunk:
            if hasattr(step, "for_chunk"):  # a StudentBackend: the same backend, built for this chunk
                self.step = step.for_chunk(self.chunk)
                self._step_chunk = self.chunk
            else:
                log.info("Stream chunk %d differs from the model's %d: the student runs in torch (the step takes "
                         "chunks of %d only)", self.chunk, student.config.chunk, student.config.chunk)
        self.gate = SpeechGate(self.audio_lookahead) if cfg.voice_activity else None
        self.shape, self.style = shape, style
        self.cache = student.new_cache(self._identity())
        self._reset_stream()

    # -- control --------------------------------------------------------------------------------
    def set_identity(self, shape: np.ndarray | None = None, style: str | None = None) -> None:
        """Switch portrait (its face shape) and/or style prompt without restarting the stream."""
        self.shape = shape
        self.style = self.style if style is None else style
        self.student.set_identity(self.cache, self._identity())

    def _identity(self):
        """Conditions carrying the current face shape and style (what the cache's prefix is made of)."""
        return conditions_for(self.student, torch.zeros(1, 1, self.student.config.dim, device=self.device),
                              self.shape, self.style)

    def set_guidance(self, scale: float) -> None:
        self.g = torch.tensor([float(scale)], device=self.device)

    def reset(self) -> None:
        """Start the motion afresh (keeps identity, style, controls)."""
        self.student.reset(self.cache)
        self.gen.manual_seed(self.config.seed)
        self._reset_stream()

    def push_audio(self, samples: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            self.gate.push(samples)
        return super().push_audio(samples)

    def finish(self, n_frames: int | None = None) -> np.ndarray:
        if self.gate is not None and self.gate.used:
            self.gate.finish()
        return super().finish(n_frames)

    def _reset_stream(self) -> None:
        gate: SpeechGate | None = getattr(self, "gate", None)  # None before __init__ sets it
        if gate is not None:
            gate.reset()
        self._reset_mel()
        self._chunks = 0
        self._sink: list[tuple] = []
        self._recent: deque = deque(maxlen=self.config.tail_context)

    # -- one chunk ------------------------------------------------------------------------------
    @torch.no_grad()
    def _chunk(self, n: int) -> np.ndarray:
        st, dev = self.student, self.device
        a = self._frame
        mel = torch.from_numpy(self._mel_rows(a, n))[None].to(dev)
        audio = st.audio_encoder(mel)  # [1, n, D]
        ctrl = np.repeat(self.controls[None], n, 0)
        cmask = np.repeat(self.control_mask[None], n, 0)
        c = conditions_for(st, audio, self.shape, self.style, ctrl, cmask)
        tokens = st.frame_tokens(c)
        noise = torch.randn(1, n, st.config.motion_dim, generator=self.gen, device=dev)
        correct, t_audio = None, None
        if self.corrector is not None:
            t_audio = self.corrector.audio_encoder(mel)
            if a > 0 and self._chunks % self.config.tail_every == 0:
                correct = lambda x: self._correct(x, t_audio, ctrl, cmask)  # noqa: E731
        if self.step is not None and correct is None and self.corrector is None and n == self._step_chunk:
            x = run_step(self.step, self.cache, tokens, noise, self.g)
        else:  # tail forcing, or a short last chunk: the eager step on the same cache
            x = st.generate_chunk(tokens, self.cache, self.config.steps, self.g, noise, correct)
        for i in range(n):
            item = (x[:, i], None if t_audio is None else t_audio[:, i], ctrl[i], cmask[i])
            if a + i < st.config.sink_frames:
                self._sink.append(item)
            else:
                self._recent.append(item)
        self._frame += n
        self._chunks += 1
        self._drop_mel_before(self._frame - self.past)
        motion = st.from_model(x[0]).cpu().numpy().astype(np.float32)
        return self.gate.apply(a, motion) if self.gate is not None else motion

    def _correct(self, x: torch.Tensor, t_audio: torch.Tensor, ctrl: np.ndarray, cmask: np.ndarray) -> torch.Tensor:
        known = self._sink + list(self._recent)
        kx = torch.stack([k[0] for k in known], 1)
        audio = torch.cat([torch.stack([k[1] for k in known], 1), t_audio], 1)
        controls = np.concatenate([np.stack([k[2] for k in known]), ctrl])
        cmask_all = np.concatenate([np.stack([k[3] for k in known]), cmask])
        ct = conditions_for(self.corrector, audio, self.shape, self.style, controls, cmask_all)
        return tail_correct(self.corrector, kx, x, ct, self.g, self.schedule, self.config.tail_noise,
                            self.config.tail_steps, self.gen, M.MOTION_NAMES)


def stream_motion(student: MotionStudent, mel: np.ndarray, n_frames: int, config: SessionConfig | None = None,
                  shape: np.ndarray | None = None, style: str = "speaking", corrector: MotionTeacher | None = None,
                  schedule: GuidanceSchedule | None = None, piece: int = 4) -> np.ndarray:
    """Motion [n_frames, M] for a clip's log-mel, fed to a stream `piece` mel rows at a time (the live
    path, as fast as possible)."""
    cfg = config or SessionConfig(tail_forcing=corrector is not None)
    sess = StudentStream(student, cfg, corrector, schedule, shape, style)
    out = []
    mel = np.asarray(mel[: n_frames * sess.mpf], np.float32)
    for i in range(0, len(mel), piece):
        out.append(sess.push_mel(mel[i:i + piece]))
    out.append(sess.finish(n_frames))
    mo = np.concatenate(out)
    if len(mo) < n_frames:
        raise RuntimeError(f"the stream produced {len(mo)} of {n_frames} frames")
    return mo[:n_frames]


def load_session_models(student_dir: Path | None = None, teachers_dir: Path | None = None, tail_forcing: bool = False,
                        device: str = "cpu") -> SessionModels:
    """The student, the corrector (loaded only with `tail_forcing`) and the schedule, from the shipped
    assets (or the given folders)."""
    from engine import paths
    from engine.models.loading import load_student, load_teacher

    sdir = Path(student_dir or paths.student_dir())
    student = load_student(sdir, device)
    corrector = load_teacher(Path(teachers_dir or paths.teachers_dir()) / "generalist", device) if tail_forcing else None
    cal = sdir / "calibration.json"
    return SessionModels(student, corrector, GuidanceSchedule.load(cal) if cal.exists() else None)
