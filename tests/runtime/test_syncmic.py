"""The synced virtual microphone: the delay line (exact delay, smooth glides, resync), the real PulseAudio
devices (created, carrying the delayed voice, removed on exit and after SIGKILL), and clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from engine.sinks.syncmic import BLOCK, DelayLine, SyncedMicError, SyncedMicSink, frame_delay

RATE = 48000


def _run_line(line: DelayLine, signal_in: np.ndarray, block: int = BLOCK, delay_changes: dict | None = None,
              t0: float = 100.0) -> np.ndarray:
    """Push `signal_in` in blocks captured at t0 + k/RATE and pull the output as a device would (each block
    plays as soon as it is pulled, at the same clock)."""
    out = []
    for i in range(0, len(signal_in), block):
        line.push(signal_in[i:i + block], t0 + (i + block) / RATE)
        if delay_changes and i in delay_changes:
            line.set_delay(delay_changes[i])
        out.append(line.pull(block, t0 + (i + block) / RATE))
    return np.concatenate(out)


def test_delay_line_plays_the_voice_exactly_the_delay_later():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(RATE * 2).astype(np.float32) * 0.1
    line = DelayLine(RATE, delay=0.1)
    y = _run_line(line, x)
    # output sample j plays at t0 + (j + BLOCK) / RATE and input sample m was captured at t0 + (m + 1) / RATE:
    # y[j] = x[j + BLOCK - 1 - delay] (ratio exactly 1: the samples pass unchanged)
    s = int(round(0.1 * RATE)) - BLOCK + 1
    np.testing.assert_allclose(y[s:], x[: len(x) - s], atol=1e-5)
    assert abs(line.played_delay - 0.1) < 1e-6


def test_delay_line_glides_to_a_new_delay_without_clicks():
    t = np.arange(RATE * 8) / RATE
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # steady voice: the slow (0.5%) limit applies
    line = DelayLine(RATE, delay=0.1)
    changes = {RATE: 0.115}  # 15 ms more after 1 s (a smaller change than a resync)
    delays = []
    out = []
    for i in range(0, len(x), BLOCK):
        line.push(x[i:i + BLOCK], 100.0 + (i + BLOCK) / RATE)
        if i in changes:
            line.set_delay(changes[i])
        out.append(line.pull(BLOCK, 100.0 + (i + BLOCK) / RATE))
        delays.append(line.played_delay)
    y = np.concatenate(out)
    steady = y[RATE // 2:]
    # no click: a 220 Hz sine at 0.5 never steps more than 2*pi*220/48000*0.5 ≈ 0.0144 per sample (+ margin)
    assert np.abs(np.diff(steady)).max() < 0.02
    delays = np.array(delays)
    assert line.resyncs == 0
    assert abs(delays[-1] - 0.115) < 0.003  # reached the new delay
    per_second = np.abs(np.diff(delays)).max() * RATE / BLOCK
    assert per_second <= 0.0051  # at most 0.5% speed while the voice is heard


def test_delay_line_moves_faster_in_pauses_and_resyncs_after_a_stall():
    x = np.zeros(RATE * 3, np.float32)  # a pause: up to 4% speed
    line = DelayLine(RATE, delay=0.1)
    _run_line(line, x[: RATE // 2])
    line.set_delay(0.2)  # 100 ms more (< resync threshold)
    out = []
    for i in range(RATE // 2, len(x), BLOCK):
        line.push(x[i:i + BLOCK], 100.0 + (i + BLOCK) / RATE)
        out.append(line.pull(BLOCK, 100.0 + (i + BLOCK) / RATE))
        if abs(line.played_delay - 0.2) < 0.003:
            break
    took = len(out) * BLOCK / RATE
    assert took < 3.0, took  # 100 ms in under 3 s (0.5% would need 20 s)
    line.set_delay(1.0)  # a jump past the resync threshold: at once
    line.push(np.zeros(BLOCK, np.float32), 200.0)
    line.pull(BLOCK, 200.0)
    assert line.resyncs == 1 and abs(line.played_delay - 1.0) < 1e-3


def test_frame_delay_is_centre_to_centre():
    from engine.sinks.base import Frame

    f = Frame(0, np.zeros((2, 2, 3), np.uint8), np.zeros(3), captured=10.0, needed=10.1, out=10.2)
    assert frame_delay(10.25, f, 25) == pytest.approx(0.25 + 0.04)


def _sources(env) -> str:
    return subprocess.run(["pactl", "list", "short", "sources"], env=env, capture_output=True, text=True).stdout


def _modules(env) -> str:
    return subprocess.run(["pactl", "list", "short", "modules"], env=env, capture_output=True, text=True).stdout


def test_synced_mic_appears_carries_the_delayed_voice_and_is_removed(pulse):
    from engine.audio.pulse import SOURCE_NAME, PulseStream
    from engine.sinks.base import Frame

    sink = SyncedMicSink(initial_delay=0.3)
    sink.open((64, 64), 25, 48000, 1)
    try:
        assert sink.output.flowing.wait(5)
        listing = subprocess.run(["pactl", "list", "sources"], env=pulse.env, capture_output=True, text=True).stdout
        assert SOURCE_NAME in _sources(pulse.env)
        assert "talkcam Microphone" in listing
        rec = PulseStream(SOURCE_NAME, RATE, record=True, name="test reader")
        got: list[tuple[np.ndarray, float]] = []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                block = rec.read(BLOCK)
                got.append((block, time.monotonic() - rec.latency()))  # capture time of the block's last sample

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        # a voice: 0.3 s of tone after 1 s of silence, captured "now" in 20 ms pieces
        from engine.audio.sources import Piece

        x = np.zeros(int(2.5 * RATE), np.float32)
        x[RATE: RATE + int(0.3 * RATE)] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(0.3 * RATE)) / RATE)
        t0 = time.monotonic()
        piece = RATE // 50
        onset_captured = None
        for i in range(0, len(x), piece):
            due = t0 + (i + piece) / RATE
            time.sleep(max(0.0, due - time.monotonic()))
            sink.write_audio(Piece(x[i:i + piece][::3].copy(), i // 3, due, x[i:i + piece, None].copy()))
            if i == RATE:
                onset_captured = due - piece / RATE
            # frames shown 250 ms after their audio: the voice must follow 250 + 40 ms later
            if i % (2 * piece) == 0 and i:
                sink.frame_shown(Frame(i // 1920, np.zeros((1, 1, 3), np.uint8), np.zeros(3), due, due), due + 0.25)
        time.sleep(0.8)
        stop.set()
        th.join(timeout=2)
        rec.close()
    finally:
        sink.close()
    audio = np.concatenate([b for b, _ in got])
    ends = np.concatenate([t - (np.arange(len(b))[::-1]) / RATE for b, t in got])
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    assert len(loud), "the voice never came through the synced microphone"
    onset_out = ends[loud[0]]
    delay = onset_out - onset_captured
    assert abs(delay - 0.29) < 0.03, delay  # the measured delay (250 ms + centre of a 40 ms frame)
    assert abs(sink.delay_ms - 290) < 5
    assert SOURCE_NAME not in _sources(pulse.env)  # removed on close
    assert "talkcam_synced" not in _modules(pulse.env)


CHILD = """
import time
from engine.audio.pulse import VirtualMicDevices
VirtualMicDevices().create()
print("ready", flush=True)
time.sleep(60)
"""


def test_devices_left_by_a_killed_talkcam_are_removed_at_the_next_start(pulse):
    from engine.audio.pulse import SOURCE_NAME, PulseError, VirtualMicDevices

    child = subprocess.Popen([sys.executable, "-c", CHILD], env=pulse.env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        # while it runs, it owns the microphone: another talkcam is refused with the reason
        with pytest.raises(PulseError, match=f"process {child.pid}"):
            VirtualMicDevices().create()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert SOURCE_NAME in _sources(pulse.env)  # a crash leaves it behind...
        devices = VirtualMicDevices()
        devices.create()  # ...and the next start cleans it up and makes its own
        assert _modules(pulse.env).count("talkcam_synced_out") == 2  # one sink + one remap source
        assert f"talkcam.pid={os.getpid()}" in _modules(pulse.env)
        devices.remove()
        assert SOURCE_NAME not in _sources(pulse.env)
    finally:
        child.kill()


def test_no_sound_server_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/nothing-here")
    sink = SyncedMicSink()
    from engine.sinks.syncmic import PulseMicOutput

    sink.output = PulseMicOutput()
    with pytest.raises(SyncedMicError, match="No PulseAudio or PipeWire sound server"):
        sink.open((64, 64), 25, 16000, 1)


def test_windows_and_macos_name_the_cable_to_install():
    from engine.sinks.syncmic import install_hint, mic_name_for_apps

    assert "VB-CABLE" in install_hint("Windows") and "CABLE Output" in install_hint("Windows")
    assert "BlackHole" in install_hint("Darwin")
    assert mic_name_for_apps("Windows") == "CABLE Output" and mic_name_for_apps("Linux") == "talkcam Microphone"
