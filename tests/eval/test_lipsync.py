"""The lip-sync, identity and stability metrics on RENDERED frames can tell good from bad.

Real clip: the speaker of sun_video is retargeted onto a portrait (motion fitted from her landmarks,
in time with sun_audio); the rendered mouth re-detected on our frames must follow her mouth curve;
the same performance 5 frames late (audio shifted by 5 frames) and a frozen mouth must score clearly
worse. TTS: against phoneme ground truth, likewise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import motion as M
from engine.data.ingest import fit_motion, track_face
from engine.eval.evaluate import EvalConfig, Evaluator, motion_for
from engine.face.tracking import mouth_opening

MOUTH = [M.index(n) for n in M.EXPRESSIONS if n.startswith(("jaw", "mouth"))]


@pytest.fixture(scope="module")
def evaluator(landmarker):
    return Evaluator(EvalConfig(size=(256, 256)), landmarker=landmarker)


@pytest.fixture(scope="module")
def framed256(evaluator, portraits_dir, session_cache):
    return evaluator.frame(portraits_dir / "lp_s42.jpg", session_cache)


def _late(motion, k):
    return np.concatenate([np.repeat(motion[:1], k, 0), motion[:-k]])


def _frozen(motion):
    """A still avatar (mouth and head frozen: head nods alone correlate with speech loudness)."""
    return np.repeat(motion.mean(0, keepdims=True), len(motion), 0)


@pytest.fixture(scope="module")
def framed_closed(evaluator, portraits_dir, session_cache):
    """A portrait whose lips are closed at rest (lp_s42's are parted, and the renderer cannot yet close a
    parted mouth completely: see the bilabial closure baseline)."""
    return evaluator.frame(portraits_dir / "happy.png", session_cache)


@pytest.mark.slow
def test_sun_clip_correct_alignment_beats_shifted_and_frozen(evaluator, framed256, data_dir, landmarker):
    n = 300  # 12 s
    tr = track_face(data_dir / "real" / "sun_video.mp4", landmarker, n)
    reference = mouth_opening(tr.landmarks)
    motion, _ = fit_motion(tr)
    from engine.audio.io import load_audio

    audio = load_audio(data_dir / "real" / "sun_audio.wav")
    scores = {}
    for name, mo in (("aligned", motion), ("shifted5", _late(motion, 5)), ("frozen", _frozen(motion))):
        m = evaluator.measure(evaluator.render(framed256, mo), framed256.frame, framed256.landmarks)
        scores[name] = evaluator.score(m, audio, reference_mouth=reference)["lipsync_reference"]
    good, shifted, frozen = scores["aligned"], scores["shifted5"], scores["frozen"]
    assert good["r0"] > 0.45 and abs(good["offset"]) <= 1, scores
    assert good["r0"] - shifted["r0"] > 0.3 and abs(shifted["offset"] - 5) <= 1, scores
    assert abs(frozen["r0"]) < 0.2, scores  # a still mouth: only mesh noise (0.15 with the structured mouth)


@pytest.mark.slow
def test_tts_lipsync_closure_identity_and_report(evaluator, framed_closed, tmp_path, portraits_dir, session_cache):
    from engine.audio.io import SAMPLE_RATE, resample
    from engine.data.tts import EspeakTTS

    utt = EspeakTTS().synthesize("Bob bought a big map, and mama made a pie. Peter picked more plums in May.")
    audio = resample(utt.audio, utt.sample_rate, SAMPLE_RATE)
    n = int(np.ceil(len(audio) / SAMPLE_RATE * 25))
    motion = motion_for("procedural", audio, n, utt.phonemes)
    res = {}
    for name, mo in (("good", motion), ("late", _late(motion, 5)), ("frozen", _frozen(motion))):
        m = evaluator.measure(evaluator.render(framed_closed, mo), framed_closed.frame, framed_closed.landmarks)
        res[name] = evaluator.score(m, audio, utt.phonemes)
    good = res["good"]
    g, late = good["lipsync_tts"], res["late"]["lipsync_tts"]
    assert g["r"] > 0.55 and -2 <= g["offset"] <= 0, good  # mouths lead their sound a little (anticipation)
    assert late["offset"] - g["offset"] in (4, 5, 6) and g["r0"] - late["r0"] > 0.3, res
    assert abs(res["frozen"]["lipsync_tts"]["r0"]) < 0.2
    assert good["bilabials"] >= 8 and good["bilabial_closure"] > res["frozen"]["bilabial_closure"]
    # identity: the rendered face stays the portrait's person, and is far from another person
    assert good["identity"]["mean"] < 0.35 and good["identity"]["same_person_share"] == 1.0
    other = evaluator.frame(portraits_dir / "monalisa.png", session_cache)
    e_other = evaluator.identity.embed(other.frame, other.landmarks)
    e_self = evaluator.identity.embed(framed_closed.frame, framed_closed.landmarks)
    assert evaluator.identity.distance(e_other, e_self) > 0.6
    assert good["stability"]["stuck_open"] < 0.05 and good["stability"]["jitter_iod"] < 0.05


@pytest.mark.slow
def test_cli_eval_writes_the_report(tmp_path, portraits_dir, session_cache):
    from engine.cli import main

    out = tmp_path / "rep"
    rc = main(["eval", "--text", "Hello, my name is Paul and I am a painter.", "--portrait",
               str(portraits_dir / "lp_s42.jpg"), "--out", str(out), "--size", "256", "256",
               "--cache-dir", str(session_cache)])
    assert rc == 0
    r = json.loads((out / "result.json").read_text())
    assert r["lipsync_tts"]["r"] > 0.4 and 0 <= r["identity"]["mean"] < 0.5
    for f in ("report.md", "mouth.png", "stability.png", "series.json", "speech.wav"):
        assert (out / f).stat().st_size > 100
    assert "lip sync vs phonemes" in (out / "report.md").read_text()
    rc = main(["eval", "--portrait", str(portraits_dir / "lp_s42.jpg"), "--out", str(out)])
    assert rc == 2  # neither --audio, --text nor --corpus
