"""Sinks: the virtual camera (a registered pyvirtualcam test backend), the recorder read back with PyAV
(streams, durations, A/V offset), a killed process and a full disk, and `talkcam live` stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from engine.audio.sources import FileSource, Piece
from engine.sinks.base import Frame
from engine.sinks.recorder import RecorderSink
from engine.sinks.virtualcam import VirtualCamError, VirtualCamSink, install_hint

from .conftest import SAMPLE, RecordingCamera

REPO = Path(__file__).resolve().parents[2]


def test_virtual_camera_gets_paced_frames(engine, avatar, test_camera):
    cam = VirtualCamSink(size=(320, 240), fps=30, backend="talkcam-test")
    pipe = engine.pipeline_for(FileSource(SAMPLE, 320, realtime=True, max_seconds=3.0), avatar, [cam])
    pipe.run()
    dev = RecordingCamera.instances[-1]
    assert dev.closed and (dev.width, dev.height, dev.fps) == (320, 240, 30)
    assert all(f.shape == (240, 320, 3) for f in dev.frames)
    t = np.array(dev.times)
    rate = (len(t) - 1) / (t[-1] - t[0])
    assert 27 < rate < 33  # its own pace (30 fps), not the engine's 25
    assert cam.repeated > 0.1 * cam.sent  # 30 sends a second from 25 frames: repeats fill the gaps
    assert len(set(dev.sums)) > 20  # the avatar moves
    assert cam.received == pipe.stats.frames == 75


def test_virtual_camera_keeps_sending_when_the_engine_stalls(test_camera):
    cam = VirtualCamSink(backend="talkcam-test", placeholder=np.full((64, 64, 3), 80, np.uint8))
    cam.open((64, 64), 25, 16000)
    time.sleep(0.5)
    cam.write_frame(Frame(0, np.full((64, 64, 3), 200, np.uint8), np.zeros(3), 0.0, 0.0))
    time.sleep(0.5)
    cam.close()
    dev = RecordingCamera.instances[-1]
    vals = [int(f[0, 0, 0]) for f in dev.frames]
    assert 20 <= len(vals) <= 30 and vals[0] == 80 and vals[-1] == 200  # placeholder, then the last frame repeated
    assert vals.count(200) >= 8


def test_missing_virtual_camera_driver_says_what_to_install():
    if any(Path("/dev").glob("video*")):
        pytest.skip("this machine has a video device")
    with pytest.raises(VirtualCamError) as e:
        VirtualCamSink().open((64, 64), 25, 16000)
    assert "v4l2loopback" in str(e.value) and "modprobe" in str(e.value)
    assert "OBS" in install_hint("Windows") and "Virtual Camera" in install_hint("Darwin")


def _marked_frame(i: int, size=(128, 96)) -> np.ndarray:
    return np.full((size[1], size[0], 3), (i * 37) % 200 + 30, np.uint8)


def test_recording_keeps_audio_and_video_in_sync(tmp_path):
    """Recording starts mid-stream (frame 50); a click at frame 80's audio must sit on frame 80's image.
    Blocking, as offline: live, a writer slower than this loop would also drop (and fill) frames."""
    out = tmp_path / "rec.mp4"
    rec = RecorderSink(out, blocking=True)
    rec.open((128, 96), 25, 16000)
    click_frame = 80
    for i in range(0, 150):
        a = np.zeros(640, np.float32)
        if i == click_frame:
            a[:160] = 0.8
        rec.write_audio(Piece(a, i * 640, 0.0))
        if i >= 50 and i not in (60, 61):  # two frames dropped upstream
            img = _marked_frame(i)
            if i == click_frame:
                img[:] = 255
            rec.write_frame(Frame(i, img, np.zeros(3), 0.0, 0.0))
    rec.close()
    assert rec.error is None and rec.frames_filled == 2
    with av.open(str(out)) as c:
        v = [(f.time, f.to_ndarray(format="rgb24")[40, 60, 0]) for f in c.decode(video=0)]
    onset, audio = None, []
    with av.open(str(out)) as c:
        sr = c.streams.audio[0].rate
        for f in c.decode(audio=0):
            x = f.to_ndarray().reshape(-1)
            if onset is None and np.abs(x).max() > 0.3:
                onset = f.time + np.argmax(np.abs(x) > 0.3) / sr  # presentation time of the click
            audio.append(x)
    audio = np.concatenate(audio)
    assert len(v) == 100  # frames 50..149 with the two gaps filled
    v_dur, a_dur = len(v) / 25, len(audio) / sr
    assert abs(v_dur - a_dur) <= 1 / 25 + 1024 / sr  # same length (AAC's priming packet aside)
    flash = [i for i, (_, val) in enumerate(v) if val > 250]
    assert flash == [click_frame - 50]  # the frame stays at its place after the filled gap
    assert abs(onset - v[flash[0]][0]) <= 1 / 25  # A/V offset within one frame


RECORD_SCRIPT = textwrap.dedent("""
    import sys, time, resource, signal
    import numpy as np
    from engine.audio.sources import Piece
    from engine.sinks.base import Frame
    from engine.sinks.recorder import RecorderSink
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "full":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # the disk fills at 150 kB
    rec = RecorderSink(out)
    rec.open((256, 256), 25, 16000)
    rng = np.random.default_rng(0)
    for i in range(100000):
        rec.write_audio(Piece(rng.uniform(-0.3, 0.3, 640).astype(np.float32), i * 640, 0.0))
        img = np.full((256, 256, 3), 60, np.uint8)
        img[:, (i * 7) % 200:(i * 7) % 200 + 40] = 220  # a moving bar: small frames, many fragments
        img[100:110] = rng.integers(0, 255, (10, 256, 3), dtype=np.uint8)
        rec.write_frame(Frame(i, img, np.zeros(3), 0.0, 0.0))
        if mode == "full" and rec.error is not None:
            print("ERROR:", type(rec.error).__name__, rec.error, flush=True)
            rec.close()
            sys.exit(3)
        if i == 120:
            print("ready", flush=True)
        time.sleep(0.01)
""")


def _decodable_frames(path: Path) -> int:
    n = 0
    try:
        with av.open(str(path)) as c:
            for _ in c.decode(video=0):
                n += 1
    except av.error.FFmpegError:
        pass  # a cut-off last fragment ends the file
    return n


def test_killed_process_leaves_a_playable_recording(tmp_path):
    out = tmp_path / "killed.mp4"
    p = subprocess.Popen([sys.executable, "-c", RECORD_SCRIPT, "kill", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert _decodable_frames(out) >= 75  # all but the last (unfinished) second


def test_full_disk_stops_the_recording_with_a_clear_error_and_a_playable_file(tmp_path):
    out = tmp_path / "full.mp4"
    p = subprocess.run([sys.executable, "-c", RECORD_SCRIPT, "full", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 3, p.stderr[-2000:]
    assert "ERROR: RecorderError" in p.stdout and "disk is full" in p.stdout and "stay playable" in p.stdout
    assert out.stat().st_size <= 150_000
    assert _decodable_frames(out) >= 25  # at least the first whole second


def test_live_headless_stops_cleanly_on_ctrl_c(tmp_path):
    out = tmp_path / "live.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([str(REPO / ".venv" / "bin" / "talkcam") if (REPO / ".venv").exists() else "talkcam",
                          "live", "--no-gui", "--audio", str(SAMPLE), "--record", str(out), "--size", "256", "256",
                          "--cache-dir", str(tmp_path / "cache")], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:  # wait until frames flow
        if out.exists() and out.stat().st_size > 20_000:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-3000:]
    assert "Stopping (SIGINT)" in err and "Recorded" in err
    with av.open(str(out)) as c:
        kinds = sorted(s.type for s in c.streams)
        n = sum(1 for _ in c.decode(video=0))
    with av.open(str(out)) as c:
        a = sum(f.samples for f in c.decode(audio=0)) / 16000
    assert kinds == ["audio", "video"] and n >= 50
    assert abs(a - n / 25) <= 1 / 25 + 2 * 1024 / 16000  # one frame + AAC priming and last packet
