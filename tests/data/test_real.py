"""Real talking clips: the audio/mouth offset is measured (and its sign is right), held-out speakers go
apart with their sound track, and the clip lands in the corpus with motion, log-mel and speech rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.audio.io import SAMPLE_RATE
from engine.data.real import HELDOUT, ingest_real, loudness, measure_sync


def _bursts(seconds: float = 12.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    env = np.zeros(n, np.float32)
    t = 0
    while t < n:
        length = int(rng.uniform(0.08, 0.4) * SAMPLE_RATE)
        env[t:t + length] = rng.uniform(0.2, 1.0)
        t += length + int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    return (env * rng.standard_normal(n)).astype(np.float32) * 0.3


@pytest.mark.parametrize("delay", [-4, 0, 3])
def test_measure_sync_finds_the_mouths_delay(delay):
    audio = _bursts()
    n = len(audio) // 640
    level = loudness(audio, n)
    mouth = np.roll((level - level.min()) / np.ptp(level), delay)  # mouth at t + delay = level at t
    sync = measure_sync(mouth, audio)
    assert sync.lag == delay and sync.z > 3


def test_unrelated_mouth_has_no_sync():
    audio = _bursts(seed=1)
    mouth = np.random.default_rng(2).random(len(audio) // 640)
    assert measure_sync(mouth, audio).z < 2.5


@pytest.mark.slow
def test_ingest_a_heldout_speaker(data_dir, tmp_path):
    from engine.data.corpus import read_manifest, read_shard

    name = "talking/video-retalking__1.mp4"
    assert name in HELDOUT
    report = ingest_real(data_dir / "real", tmp_path, only=("video-retalking__1",))
    (clip_rec,) = report["clips"]
    assert clip_rec["split"] == "heldout" and clip_rec["z"] > 2.5 and abs(clip_rec["lag"]) <= 4
    assert not (tmp_path / "train").exists()  # held-out speakers never reach training
    rows = read_manifest(tmp_path / "heldout")
    (clip,) = read_shard(tmp_path / "heldout" / rows[0]["shard"])
    assert clip.info["scenario"] == "real" and clip.frames > 140
    assert clip.mel.shape == (4 * clip.frames, 80) and clip.speech.shape == (2 * clip.frames, 384)
    assert np.ptp(clip.motion[:, 0]) > 0.1  # the jaw moves
    assert (tmp_path / "heldout" / "video-retalking__1.wav").stat().st_size > 2 * SAMPLE_RATE * 5
    assert json.loads((tmp_path / "report.json").read_text())["clips"][0]["name"] == "video-retalking__1"
