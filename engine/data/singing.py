"""Singing from espeak-ng speech: sustained vowels on a melody, wide pitch range, vibrato.

espeak-ng cannot sing, so the lyrics are spoken (monotone), then re-synthesised with a
source-filter vocoder: LPC analysis of the speech gives the vocal-tract filter per 5 ms; the
time axis is warped so each syllable's vowel is held for its note while consonants keep their
length; a new glottal pulse train at the melody's pitch (with portamento and vibrato) excites
the filter. The phoneme timings are warped with the same map, so the labels stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

from engine.data.tts import Phoneme
from engine.data.visemes import viseme_of

VOWELS = {"aa", "E", "I", "O", "U"}
_HOP = 0.005
_WIN = 0.025
_ORDER = 18
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "penta": (0, 2, 4, 7, 9)}


@dataclass
class Note:
    start: float
    end: float
    midi: float


@dataclass
class Song:
    audio: np.ndarray
    sample_rate: int
    phonemes: list[Phoneme]
    notes: list[Note]


def melody(n: int, rng: np.random.Generator, low: float, high: float, tempo: float) -> list[tuple[float, float]]:
    """`n` notes (midi pitch, beats) as a random walk on a scale between `low` and `high` (midi)."""
    scale = _SCALES[str(rng.choice(list(_SCALES)))]
    tonic = rng.uniform(low, (low + high) / 2)
    steps = [tonic + 12 * o + s for o in range(-1, 4) for s in scale]
    degrees = np.array([d for d in steps if low <= d <= high])
    k = int(np.argmin(np.abs(degrees - tonic)))
    out = []
    for _ in range(n):
        k = int(np.clip(k + rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3, 5, -5]), 0, len(degrees) - 1))
        beats = float(rng.choice([0.5, 1, 1, 1.5, 2, 3, 4], p=[0.15, 0.3, 0.15, 0.15, 0.13, 0.07, 0.05]))
        out.append((float(degrees[k]), beats * 60.0 / tempo))
    return out


def _syllables(phonemes: list[Phoneme]) -> list[tuple[int, int, int]]:
    """(first phoneme, vowel phoneme, last phoneme) per syllable. Consonants between two vowels
    split: the first half closes the earlier syllable, the rest opens the next one."""
    vowels = [i for i, p in enumerate(phonemes) if viseme_of(p.ipa) in VOWELS]
    out = []
    first = 0
    for j, v in enumerate(vowels):
        last = len(phonemes) - 1 if j == len(vowels) - 1 else v + (vowels[j + 1] - v - 1) // 2
        out.append((first, v, last))
        first = last + 1
    return out


def _lpc(frames: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """LPC coefficients [F, order+1] and residual RMS [F] by the autocorrelation method."""
    n = frames.shape[1]
    spec = np.fft.rfft(frames, n=2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, : order + 1]
    ac[:, 0] *= 1.0 + 1e-6
    ac[:, 0] += 1e-9
    coeffs = np.zeros((len(frames), order + 1))
    gains = np.zeros(len(frames))
    for i, r in enumerate(ac):
        a = solve_toeplitz(r[:order], r[1: order + 1])
        coeffs[i] = np.concatenate([[1.0], -a])
        gains[i] = np.sqrt(max(r[0] - a @ r[1: order + 1], 1e-12) / n)
    return coeffs, gains


def _voicing(frames: np.ndarray, sr: int) -> np.ndarray:
    """Normalised autocorrelation peak in the 60-500 Hz lag range, per frame."""
    n = frames.shape[1]
    spec = np.fft.rfft(frames - frames.mean(1, keepdims=True), n=2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :n]
    lo, hi = int(sr / 500), min(int(sr / 60), n - 1)
    return ac[:, lo:hi].max(1) / np.maximum(ac[:, 0], 1e-9)


def sing(speech: np.ndarray, sr: int, phonemes: list[Phoneme], rng: np.random.Generator,
         low: float = 45.0, high: float = 76.0, tempo: float | None = None) -> Song:
    """Turn monotone speech (+ its phonemes) into a sung phrase; pitch range in midi notes."""
    sylls = _syllables(phonemes)
    if not sylls:
        raise ValueError("no vowels to sing")
    tempo = tempo or float(rng.uniform(70, 140))
    notes_spec = melody(len(sylls), rng, low, high, tempo)
    # time warp knots (output time, input time)
    knots_out, knots_in = [0.0], [0.0]
    t_out = 0.0
    notes: list[Note] = []
    start_in = phonemes[0].start
    if start_in > 0:
        knots_out.append(start_in)
        knots_in.append(start_in)
        t_out = start_in
    for (first, v, last), (midi, dur) in zip(sylls, notes_spec):
        s_in, v0, v1, e_in = phonemes[first].start, phonemes[v].start, phonemes[v].end, phonemes[last].end
        onset, coda = v0 - s_in, e_in - v1
        dur = max(dur, onset + coda + 0.12)
        hold = dur - onset - coda
        notes.append(Note(t_out, t_out + dur, midi))
        for d_out, t_in in ((onset, v0), (hold, v1), (coda, e_in)):
            t_out += d_out
            knots_out.append(t_out)
            knots_in.append(t_in)
    tail = len(speech) / sr - knots_in[-1]
    if tail > 0:
        knots_out.append(t_out + tail)
        knots_in.append(knots_in[-1] + tail)
    total = knots_out[-1]
    warp = lambda t: np.interp(t, knots_out, knots_in)  # noqa: E731
    new_ph = [Phoneme(p.ipa, float(np.interp(p.start, knots_in, knots_out)),
                      float(np.interp(p.end, knots_in, knots_out))) for p in phonemes]

    # analysis of the speech (pre-emphasised) on a 5 ms hop
    hop, win = int(_HOP * sr), int(_WIN * sr)
    x = lfilter([1.0, -0.97], [1.0], np.concatenate([np.zeros(win // 2), speech, np.zeros(win)]))
    n_in = max(1, (len(x) - win) // hop + 1)
    idx = np.arange(win)[None] + hop * np.arange(n_in)[:, None]
    frames = x[idx] * np.hanning(win)[None]
    coeffs, gains = _lpc(frames, _ORDER)
    voiced = _voicing(frames, sr)

    # synthesis on the output time axis
    n_out = int(np.ceil(total / _HOP))
    t_frames = np.arange(n_out) * _HOP
    src = np.clip(np.round(warp(t_frames) / _HOP).astype(int), 0, n_in - 1)
    f0 = _pitch_track(notes, t_frames, rng)
    out = np.zeros(n_out * hop)
    phase = 0.0
    zi = np.zeros(_ORDER)
    for k in range(n_out):
        i = src[k]
        f = f0[k]
        incr = f / sr
        ph = phase + incr * np.arange(1, hop + 1)
        pulses = (np.floor(ph) > np.floor(np.concatenate([[phase], ph[:-1]]))).astype(float)
        phase = ph[-1] % 1.0
        vo = float(np.clip((voiced[i] - 0.25) / 0.35, 0.0, 1.0))
        exc = vo * pulses * np.sqrt(sr / f) + (1 - vo * 0.9) * rng.standard_normal(hop)
        seg, zi = lfilter([gains[i]], coeffs[i], exc, zi=zi)
        out[k * hop:(k + 1) * hop] = seg
    out = lfilter([1.0], [1.0, -0.97], out)
    out = out[: int(total * sr)]
    peak = np.max(np.abs(out)) if out.size else 1.0
    out = (out / max(peak, 1e-6) * 0.8).astype(np.float32)
    return Song(out, sr, new_ph, notes)


def _pitch_track(notes: list[Note], t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """f0 in Hz: notes with 40 ms portamento, vibrato that sets in on held notes, slight jitter."""
    midi = np.full(len(t), notes[0].midi)
    vib = np.zeros(len(t))
    rate, depth = rng.uniform(4.8, 6.5), rng.uniform(0.2, 0.6)
    for n in notes:
        sel = (t >= n.start) & (t < n.end)
        midi[sel] = n.midi
        x = t[sel] - n.start
        vib[sel] = depth * np.clip((x - 0.25) / 0.3, 0, 1) * np.sin(2 * np.pi * rate * x)
    if len(t) > 1:
        k = max(1, int(0.04 / (t[1] - t[0])))
        midi = np.convolve(np.pad(midi, (k, k), mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid")
    jitter = np.convolve(rng.standard_normal(len(t)), np.ones(20) / 20, "same") * 0.08
    return 440.0 * 2.0 ** ((midi + vib + jitter - 69.0) / 12.0)
