"""`talkcam data ingest`: a real talking video -> a corpus shard (motion fitted from landmarks, audio features).

Per frame (resampled to 25 fps by nearest timestamp) the face mesh is tracked (box from the previous
frame's landmarks, re-detection when it is lost). The speaker's neutral face is the frame with the
most closed mouth among frames with open eyes, closest to the median shape; the motion basis is built
on it and every frame is fitted (bounded least squares, camera similarity removed). Frames without a
face are interpolated and counted.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import av
import numpy as np

from engine import motion as M
from engine.audio.features import log_mel
from engine.audio.io import FPS, SAMPLE_RATE, AudioError, load_audio
from engine.data.corpus import Clip, write_manifest, write_shard
from engine.face.landmarks import FaceLandmarker
from engine.face.tracking import Track, eye_opening, mouth_opening, track

log = logging.getLogger(__name__)


class IngestError(ValueError):
    """The video cannot be turned into training data; the message says why."""


def video_frames(path: Path, fps: float = FPS, max_frames: int | None = None, half: str | None = None):
    """Yield RGB frames of `path` resampled to `fps` (nearest earlier frame for each output time);
    `half` = "left" or "right" keeps that half of each frame (split-screen videos: one speaker each)."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise IngestError(f"Cannot read {path} as video ({exc}).") from exc
    with container:
        if not container.streams.video:
            raise IngestError(f"{path} has no video track.")
        stream = container.streams.video[0]
        n_out = 0
        last = None
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else n_out / fps
            img: np.ndarray = frame.to_ndarray(format="rgb24")
            if half is not None:
                mid = img.shape[1] // 2
                img = np.ascontiguousarray(img[:, :mid] if half == "left" else img[:, mid:])
            while n_out / fps < t + 0.5 / fps and (last is not None or n_out / fps <= t + 0.5 / fps):
                if n_out / fps >= t - 0.5 / fps or last is None:
                    yield img
                else:
                    yield last
                n_out += 1
                if max_frames and n_out >= max_frames:
                    return
            last = img


def track_face(path: Path, landmarker: FaceLandmarker, max_frames: int | None = None,
               half: str | None = None) -> Track:
    tr = track(video_frames(path, FPS, max_frames, half), landmarker)
    if not len(tr.found):
        raise IngestError(f"{path} contains no video frames.")
    return tr


def neutral_frame(track: Track) -> int:
    """Index of the frame used as the speaker's neutral face."""
    idx = np.flatnonzero(track.found)
    lm = track.landmarks[idx]
    mouth, eyes = mouth_opening(lm), eye_opening(lm)
    ok = eyes >= np.median(eyes) * 0.85
    cand = idx[ok & (mouth <= np.percentile(mouth[ok], 10))]
    if len(cand) == 0:
        return int(idx[np.argmin(mouth)])
    # closest to the median face shape (normalised by position and size) among the candidates
    med = np.median(_normalised(track.landmarks[idx]), axis=0)
    d = np.abs(_normalised(track.landmarks[cand]) - med).mean((1, 2))
    return int(cand[np.argmin(d)])


def _normalised(lm: np.ndarray) -> np.ndarray:
    """[N, 478, 3] -> [N, 478, 2] centred, unit spread (position and size removed)."""
    xy = lm[..., :2] - lm[..., :2].mean(-2, keepdims=True)
    return xy / xy.std(axis=(-2, -1), keepdims=True)


def fit_motion(track: Track) -> tuple[np.ndarray, int]:
    """Motion [T, DIM] for every frame (gaps linearly interpolated) and the neutral frame's index."""
    if track.found.mean() < 0.5:
        raise IngestError(f"A face was found in only {track.found.mean():.0%} of the frames; "
                          "use a video where one face is visible most of the time.")
    ref = neutral_frame(track)
    basis = M.MotionBasis(track.landmarks[ref])
    T = len(track.found)
    motion = np.zeros((T, M.DIM), np.float32)
    idx = np.flatnonzero(track.found)
    for i in idx:
        motion[i] = basis.fit(track.landmarks[i], rigid=True)
    missing = np.flatnonzero(~track.found)
    if len(missing):
        for d in range(M.DIM):
            motion[missing, d] = np.interp(missing, idx, motion[idx, d])
    return motion, ref


def write_clip(out: Path, sound: np.ndarray, motion: np.ndarray, info: dict) -> None:
    """Add one real clip (16 kHz audio, motion per frame, record) to the corpus `out` as its own shard,
    with its log-mel and speech-encoder features, and rewrite the manifest."""
    from engine.audio.frontend import speech_settings
    from engine.audio.speech import speech_features

    T = len(motion)
    sound = sound[: int(np.ceil(T / FPS * SAMPLE_RATE))]
    info = {**info, "duration": round(len(sound) / SAMPLE_RATE, 4), "frames": T, "phonemes": [],
            "speech_features": speech_settings(None)}
    clip = Clip(audio=sound, mel=log_mel(sound, n_frames=T), motion=motion, viseme=np.full(T, -1, np.int8),
                info=info, speech=speech_features(sound, T))
    out.mkdir(parents=True, exist_ok=True)
    write_shard(out / f"{info['id']}.safetensors", [clip])
    args = None
    if (out / "corpus.json").exists():
        import json

        args = json.loads((out / "corpus.json").read_text("utf-8")).get("args")
    write_manifest(out, args)


def ingest(video: Path | str, out: Path | str, audio: Path | str | None = None,
           landmarker: FaceLandmarker | None = None, max_seconds: float | None = None) -> dict:
    """Add `video` (with `audio`, or its own audio track) to the corpus in `out` as one shard."""
    video, out = Path(video), Path(out)
    if not video.exists():
        raise IngestError(f"Video {video} does not exist.")
    try:
        sound = load_audio(audio if audio is not None else video)
    except AudioError as exc:
        raise IngestError(f"{exc}" + ("" if audio else " Pass the sound track with --audio FILE.")) from exc
    own = landmarker is None
    landmarker = landmarker or FaceLandmarker()
    try:
        max_frames = int(max_seconds * FPS) if max_seconds else None
        track = track_face(video, landmarker, max_frames)
    finally:
        if own:
            landmarker.close()
    motion, ref = fit_motion(track)
    T = len(motion)
    n_audio = len(sound) / SAMPLE_RATE * FPS
    if abs(n_audio - T) > max(0.05 * T, 2 * FPS):
        log.warning("%s: video %.1f s but audio %.1f s; using the shorter", video, T / FPS, n_audio / FPS)
    T = int(min(T, np.ceil(n_audio)))
    sound = sound[: int(np.ceil(T / FPS * SAMPLE_RATE))]
    digest = hashlib.sha256(video.read_bytes()[:1 << 20] + (Path(audio).read_bytes()[:1 << 20] if audio else b"")
                            ).hexdigest()[:10]
    info = {
        "id": f"real-{video.stem}-{digest}", "scenario": "real", "language": "?", "voice": f"real:{video.stem}",
        "style": "real", "text": "", "duration": round(len(sound) / SAMPLE_RATE, 4), "frames": T,
        "augment": {}, "phonemes": [], "source": {"video": video.name, "audio": Path(audio).name if audio else None,
                                                   "size": list(track.size), "neutral_frame": ref,
                                                   "face_found": round(float(track.found[:T].mean()), 4)},
    }
    write_clip(out, sound, motion[:T], info)
    log.info("%s: %d frames (%.1f s), face found in %.0f%%, neutral frame %d", video, T, T / FPS,
             100 * track.found[:T].mean(), ref)
    return info
