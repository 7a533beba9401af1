"""Fixtures for the streaming runtime: one engine (student + a 256x256 renderer with refiner) per session,
a registered pyvirtualcam test backend, virtual microphones (ALSA file plugin, PulseAudio)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "assets" / "samples" / "hello.wav"


@pytest.fixture(scope="session")
def engine(session_cache):
    from engine.render.renderer import RendererConfig
    from engine.runtime.live import AvatarEngine

    return AvatarEngine(RendererConfig(size=(256, 256)), cache_dir=session_cache)


@pytest.fixture(scope="session")
def avatar(engine):
    from engine import paths

    return engine.avatar(paths.default_portrait())


class RecordingCamera:
    """A pyvirtualcam backend that keeps what it receives: frame count, shape, send times, a few frames."""

    instances: list[RecordingCamera] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "talkcam-test-cam"
        self.times: list[float] = []
        self.sums: list[int] = []
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingCamera.instances.append(self)

    def send(self, frame):
        self.times.append(time.monotonic())
        self.sums.append(int(frame[:: 97].sum()))
        if len(self.frames) < 200:
            self.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self):
        self.closed = True

    def device(self):
        return self._device

    def native_fourcc(self):
        return self.fourcc


@pytest.fixture
def test_camera():
    import pyvirtualcam

    RecordingCamera.instances.clear()
    pyvirtualcam.register_backend("talkcam-test", RecordingCamera)
    yield RecordingCamera
    pyvirtualcam.camera.BACKENDS.pop("talkcam-test", None)


def write_asound_conf(folder: Path, raw: Path | None = None, pulse_source: str | None = None) -> Path:
    """An ALSA configuration adding virtual microphones: `talkcam_file` (the file plugin replaying `raw`,
    48 kHz stereo S16) and `talkcam_vmic` (a PulseAudio source)."""
    conf = folder / "asound.conf"
    text = ""
    if raw is not None:
        text += f"""
pcm.talkcam_file {{
  type plug
  slave {{ pcm talkcam_file_raw format S16_LE rate 48000 channels 2 }}
  hint {{ show on description "talkcam test microphone (file)" }}
}}
pcm.talkcam_file_raw {{
  type file
  slave.pcm "null"
  file "/dev/null"
  infile "{raw}"
  format "raw"
}}
"""
    if pulse_source is not None:
        from engine.audio.pulse import alsa_pulse_pcm

        text += alsa_pulse_pcm("talkcam_vmic", pulse_source)
    conf.write_text(text)
    return conf


def use_alsa_conf(monkeypatch, conf: Path) -> None:
    from engine.audio.mic import rescan

    monkeypatch.setenv("ALSA_CONFIG_PATH", f"/usr/share/alsa/alsa.conf:{conf}")
    rescan()


@pytest.fixture
def pulse(tmp_path, monkeypatch):
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.fail("pulseaudio and pulseaudio-utils are needed (installers/setup.sh installs them)")
    folder = Path("/tmp") / f"talkcam-pulse-{os.getpid()}-{time.monotonic_ns()}"  # a short socket path
    folder.mkdir()
    from engine.audio.pulse import PrivatePulse

    server = PrivatePulse(folder)
    server.start()
    for k in ("PULSE_SERVER", "PULSE_RUNTIME_PATH"):
        monkeypatch.setenv(k, server.env[k])
    use_alsa_conf(monkeypatch, write_asound_conf(tmp_path, pulse_source="talkcam_mic"))
    yield server
    server.kill()
    shutil.rmtree(folder, ignore_errors=True)
