"""The audio front end a motion model expects: which feature rows, how many per video frame, and their
padding value (what "no audio" looks like before a stream's start and after its end).

Two kinds (`FeatureKind`):
- ``logmel``: the project's own log-mel (engine.audio.features), 4 rows of 80 per frame, no lookahead of
  its own (the audio encoder's convolutions read ahead); padding = the log-mel of digital silence.
- ``speech``: Whisper tiny.en's encoder on a sliding window (engine.audio.speech), 2 rows of 384 per frame,
  computed per chunk with the lookahead inside the window; padding = zero rows.

A model's `AudioEncoder` config names its kind and geometry; `front_end(encoder_config)` gives the
matching `FrontEnd`, used alike by training (corpus rows), offline rendering and the streaming session.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from engine.audio.features import SILENCE, MelConfig, StreamingLogMel, log_mel
from engine.audio.speech import (
    ROWS_PER_FRAME,
    WHISPER_DIM,
    SpeechFeatureConfig,
    StreamingSpeechFeatures,
    speech_features,
)

FeatureKind = Literal["logmel", "speech"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("logmel", "speech")


class StreamingFront(Protocol):
    """Samples in (any piece size), feature rows out as they become final; `finish` flushes the end."""

    def push(self, audio: np.ndarray) -> np.ndarray: ...

    def finish(self) -> np.ndarray: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class FrontEnd:
    kind: FeatureKind
    rows_per_frame: int
    dim: int
    pad: float
    """Row value standing for "no audio" (before the start, after the end)."""
    lookahead: int
    """Video frames of audio after a chunk's end that its rows already depend on (0 for log-mel)."""
    speech: SpeechFeatureConfig | None = None

    def streaming(self) -> StreamingFront:
        if self.kind == "speech":
            return StreamingSpeechFeatures(self.speech)
        return StreamingLogMel(MelConfig())

    def offline(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """Rows [rows_per_frame * n_frames, dim] for a whole signal, equal to what `streaming` gives."""
        if self.kind == "speech":
            return speech_features(audio, n_frames, self.speech)
        return log_mel(audio, None, n_frames)

    def clip_rows(self, clip) -> np.ndarray:
        """A corpus clip's rows (stored in its shard; computed now if the shard predates them or stored them
        with other window settings)."""
        if self.kind == "speech":
            if clip.speech is None or stored_speech_settings(clip.info) != speech_settings(self.speech):
                clip.speech = speech_features(clip.audio, clip.frames, self.speech)
                clip.info["speech_features"] = speech_settings(self.speech)
            return clip.speech
        return clip.mel

    def pad_rows(self, frames: int) -> np.ndarray:
        return np.full((frames * self.rows_per_frame, self.dim), self.pad, np.float32)

    def with_geometry(self, chunk: int, lookahead: int) -> FrontEnd:
        """This front end for a session whose chunk grid and feature lookahead (video frames) differ from the
        model's (the low-latency mode, engine.runtime.config.Latency). Speech features are computed per chunk
        with the lookahead inside the window, so both change; log-mel rows depend on neither, and have no
        lookahead of their own to change."""
        if self.kind == "speech":
            speech = self.speech
            if speech is None:
                raise ValueError("this speech front end has no SpeechFeatureConfig (make it with `front_end`)")
            if (chunk, lookahead) == (speech.chunk, speech.lookahead):
                return self
            return replace(self, lookahead=lookahead, speech=replace(speech, chunk=chunk, lookahead=lookahead))
        if lookahead != self.lookahead:
            raise ValueError(f"the {self.kind} front end has no lookahead of its own to change (asked for {lookahead}): "
                             "only models reading speech features can run another lookahead")
        return self


def speech_settings(cfg: SpeechFeatureConfig | None) -> dict:
    """What a clip's stored speech rows depend on (recorded in its shard record)."""
    cfg = cfg or SpeechFeatureConfig()
    return {"chunk": cfg.chunk, "lookahead": cfg.lookahead, "window": cfg.window}


def stored_speech_settings(info: dict) -> dict:
    """The settings a clip's rows were made with (shards that predate the record used the defaults)."""
    return info.get("speech_features") or speech_settings(None)


def model_rows(model, clip) -> np.ndarray:
    """The feature rows of a corpus clip that `model` (a teacher or student) reads."""
    return front_end(model.audio_encoder.config).clip_rows(clip)


def front_end(config) -> FrontEnd:
    """The front end for an `AudioEncoder` config (anything with its attributes)."""
    kind = getattr(config, "features", "logmel")
    if kind == "speech":
        sc = SpeechFeatureConfig(chunk=int(config.feature_chunk), lookahead=int(config.feature_lookahead),
                                 window=int(config.feature_window))
        return FrontEnd("speech", ROWS_PER_FRAME, WHISPER_DIM, 0.0, sc.lookahead, sc)
    if kind != "logmel":
        raise ValueError(f"unknown audio feature kind {kind!r} (available: {', '.join(FEATURE_KINDS)})")
    return FrontEnd("logmel", MelConfig().mels_per_frame, MelConfig().n_mels, SILENCE, 0)
