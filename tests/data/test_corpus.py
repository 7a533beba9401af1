"""The data engine: scenarios, augmentation, deterministic and resumable shards, the window dataset."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from torch.utils.data import DataLoader

from engine import motion as M
from engine.audio.features import SILENCE
from engine.audio.io import SAMPLE_RATE
from engine.data import augment as A
from engine.data import text as T
from engine.data.build import BuildConfig, build, make_clip
from engine.data.corpus import read_manifest, read_shard, scenario_clips
from engine.data.dataset import WindowConfig, WindowDataset, window
from engine.data.tts import EspeakTTS, TTSConfig
from engine.data.visemes import viseme_of


@pytest.mark.parametrize("lang", T.LANGUAGES)
def test_every_language_has_real_words_and_speaks(lang):
    words = T.words(lang)
    assert len(words) > 3000
    train, held = set(T.split_words(lang, "train")), set(T.split_words(lang, "heldout"))
    assert train and held and not (train & held)
    s = T.sentence(lang, np.random.default_rng(1), style="statement")
    utt = EspeakTTS(TTSConfig(voice=T.VOICES[lang][0])).synthesize(s.text, s.ssml)
    assert utt.duration > 0.5 and len(utt.phonemes) >= 5
    assert not any(p.ipa.startswith("(") for p in utt.phonemes)  # no language-switch markers


def test_prosody_styles_render_through_ssml():
    rng = np.random.default_rng(3)
    plain = T.sentence("en", rng, style="statement")
    paused = T.sentence("en", np.random.default_rng(3), style="pauses")
    assert paused.ssml and "<break" in paused.text
    tts = EspeakTTS()
    a, b = tts.synthesize(plain.text), tts.synthesize(paused.text, ssml=True)
    assert "<" not in "".join(p.ipa for p in b.phonemes)
    assert b.duration > a.duration  # the breaks add silence


def _pitch(x, sr=SAMPLE_RATE):
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    lo, hi = sr // 1000, sr // 60
    return sr / (lo + np.argmax(ac[lo:hi]))


def test_singing_holds_vowels_on_the_melody():
    clip = make_clip("singing", np.random.default_rng(5), do_augment=False)
    notes = clip.info["notes"]
    assert len(notes) >= 2
    held = [n for n in notes if n[1] - n[0] >= 0.45]
    assert held, notes
    midis = [n[2] for n in notes]
    assert max(midis) - min(midis) >= 3  # a melody, not a monotone
    for a, b, midi in held[:3]:
        mid = (a + b) / 2
        seg = clip.audio[int((mid - 0.04) * SAMPLE_RATE):int((mid + 0.04) * SAMPLE_RATE)]
        f0 = 440 * 2 ** ((midi - 69) / 12)
        est = _pitch(seg)
        cents = 1200 * abs(np.log2(est / f0))
        assert min(cents, abs(cents - 1200)) < 80, (est, f0)
    # the mouth holds its vowel shape through the long note: jaw stays open in its middle half
    a, b, _ = held[0]
    fr = clip.motion[int((a + 0.25 * (b - a)) * 25):int((a + 0.75 * (b - a)) * 25), M.index("jawOpen")]
    assert fr.min() > 0.5 * fr.max() > 0


def test_pose_scenario_reaches_large_turns():
    yaw = [np.abs(make_clip("pose", np.random.default_rng(s), do_augment=False).motion[:, M.index("headYaw")]).max()
           for s in range(4)]
    limit = M.RANGES[M.index("headYaw")][1]
    assert max(yaw) > 0.5 * limit
    speech = [np.abs(make_clip("speech", np.random.default_rng(s), do_augment=False).motion[:, M.index("headYaw")]).max()
              for s in range(4)]
    assert max(yaw) > 2 * max(speech)


def test_hard_scenario_is_fast_and_closes_bilabials():
    clips = [make_clip("hard", np.random.default_rng(s), do_augment=False) for s in range(4)]
    assert all(c.info["tts"]["rate"] >= 230 for c in clips)
    jaw = M.index("jawOpen")
    closures = []
    for c in clips:
        labial = sum(viseme_of(p[0]) in ("PP", "FF") for p in c.info["phonemes"]) / len(c.info["phonemes"])
        assert labial > 0.08
        for ipa, a, b in c.info["phonemes"]:
            if viseme_of(ipa) == "PP":  # the lips must fully close, however fast the speech
                closures.append(c.motion[max(int(a * 25) - 1, 0):int(np.ceil(b * 25)) + 1, jaw].min())
    assert len(closures) >= 5 and max(closures) <= 0.1, closures


def test_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    assert abs(len(A.speed(x, SAMPLE_RATE, 1.1)) - SAMPLE_RATE / 1.1) < 2
    ir = A.room_impulse(SAMPLE_RATE, 0.6, rng)
    tail = np.sum(ir[int(0.05 * SAMPLE_RATE):] ** 2) / np.sum(ir ** 2)
    assert 0.05 < tail < 0.95  # real reverberant energy after the direct path
    n = A.noise(SAMPLE_RATE, SAMPLE_RATE, "pink", rng)
    spec = np.abs(np.fft.rfft(n)) ** 2
    f = np.fft.rfftfreq(len(n), 1 / SAMPLE_RATE)
    assert spec[(f > 100) & (f < 200)].mean() > 5 * spec[(f > 4000) & (f < 5000)].mean()
    c = A.compress(x * np.linspace(0.05, 1, len(x)), SAMPLE_RATE, -30, 8)
    assert np.abs(c[:2000]).max() / np.abs(c[-2000:]).max() > 0.05 / 1.0 * 2  # quiet part lifted relative
    y, factor, rec = A.augment(x, SAMPLE_RATE, np.random.default_rng(11), A.AugmentConfig(
        p_speed=1, p_reverb=0, p_noise=0, p_band=0, p_compress=0))
    assert abs(len(y) * 1.0 / len(x) - factor) < 1e-3 and "speed" in rec


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def test_build_is_deterministic_resumable_and_guarded(tmp_path):
    cfg = BuildConfig(hours=0.008, seed=7, shard_seconds=10, workers=2)
    a, b = tmp_path / "a", tmp_path / "b"
    summary = build(a, cfg)
    assert summary["shards"] == 3 and summary["seconds"] >= 0.008 * 3600
    build(b, BuildConfig(**{**cfg.__dict__, "workers": 1}))
    assert _digest(a) == _digest(b)
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    # resume: one shard lost, one cut short by a crash; only those are rebuilt, identically
    shards = sorted(b.glob("shard-*.safetensors"))
    shards[0].unlink()
    shards[1].write_bytes(shards[1].read_bytes()[:1000])
    build(b, BuildConfig(**{**cfg.__dict__, "workers": 1}))
    assert _digest(a) == _digest(b)
    with pytest.raises(ValueError, match="other settings"):
        build(b, BuildConfig(hours=0.008, seed=8, shard_seconds=10, workers=1))
    rows = read_manifest(a)
    assert len(rows) == summary["clips"] and {r["scenario"] for r in rows} <= {"speech", "singing", "pose", "hard"}
    corpus = json.loads((a / "corpus.json").read_text())
    assert corpus["clips"] == len(rows) and abs(corpus["seconds"] - sum(r["duration"] for r in rows)) < 1e-6
    clip = read_shard(a / rows[0]["shard"])[rows[0]["index"]]
    chosen = scenario_clips(a, (rows[0]["scenario"],), 2)  # by scenario, manifest order, one read per shard
    assert chosen[0][1] == rows[0] and chosen[0][2].info["id"] == clip.info["id"]
    assert len(chosen) == min(2, sum(r["scenario"] == rows[0]["scenario"] for r in rows))
    assert [(p.ipa, p.start, p.end) for p in clip.phonemes] == [tuple(x) for x in clip.info["phonemes"]]
    assert clip.phonemes
    assert clip.mel.shape == (4 * clip.frames, 80) and clip.motion.shape == (clip.frames, M.DIM)
    assert abs(len(clip.audio) / SAMPLE_RATE - clip.frames / 25) < 0.04 + 1e-6


def test_held_out_split_shares_no_voice_or_sentence(tmp_path):
    tr = [make_clip("speech", np.random.default_rng(s), "train") for s in range(6)]
    ho = [make_clip("speech", np.random.default_rng(s), "heldout") for s in range(6)]
    assert not ({c.info["voice"] for c in tr} & {c.info["voice"] for c in ho})
    assert all(T.in_split(c.info["voice"], "heldout") for c in ho)


def test_window_dataset_aligns_audio_with_motion(tmp_path):
    build(tmp_path, BuildConfig(hours=0.004, seed=1, shard_seconds=8, workers=1, scenarios=("speech",)))
    cfg = WindowConfig(frames=20, past=3, lookahead=2, stride=10)
    ds = WindowDataset(tmp_path, cfg, shuffle=True, seed=0)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    n = sum(b["motion"].shape[0] for b in batches)
    assert n > 5
    b = batches[0]
    assert b["mel"].shape[1:] == ((20 + 3 + 2) * 4, 80) and b["motion"].shape[1:] == (20, M.DIM)
    clip = read_shard(tmp_path / read_manifest(tmp_path)[0]["shard"])[0]
    w = window(clip, 0, cfg)
    assert (w["mel"][: 3 * 4] == SILENCE).all()  # before the clip: silence
    np.testing.assert_array_equal(w["mel"][12:16].numpy(), clip.mel[0:4])  # frame 0 owns mel 0..3
    late = window(clip, clip.frames - 5, cfg)
    assert late["valid"].sum() == 5 and (late["mel"][-4:] == SILENCE).all()
