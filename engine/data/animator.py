"""Procedural animator: phoneme timings (+ the audio) -> motion latent per video frame.

Mouth: Cohen-Massaro-style coarticulation. Each phoneme's viseme target has a dominance
function (a Gaussian in time around the phoneme, scaled by the viseme's dominance) and the mouth
at time t is the dominance-weighted blend of all targets, so shapes blend into each other and
start before their sound (`anticipation`). Bilabials dominate strongly, so p/b/m close the lips.
Speech activity (audio RMS) relaxes the mouth in pauses that espeak folds into a phoneme.
Eyes: blinks as a renewal process (fast close, slower open). Head: slow smooth sway plus small
nods on loud syllables. Brows lift a little with emphasis. Gaze: fixations and small saccades.

This is the project's training-data generator and the baseline the learned student must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from scipy.ndimage import gaussian_filter1d

from engine import motion as M
from engine.data.tts import Phoneme
from engine.data.visemes import VISEMES, target_vector, viseme_of
from engine.limits import Range


@dataclass
class AnimatorConfig:
    """Procedural animation settings."""

    anticipation: Annotated[float, Range(-0.5, 0.5)] = 0.04
    """Seconds by which mouth shapes lead their sound."""
    articulation: Annotated[float, Range(0, 3)] = 1.0
    """Scale of mouth movements."""
    blink_interval: Annotated[float, Range(0.5, None)] = 3.5
    """Mean seconds between blinks."""
    head_motion: Annotated[float, Range(0, 3)] = 1.0
    """Scale of head sway and nods (0 = still)."""
    head_turns: Annotated[float, Range(0, 60)] = 0.0
    """Large deliberate head turns and nods per minute, up to the renderer's pose limits (0 = none)."""
    seed: int = 0
    """Random seed for blinks, sway and gaze (same seed, same animation)."""


class ProceduralAnimator:
    def __init__(self, config: AnimatorConfig | None = None) -> None:
        self.config = config or AnimatorConfig()

    def animate(self, phonemes: list[Phoneme] | None, n_frames: int, fps: float,
                audio: np.ndarray | None = None, sample_rate: int | None = None) -> np.ndarray:
        """Motion [n_frames, DIM] for frames covering [n/fps, (n+1)/fps). Without phonemes (any real
        recording) the mouth follows the audio alone (`mouth_from_audio`)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        t = (np.arange(n_frames) + 0.5) / fps
        motion = np.zeros((n_frames, M.DIM), np.float32)
        energy = _energy(audio, sample_rate, t, fps) if audio is not None and sample_rate else None
        if phonemes is None:
            if audio is None or not sample_rate:
                raise ValueError("the procedural animator needs phonemes or audio")
            motion += self.mouth_from_audio(audio, sample_rate, t)
        else:
            motion += self.mouth(phonemes, t, energy)
        blink = _blinks(t, cfg.blink_interval, rng)
        motion[:, M.index("eyeBlink_L")] = blink
        motion[:, M.index("eyeBlink_R")] = blink
        self._head(motion, t, fps, energy, rng)
        self._gaze(motion, t, rng)
        if energy is not None:
            emph = gaussian_filter1d(np.clip(energy - 0.55, 0, None), sigma=fps * 0.15)
            motion[:, M.index("browInnerUp")] += 0.6 * emph
        return M.clip(motion)

    def mouth(self, phonemes: list[Phoneme], t: np.ndarray, energy: np.ndarray | None) -> np.ndarray:
        cfg = self.config
        num = np.zeros((len(t), M.DIM))
        den = np.full(len(t), 0.08)  # the relaxed mouth's own (weak) dominance
        for ph in phonemes:
            vis = viseme_of(ph.ipa)
            v = VISEMES[vis]
            half = max((ph.end - ph.start) / 2, 0.025)
            center = (ph.start + ph.end) / 2 - cfg.anticipation
            width = 0.7 * half + 0.035
            d = v.dominance * np.exp(-0.5 * ((t - center) / width) ** 2)
            num += d[:, None] * target_vector(vis)[None]
            den += d
        mouth = num / den[:, None]
        # closure constraint: p/b/m must close the lips and f/v must touch lip to teeth, however fast the
        # speech: at each such phoneme the mouth is pulled all the way to its target around its centre
        for ph in phonemes:
            vis = viseme_of(ph.ipa)
            if vis not in ("PP", "FF"):
                continue
            center = (ph.start + ph.end) / 2 - cfg.anticipation
            width = max(0.6 * (ph.end - ph.start) / 2, 0.02)
            w = np.exp(-0.5 * ((t - center) / width) ** 2)[:, None]
            mouth = (1 - w) * mouth + w * target_vector(vis)[None]
        if energy is not None:
            activity = np.clip(energy * 3.0, 0.0, 1.0)
            mouth *= (0.25 + 0.75 * activity)[:, None]
            mouth[:, M.index("jawOpen")] *= 0.85 + 0.3 * energy
        return (mouth * cfg.articulation).astype(np.float32)

    def mouth_from_audio(self, audio: np.ndarray, sr: int, t: np.ndarray) -> np.ndarray:
        """Energy-driven mouth for audio without phonemes: the jaw follows the loudness of the speech band
        (300-3000 Hz, log-compressed), lips round when the spectrum is dark, and close in pauses."""
        from scipy.signal import butter, sosfiltfilt

        cfg = self.config
        x = audio.astype(np.float64)
        band = sosfiltfilt(butter(4, [300, min(3000, sr / 2 - 1)], "bandpass", fs=sr, output="sos"), x)
        high = sosfiltfilt(butter(4, min(2500, sr / 2 - 1), "highpass", fs=sr, output="sos"), x)
        shifted = t - cfg.anticipation  # mouths move before their sound: sample the audio a little later
        e_band = _rms_at(band, sr, t + cfg.anticipation)
        e_high = _rms_at(high, sr, shifted + 2 * cfg.anticipation)
        db = 20 * np.log10(e_band + 1e-5)
        lo, hi = np.percentile(db, 10), np.percentile(db, 97)
        o = np.clip((db - lo - 0.25 * (hi - lo)) / max(0.75 * (hi - lo), 1e-3), 0, 1)
        o = gaussian_filter1d(o, 0.8)
        bright = np.clip(e_high / (e_band + 1e-5), 0, 2) / 2
        mouth = np.zeros((len(t), M.DIM))
        mouth[:, M.index("jawOpen")] = 0.55 * o
        mouth[:, M.index("mouthLowerDown_L")] = mouth[:, M.index("mouthLowerDown_R")] = 0.15 * o
        rounded = np.clip(0.6 - bright, 0, 1) * o
        mouth[:, M.index("mouthFunnel")] = 0.5 * rounded
        mouth[:, M.index("mouthPucker")] = 0.3 * rounded
        mouth[:, M.index("mouthStretch_L")] = mouth[:, M.index("mouthStretch_R")] = 0.2 * bright * o
        return (mouth * cfg.articulation).astype(np.float32)

    def _head(self, motion: np.ndarray, t: np.ndarray, fps: float, energy: np.ndarray | None,
              rng: np.random.Generator) -> None:
        amp = self.config.head_motion
        if amp <= 0:
            return
        for name, a in (("headYaw", 0.045), ("headPitch", 0.03), ("headRoll", 0.025), ("headX", 0.02),
                        ("headY", 0.012)):
            freqs = rng.uniform(0.05, 0.45, 4)
            phases = rng.uniform(0, 2 * np.pi, 4)
            weights = rng.uniform(0.5, 1.0, 4)
            wave = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
            motion[:, M.index(name)] += amp * a * wave / weights.sum() * 1.6
        if self.config.head_turns > 0:
            self._turns(motion, t, rng)
        if energy is not None:
            onsets = np.clip(np.diff(energy, prepend=energy[:1]), 0, None)
            nod = gaussian_filter1d(onsets, sigma=fps * 0.12)
            motion[:, M.index("headPitch")] += amp * 0.25 * nod / max(nod.max(), 1e-6) * 0.12

    def _turns(self, motion: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> None:
        """Piecewise poses: ease (smoothstep) to a target, hold, move on; targets reach 95% of the range."""
        names = ("headYaw", "headPitch", "headRoll")
        hi = np.array([M.RANGES[M.index(n)][1] for n in names]) * 0.95
        rate = self.config.head_turns / 60.0
        poses = np.zeros((len(t), 3))
        now, cur = 0.0, np.zeros(3)
        end = t[-1] if len(t) else 0.0
        while now < end:
            kind = rng.choice(["turn", "nod", "tilt", "home"], p=[0.4, 0.3, 0.15, 0.15])
            tgt = np.zeros(3)
            if kind == "turn":
                tgt[0] = rng.choice([-1, 1]) * rng.uniform(0.4, 1.0) * hi[0]
                tgt[1] = rng.normal(0, 0.2) * hi[1]
            elif kind == "nod":
                tgt[1] = rng.choice([-1, 1]) * rng.uniform(0.4, 1.0) * hi[1]
            elif kind == "tilt":
                tgt[2] = rng.choice([-1, 1]) * rng.uniform(0.4, 1.0) * hi[2]
                tgt[0] = rng.normal(0, 0.2) * hi[0]
            move, hold = rng.uniform(0.25, 0.7), rng.exponential(1.0 / max(rate, 1e-3))
            x = np.clip((t - now) / move, 0, 1)
            ease = x * x * (3 - 2 * x)
            sel = t >= now
            poses[sel] = cur + (tgt - cur) * ease[sel, None]
            now += move + min(hold, 4.0)
            cur = tgt
        for k, n in enumerate(names):
            motion[:, M.index(n)] += poses[:, k]

    def _gaze(self, motion: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> None:
        gx = np.zeros(len(t))
        gy = np.zeros(len(t))
        now, tx, ty = 0.0, 0.0, 0.0
        while now < (t[-1] if len(t) else 0):
            hold = rng.uniform(0.8, 3.0)
            sel = (t >= now) & (t < now + hold)
            gx[sel], gy[sel] = tx, ty
            now += hold
            tx, ty = (0.0, 0.0) if rng.random() < 0.5 else (rng.normal(0, 0.2), rng.normal(0, 0.12))
        motion[:, M.index("eyeLookX")] = gaussian_filter1d(gx, 0.6)
        motion[:, M.index("eyeLookY")] = gaussian_filter1d(gy, 0.6)


def _energy(audio: np.ndarray, sr: int, t: np.ndarray, fps: float) -> np.ndarray:
    """Loudness per frame in [0, 1] (RMS over a 40 ms window, normalised by its 95th percentile)."""
    rms = _rms_at(audio.astype(np.float32), sr, t)
    ref = np.percentile(rms, 95) if len(rms) else 1.0
    return np.clip(rms / max(ref, 1e-4), 0.0, 1.0).astype(np.float32)


def _rms_at(x: np.ndarray, sr: int, t: np.ndarray, window: float = 0.04) -> np.ndarray:
    half = int(window / 2 * sr)
    idx = np.clip((t * sr).astype(int), 0, max(len(x) - 1, 0))
    csum = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    lo, hi = np.clip(idx - half, 0, len(x)), np.clip(idx + half, 0, len(x))
    return np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))


def _blinks(t: np.ndarray, mean_interval: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(len(t), np.float32)
    if mean_interval <= 0 or not len(t):
        return out
    now = rng.uniform(0.5, mean_interval)
    while now < t[-1]:
        close, hold, open_ = 0.08, 0.03, 0.16
        x = t - now
        prof = np.where(x < 0, 0.0, np.where(x < close, x / close, np.where(
            x < close + hold, 1.0, np.clip(1 - (x - close - hold) / open_, 0, 1))))
        out = np.maximum(out, prof.astype(np.float32))
        now += max(1.2, rng.gamma(2.0, mean_interval / 2.0))
    return out
