"""`talkcam bench --stage call`: the onset detectors on signals with known onsets, and one short run between
the virtual devices (the synced microphone must bring the voice much closer to the picture than the raw
microphone)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from engine.eval.callbench import RATE, audio_onsets, call_signal, video_onsets

from .conftest import REPO


def test_video_onset_is_interpolated_between_frames():
    times = np.arange(0, 4, 0.04)
    mouth = np.where(times >= 2.0, 10.0, 0.0)
    mouth[times >= 2.0] = np.minimum(10.0, (times[times >= 2.0] - 2.0 + 0.04) * 100)  # opens over ~0.1 s
    got = video_onsets(times, mouth, [2.0])[0]
    # level 0.3 of 0->10: mouth 3 is reached at t = 2.0 + 0.03 - 0.04 + ... (linear ramp), between two frames
    assert abs(got - (2.0 - 0.04 + 0.03)) < 1e-6
    assert video_onsets(times, np.zeros_like(times), [2.0]) == [None]  # a mouth that never moves: no onset


def test_audio_onset_to_the_sample():
    x = np.zeros(RATE * 2, np.float32)
    x[RATE: RATE + RATE // 2] = 0.5 * np.sin(2 * np.pi * 300 * np.arange(RATE // 2) / RATE)
    times = 50.0 + np.arange(len(x)) / RATE
    got = audio_onsets(times, x, [51.0])[0]
    assert abs(got - 51.0) < 0.004  # the 5 ms envelope


def test_call_signal_onsets_are_where_the_voice_starts():
    sig, onsets = call_signal(bursts=3)
    assert len(onsets) == 3
    for o in onsets:
        assert np.abs(sig[o - RATE // 2: o - RATE // 100]).max() < 1e-6  # silence before
        assert np.abs(sig[o: o + RATE // 20]).max() > 0.05  # voice right after


def test_call_bench_syncs_the_voice_to_the_picture(tmp_path, session_cache):
    """The whole chain between virtual devices, 256x256, 5 bursts."""
    code = ("import json, sys; from pathlib import Path; from engine.eval.callbench import bench_call; "
            "from engine.render.renderer import RendererConfig; from engine.runtime.config import SessionConfig; "
            "from engine import paths; "
            f"r = bench_call(paths.default_portrait(), RendererConfig(size=(256, 256)), SessionConfig(), bursts=5, "
            f"cache_dir=Path({str(session_cache)!r})); print(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bursts_detected"] >= 4, r
    assert r["camera_frames"] > 100
    # without the synced microphone the voice leads the picture by the whole frame latency...
    assert r["unsynced_av_offset_ms_p50"] < -0.5 * r["mic_to_frame_ms_p50"], r
    # ...with it, the offset is a fraction of that (the target, |p95| <= 30 ms, is measured by the bench on an
    # idle machine; on a loaded 2-core runner the frame latency grows during the run and the voice follows late)
    assert abs(r["av_offset_ms_p50"]) < 0.5 * abs(r["unsynced_av_offset_ms_p50"]), r
    # the voice is held back by about the frame latency (the delay follows the last 3 s, the p50 spans the
    # whole run, so on a slow runner the two part: only the order of magnitude is checked)
    assert 0.5 * r["mic_to_frame_ms_p50"] < r["synced_mic_delay_ms"] < 4 * r["mic_to_frame_ms_p95"] + 100, r
