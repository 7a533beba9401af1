"""`talkcam data build`: a deterministic, resumable, sharded corpus from TTS, per scenario.

Each shard is one unit of work, fully determined by (seed, split, shard number), so shards can be
built in any order by any number of worker processes and an interrupted build resumes where it
stopped: finished shards are kept, the rest are (re)built. Scenarios:
  speech   espeak-ng in 7+ languages, many voices and variants, varied prosody
  singing  sustained vowels on melodies (engine.data.singing), wide pitch range, vibrato
  pose     speech with large head turns and nods up to the renderer's limits
  hard     fast speech, tongue twisters, bilabial/labiodental-dense text
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from engine.audio.features import MelConfig, log_mel
from engine.audio.io import FPS, SAMPLE_RATE, resample
from engine.data import text as T
from engine.data.animator import AnimatorConfig, ProceduralAnimator
from engine.data.augment import AugmentConfig, augment, speed
from engine.data.corpus import Clip, shard_name, shard_records, viseme_index, write_manifest, write_shard
from engine.data.singing import sing
from engine.data.tts import EspeakTTS, Phoneme, TTSConfig, TTSError
from engine.data.visemes import viseme_of

log = logging.getLogger(__name__)

BUILD_SCENARIOS = ("speech", "singing", "pose", "hard")
LANGUAGE_WEIGHTS = {"en": 0.4, "de": 0.1, "fr": 0.1, "es": 0.1, "ru": 0.1, "zh": 0.1, "ja": 0.1}
_HIGH_VARIANTS = {"f1", "f2", "f3", "f4", "f5", "whisperf", "anika", "belinda", "grandma", "linda", "steph"}


@dataclass
class BuildConfig:
    """What to build."""

    hours: float = 1.0
    """Total audio to generate, in hours."""
    scenarios: tuple[str, ...] = BUILD_SCENARIOS
    """Scenarios to mix in equal shares."""
    seed: int = 0
    split: str = "train"
    """train, or heldout: voices and words that training never sees."""
    shard_seconds: float = 120.0
    """Audio per shard (the unit of work and of resuming)."""
    workers: int = 0
    """Worker processes (0 = one per CPU core)."""
    augment: bool = True
    """Microphone-style audio augmentation."""
    languages: tuple[str, ...] = tuple(LANGUAGE_WEIGHTS)


@dataclass
class _Job:
    shard: int
    seconds: float
    config: BuildConfig
    mel: MelConfig = field(default_factory=MelConfig)


def _pick_voice(language: str, rng: np.random.Generator, split: str) -> str:
    for _ in range(200):
        base = T.VOICES[language][rng.integers(len(T.VOICES[language]))]
        variant = T.VARIANTS[rng.integers(len(T.VARIANTS))]
        vid = f"{base}+{variant}"
        if T.in_split(vid, split):
            return vid
    raise RuntimeError(f"no {split} voice for {language}")


def _frame_visemes(phonemes: list[Phoneme], n: int) -> np.ndarray:
    out = np.full(n, viseme_index("sil"), np.int8)
    for ph in phonemes:
        a, b = int(math.floor(ph.start * FPS + 0.5)), int(math.floor(ph.end * FPS + 0.5))
        out[max(a, 0):min(max(b, a + 1), n)] = viseme_index(viseme_of(ph.ipa))
    return out


def make_clip(scenario: str, rng: np.random.Generator, split: str = "train", do_augment: bool = True,
              languages: tuple[str, ...] = tuple(LANGUAGE_WEIGHTS), mel: MelConfig | None = None) -> Clip:
    """One clip of `scenario`, fully determined by the generator's state."""
    langs = [lang for lang in LANGUAGE_WEIGHTS if lang in languages]
    w = np.array([LANGUAGE_WEIGHTS[lang] for lang in langs])
    language = str(rng.choice(langs, p=w / w.sum()))
    if scenario == "hard" and "en" in langs and rng.random() < 0.7:
        language = "en"
    voice = _pick_voice(language, rng, split)
    anim = AnimatorConfig(seed=int(rng.integers(2**31)), blink_interval=float(rng.uniform(2.5, 6.0)),
                          head_motion=float(rng.uniform(0.4, 1.4)))
    tts = TTSConfig(voice=voice, rate=int(rng.integers(135, 215)), pitch=int(rng.integers(25, 75)),
                    pitch_range=int(rng.integers(20, 90)))
    notes = None
    if scenario == "hard":
        sent = T.hard_sentence(rng, split, language)
        tts.rate = int(rng.integers(230, 340))
        anim.anticipation = 0.03
    else:
        sent = (T.sentence(language, rng, split, style="statement", max_words=5) if scenario == "singing"
                else T.sentence(language, rng, split))
    if scenario == "singing":
        tts.rate, tts.pitch_range = int(rng.integers(110, 150)), 0
    try:
        utt = EspeakTTS(tts).synthesize(sent.text, sent.ssml)
    except TTSError as exc:
        raise RuntimeError(f"espeak-ng failed on voice {voice}: {exc}") from exc
    audio = resample(utt.audio, utt.sample_rate, SAMPLE_RATE)
    phonemes = utt.phonemes
    if scenario == "singing":
        base = 55.0 if voice.split("+")[1] in _HIGH_VARIANTS else 43.0
        span = float(rng.uniform(12, 24))
        song = sing(audio, SAMPLE_RATE, phonemes, rng, low=base + rng.uniform(-3, 3),
                    high=base + span)
        audio, phonemes = song.audio, song.phonemes
        notes = [[round(n.start, 3), round(n.end, 3), round(n.midi, 2)] for n in song.notes]
        anim.articulation = 1.15
    if scenario == "pose":
        anim.head_turns = float(rng.uniform(8, 24))
        anim.head_motion = float(rng.uniform(1.0, 1.8))
    # rate/pitch change first (it moves the labels), then the microphone chain on a copy
    factor = 1.0
    rec: dict = {}
    if do_augment and rng.random() < 0.4:
        f = float(rng.uniform(0.88, 1.12))
        audio, factor = speed(audio, SAMPLE_RATE, f), 1.0 / f
        rec["speed"] = round(f, 4)
        phonemes = [Phoneme(p.ipa, p.start * factor, p.end * factor) for p in phonemes]
        if notes:
            notes = [[round(a * factor, 3), round(b * factor, 3), m] for a, b, m in notes]
    n_frames = max(1, int(math.ceil(len(audio) / SAMPLE_RATE * FPS)))
    motion = ProceduralAnimator(anim).animate(phonemes, n_frames, FPS, audio, SAMPLE_RATE)
    heard = audio
    if do_augment:
        heard, _, more = augment(audio, SAMPLE_RATE, rng, AugmentConfig(p_speed=0.0))
        rec.update(more)
    info = {
        "scenario": scenario, "language": language, "voice": voice, "style": sent.style, "text": sent.text,
        "duration": round(len(heard) / SAMPLE_RATE, 4), "frames": n_frames, "augment": rec,
        "phonemes": [[p.ipa, round(p.start, 4), round(p.end, 4)] for p in phonemes],
        "tts": asdict(tts), "animator": asdict(anim),
    }
    if notes:
        info["notes"] = notes
    return Clip(audio=heard, mel=log_mel(heard, mel, n_frames), motion=motion,
                viseme=_frame_visemes(phonemes, n_frames), info=info)


def build_shard(job: _Job, out: Path) -> list[dict]:
    cfg = job.config
    rng = np.random.default_rng([cfg.seed, job.shard, 0 if cfg.split == "train" else 1])
    clips, total, i = [], 0.0, 0
    while total < job.seconds:
        scenario = cfg.scenarios[int(rng.integers(len(cfg.scenarios)))]
        clip = make_clip(scenario, rng, cfg.split, cfg.augment, cfg.languages, job.mel)
        clip.info["id"] = f"{cfg.split}-s{cfg.seed}-{job.shard:05d}-{i:03d}"
        clips.append(clip)
        total += clip.info["duration"]
        i += 1
    write_shard(out / shard_name(job.shard), clips)
    return [c.info for c in clips]


def _worker(job: _Job, out: str) -> list[dict]:
    return build_shard(job, Path(out))


def build(out: Path, config: BuildConfig, progress=None) -> dict:
    """Build (or resume) the corpus in `out`; returns the corpus summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for s in config.scenarios:
        if s not in BUILD_SCENARIOS:
            raise ValueError(f"unknown scenario {s!r}; choose from {', '.join(BUILD_SCENARIOS)}")
    if config.split not in ("train", "heldout"):
        raise ValueError("split must be 'train' or 'heldout'")
    for lang in config.languages:
        T.split_words(lang, config.split)  # fail early, with the package to install, if a word list is missing
    args = {k: v for k, v in asdict(config).items() if k != "workers"}
    args["scenarios"], args["languages"] = list(config.scenarios), list(config.languages)
    _check_same_build(out, args)
    total = config.hours * 3600
    n = max(1, math.ceil(total / config.shard_seconds - 1e-9))
    jobs = [_Job(k, min(config.shard_seconds, total - k * config.shard_seconds), config) for k in range(n)]
    todo = [job for job in jobs if shard_records(out / shard_name(job.shard)) is None]
    done = n - len(todo)
    if done:
        log.info("resuming: %d of %d shards already built", done, n)
    (out / "build.json").write_text(json.dumps(args, indent=2), "utf-8")
    workers = config.workers or os.cpu_count() or 1
    task = progress.add_task("shards", total=n, completed=done) if progress else None
    if todo:
        # every shard is built in a fresh process: espeak-ng keeps state between utterances, so a shard
        # is only reproducible when its process has synthesised nothing before it
        if sys.version_info < (3, 11):  # ProcessPoolExecutor's max_tasks_per_child came in Python 3.11
            raise RuntimeError("Building a corpus needs Python 3.11 or newer (a fresh process per shard).")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn"),
                                 max_tasks_per_child=1) as ex:
            futures = [ex.submit(_worker, job, str(out)) for job in todo]
            for fut in as_completed(futures):
                fut.result()  # re-raises a worker's exception here
                if progress:
                    progress.advance(task)
    return write_manifest(out, args)


def _check_same_build(out: Path, args: dict) -> None:
    f = out / "build.json"
    if f.exists():
        old = json.loads(f.read_text("utf-8"))
        diff = {k for k in set(old) | set(args) if k != "hours" and old.get(k) != args.get(k)}
        if diff:
            raise ValueError(f"{out} holds a corpus built with other settings ({', '.join(sorted(diff))}); "
                             "use a new --out folder (or delete that one) to build with these.")
