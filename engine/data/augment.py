"""Make clean TTS sound like a real microphone: room reverb, background noise, gain, band limits,
compression, and rate/pitch change (speed perturbation, whose time factor the caller applies to the
labels). Every step is drawn from a seeded generator and recorded, so a clip can be rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from engine.audio.io import resample


@dataclass
class AugmentConfig:
    """Probability of each augmentation and its range."""

    p_speed: float = 0.4
    speed: tuple[float, float] = (0.88, 1.12)
    """Playback-rate factor: > 1 is faster and higher (timings scale by 1/factor)."""
    p_reverb: float = 0.5
    rt60: tuple[float, float] = (0.15, 0.9)
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (8.0, 35.0)
    p_band: float = 0.5
    p_compress: float = 0.4
    gain_db: tuple[float, float] = (-18.0, 3.0)


def speed(audio: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Speed perturbation: play `factor` times faster (pitch rises with it, as on a tape)."""
    n = max(1, int(round(sr / factor)))
    return resample(audio, sr, n) if n != sr else audio


def room_impulse(sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Synthetic room impulse response: direct path, sparse early reflections, exponentially decaying
    diffuse tail with high frequencies dying faster."""
    n = int(sr * min(rt60 * 1.2, 1.5))
    t = np.arange(n) / sr
    decay = np.exp(-6.9 * t / rt60)
    tail = rng.standard_normal(n) * decay
    sos = butter(2, min(0.99, 4000 / (sr / 2)), "low", output="sos")
    tail = 0.5 * tail + 0.5 * sosfilt(sos, tail)
    h = tail * rng.uniform(0.05, 0.35)
    h[0] = 1.0
    for _ in range(int(rng.integers(3, 9))):  # early reflections 2-40 ms
        k = int(rng.uniform(0.002, 0.04) * sr)
        if k < n:
            h[k] += rng.uniform(0.1, 0.6) * rng.choice([-1, 1])
    return h / np.sqrt(np.sum(h ** 2))


def noise(n: int, sr: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Background noise: white, pink, brown (rumble), mains hum with harmonics, or fan-like band noise."""
    if kind == "hum":
        t = np.arange(n) / sr
        f = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.2, 1) / h * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6.3)) for h in range(1, 6))
        return x + 0.05 * rng.standard_normal(n)
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1] if n > 1 else 1.0
    if kind == "pink":
        spec /= np.sqrt(f)
    elif kind == "brown":
        spec /= f
    else:  # fan: band-limited hiss around a random centre
        c = rng.uniform(300, 2500)
        spec *= np.exp(-0.5 * ((f - c) / (0.5 * c)) ** 2)
    return np.fft.irfft(spec, n)


def compress(audio: np.ndarray, sr: int, threshold_db: float, ratio: float) -> np.ndarray:
    """Feed-forward compressor (5 ms attack, 80 ms release) with make-up gain."""
    level = np.abs(audio)
    att, rel = np.exp(-1 / (0.005 * sr)), np.exp(-1 / (0.08 * sr))
    env = np.empty_like(level)
    e = 0.0
    for i, x in enumerate(level):  # a simple loop is fast enough at 16 kHz for clips of seconds
        c = att if x > e else rel
        e = c * e + (1 - c) * x
        env[i] = e
    db = 20 * np.log10(np.maximum(env, 1e-6))
    over = np.maximum(db - threshold_db, 0)
    gain = 10 ** (-over * (1 - 1 / ratio) / 20)
    out = audio * gain
    return out / max(np.max(np.abs(out)), 1e-6) * max(np.max(np.abs(audio)), 1e-6)


def augment(audio: np.ndarray, sr: int, rng: np.random.Generator, config: AugmentConfig | None = None
            ) -> tuple[np.ndarray, float, dict]:
    """Returns (audio, time_factor, record). Labels at time t move to t * time_factor."""
    cfg = config or AugmentConfig()
    rec: dict = {}
    x = audio.astype(np.float64)
    factor = 1.0
    if rng.random() < cfg.p_speed:
        f = float(rng.uniform(*cfg.speed))
        x = speed(x, sr, f)
        factor = 1.0 / f
        rec["speed"] = round(f, 4)
    if rng.random() < cfg.p_reverb:
        rt = float(rng.uniform(*cfg.rt60))
        x = fftconvolve(x, room_impulse(sr, rt, rng))[: len(x)]
        rec["rt60"] = round(rt, 3)
    if rng.random() < cfg.p_band:
        lo, hi = float(rng.uniform(60, 350)), float(rng.uniform(3000, min(7800, sr / 2 - 100)))
        x = sosfilt(butter(4, [lo, hi], "bandpass", fs=sr, output="sos"), x)
        rec["band"] = [round(lo), round(hi)]
    if rng.random() < cfg.p_compress:
        th, ratio = float(rng.uniform(-30, -12)), float(rng.uniform(2, 8))
        x = compress(x, sr, th, ratio)
        rec["compress"] = [round(th, 1), round(ratio, 1)]
    if rng.random() < cfg.p_noise:
        kind = str(rng.choice(["white", "pink", "brown", "hum", "fan"]))
        snr = float(rng.uniform(*cfg.snr_db))
        nz = noise(len(x), sr, kind, rng)
        p_sig = np.mean(x ** 2) + 1e-12
        x = x + nz * np.sqrt(p_sig / (np.mean(nz ** 2) + 1e-12) / 10 ** (snr / 10))
        rec["noise"] = [kind, round(snr, 1)]
    gain = float(rng.uniform(*cfg.gain_db))
    peak = np.max(np.abs(x)) + 1e-9
    x = x / peak * 10 ** (gain / 20) * 0.9
    rec["gain_db"] = round(gain, 1)
    return np.clip(x, -1.0, 1.0).astype(np.float32), factor, rec
