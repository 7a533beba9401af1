"""PulseAudio / PipeWire (through pipewire-pulse) plumbing: the synced virtual microphone's devices, a
playback and a record stream, and a private sound server for tests and `talkcam bench --stage call`.

The virtual microphone is two modules that every PulseAudio and PipeWire system has:

    talkcam (delayed voice) ──> null sink "talkcam_synced_out" ──monitor──> remap source "talkcam_synced_mic"
                                                                             (shown as "talkcam Microphone")

Both modules carry `talkcam.pid=<pid>` in their properties. `VirtualMicDevices.create` first removes
modules a crashed talkcam left behind (its pid is gone) and refuses to take over those of another running
talkcam; `remove` unloads them on exit. Control goes through pulsectl (libpulse), audio through the
PulseAudio simple API (pasimple), both thin ctypes bindings of the system's libpulse.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SINK_NAME = "talkcam_synced_out"
SOURCE_NAME = "talkcam_synced_mic"
DESCRIPTION = "talkcam Microphone"
_PID = re.compile(r"talkcam\.pid=(\d+)")


class PulseError(RuntimeError):
    """No PulseAudio/PipeWire sound server to talk to, or it refused; the message says what to do."""


NO_SERVER = ("No PulseAudio or PipeWire sound server is running, so the synced microphone cannot be created. "
             "Start one (most desktops run it already: `systemctl --user start pipewire-pulse` or "
             "`pulseaudio --start`; Debian/Ubuntu: sudo apt install pipewire-pulse, or pulseaudio), or run "
             "without --synced-mic and set the sync offset in OBS instead.")


def _pulsectl():
    try:
        import pulsectl
    except (ImportError, OSError) as exc:  # OSError: libpulse itself is missing
        raise PulseError(f"{NO_SERVER} (libpulse could not be loaded: {exc})") from exc
    return pulsectl


def _client(name: str):
    pulsectl = _pulsectl()
    try:
        return pulsectl.Pulse(name)
    except pulsectl.PulseError as exc:
        raise PulseError(f"{NO_SERVER} ({exc})") from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass
class VirtualMicDevices:
    """The synced microphone's two modules on the user's sound server."""

    sink: str = SINK_NAME
    source: str = SOURCE_NAME
    description: str = DESCRIPTION
    rate: int = 48000
    modules: tuple[int, ...] = ()

    def _ours(self, pulse) -> list:
        """Modules of any talkcam's synced microphone (by their sink/master argument)."""
        keys = (f"sink_name={self.sink} ", f"master={self.sink}.monitor ")
        found = [m for m in pulse.module_list() if any(k in (m.argument or "") + " " for k in keys)]
        return sorted(found, key=lambda m: m.name != "module-remap-source")  # the source first: it needs the sink

    def cleanup_stale(self) -> int:
        """Unload modules a talkcam that is no longer running left behind (after a crash or SIGKILL).
        PulseError when another running talkcam owns them. Returns how many were removed."""
        with _client("talkcam-cleanup") as pulse:
            removed = 0
            for m in self._ours(pulse):
                found = _PID.search(m.argument or "")
                pid = int(found.group(1)) if found else 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise PulseError(f"Another talkcam (process {pid}) is publishing '{self.description}'. "
                                     "Stop it first, or run this one without --synced-mic.")
                log.info("Removing a synced microphone left behind by talkcam process %s (module %d)", pid or "?",
                         m.index)
                if m.index in {x.index for x in pulse.module_list()}:  # a source goes with its sink
                    pulse.module_unload(m.index)
                removed += 1
            return removed

    def create(self) -> None:
        """Remove stale devices, then load the null sink and the remap source (the microphone apps see)."""
        self.cleanup_stale()
        pid = os.getpid()
        desc = self.description.replace("'", "")
        with _client("talkcam") as pulse:
            try:
                sink = pulse.module_load("module-null-sink", (
                    f"sink_name={self.sink} rate={self.rate} channels=1 "
                    f"sink_properties=\"device.description='{desc} (feed)' talkcam.pid={pid}\""))
                try:
                    src = pulse.module_load("module-remap-source", (
                        f"master={self.sink}.monitor source_name={self.source} channels=1 "
                        f"source_properties=\"device.description='{desc}' device.icon_name=audio-input-microphone "
                        f"talkcam.pid={pid}\""))
                except Exception:
                    pulse.module_unload(sink)
                    raise
            except _pulsectl().PulseError as exc:
                raise PulseError(f"The sound server refused to create the synced microphone ({exc}). "
                                 "It needs module-null-sink and module-remap-source (PulseAudio, or "
                                 "PipeWire's pipewire-pulse).") from exc
        self.modules = (sink, src)
        log.info("Virtual microphone '%s' created (source %s)", self.description, self.source)

    def remove(self) -> None:
        """Unload our modules (nothing when none were loaded or the server is gone)."""
        modules, self.modules = self.modules, ()
        if not modules:
            return
        try:
            with _client("talkcam-cleanup") as pulse:
                for index in reversed(modules):  # the source first: it needs the sink
                    if index in {m.index for m in pulse.module_list()}:
                        pulse.module_unload(index)
        except (PulseError, _pulsectl().PulseError) as exc:  # the server went away: nothing of ours is left on it
            log.warning("Could not remove the synced microphone (%s); the next start removes it", exc)
            return
        log.info("Virtual microphone '%s' removed", self.description)

    def exists(self) -> bool:
        with _client("talkcam-check") as pulse:
            return any(s.name == self.source for s in pulse.source_list())


class PulseStream:
    """A float32 mono playback or record stream on one device (PulseAudio's simple API). Playback writes
    block until the server has room, so a writer runs at the device's clock; `latency()` is the audio
    between the stream's write position and the speaker (or, recording, between the microphone and the
    next read)."""

    def __init__(self, device: str, rate: int, record: bool = False, name: str = "talkcam",
                 buffer_ms: float = 40.0, block: int = 480) -> None:
        try:
            import pasimple
        except (ImportError, OSError) as exc:
            raise PulseError(f"{NO_SERVER} (libpulse-simple could not be loaded: {exc})") from exc
        self.rate = rate
        self.record = record
        nbytes = int(rate * buffer_ms / 1000) * 4
        direction = pasimple.PA_STREAM_RECORD if record else pasimple.PA_STREAM_PLAYBACK
        try:
            if record:
                self._s = pasimple.PaSimple(direction, pasimple.PA_SAMPLE_FLOAT32LE, 1, rate, "talkcam", name,
                                            device_name=device, fragsize=block * 4)
            else:
                self._s = pasimple.PaSimple(direction, pasimple.PA_SAMPLE_FLOAT32LE, 1, rate, "talkcam", name,
                                            device_name=device, tlength=nbytes, prebuf=0, minreq=block * 4)
        except pasimple.PaSimpleError as exc:
            raise PulseError(f"Could not open {'recording from' if record else 'playback to'} {device!r} ({exc}). "
                             f"{NO_SERVER if 'Connection' in str(exc) else ''}".strip()) from exc

    def write(self, samples: np.ndarray) -> None:
        self._s.write(np.ascontiguousarray(samples, np.float32).tobytes())

    def read(self, n: int) -> np.ndarray:
        return np.frombuffer(self._s.read(4 * n), np.float32).copy()

    def latency(self) -> float:
        """Seconds (see the class docstring)."""
        return self._s.get_latency() / 1e6

    def close(self) -> None:
        self._s.close()


def alsa_pulse_pcm(name: str, source: str) -> str:
    """ALSA configuration text for a PCM `name` that records from PulseAudio source `source` (how PortAudio,
    which talks to ALSA on Linux, reaches a private server's virtual microphone)."""
    return f"""
pcm.{name} {{
  type pulse
  device "{source}"
  hint {{ show on description "talkcam virtual microphone (PulseAudio)" }}
}}
"""


class PrivatePulse:
    """A private PulseAudio daemon (no user session touched): a null sink `talkcam_speaker` (a virtual
    speaker) whose monitor is remapped as the source `talkcam_mic` (the virtual microphone a test plays
    into). `env` points libpulse (PULSE_SERVER) at it. `kill()` / `start()` make it vanish and return."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
            raise PulseError("The pulseaudio daemon is not installed (Debian/Ubuntu: sudo apt install pulseaudio "
                             "pulseaudio-utils); installers/setup.sh installs it.")
        self.folder = folder
        self.socket = folder / "native"
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "PULSE_SERVER": f"unix:{self.socket}", "PULSE_RUNTIME_PATH": str(folder),
                    "XDG_RUNTIME_DIR": str(folder), "HOME": str(folder)}

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--disable-shm=yes",
             f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1",
             "--load=module-null-sink sink_name=talkcam_speaker rate=48000",
             "--load=module-remap-source master=talkcam_speaker.monitor source_name=talkcam_mic"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            out = subprocess.run(["pactl", "list", "short", "sources"], env=self.env, capture_output=True, text=True)
            if "talkcam_mic" in out.stdout:
                return
            time.sleep(0.1)
        self.kill()
        raise PulseError("The private PulseAudio daemon did not start")

    def play(self, wav: Path) -> subprocess.Popen:
        return subprocess.Popen(["paplay", "-d", "talkcam_speaker", str(wav)], env=self.env)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
