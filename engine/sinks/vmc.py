"""VTuber output: every frame's motion as VMC protocol messages (OSC over UDP), so 3D rigs in VSeeFace,
VNyan, Warudo, VMagicMirror or VTube Studio can be driven by the voice.

Per frame, one OSC bundle, as a VMC performer sends it to a marionette (default port 39539):
- `/VMC/Ext/OK 1` (a model is loaded) and `/VMC/Ext/T <seconds>` (the frame's time on the audio clock);
- `/VMC/Ext/Root/Pos "root" 0 0 0 0 0 0 1` (the avatar stays where the rig put it);
- `/VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw`: the head pose as a rotation (yaw, pitch, roll) in
  Unity's left-handed frame of an avatar facing the camera (`head_quaternion`), plus the small
  translation in metres (an interocular distance taken as 63 mm);
- `/VMC/Ext/Blend/Val <name> <value>` for every blendshape, then `/VMC/Ext/Blend/Apply`:
  - the 26 ARKit expressions under their "perfect sync" clip names (ARKit's names with a capital first
    letter: `JawOpen`, `EyeBlinkLeft`, `MouthSmileRight`, ...), Left/Right being the avatar's own sides;
  - gaze as ARKit's eye-look shapes (`EyeLookOutLeft`, `EyeLookInRight`, `EyeLookUpLeft`, ...);
  - VRM's preset clips for rigs without perfect sync: `Blink_L`, `Blink_R`, `Blink` and the vowel `A`
    (the jaw opening; talkcam's motion has no vowel identity, so I/U/E/O are not sent).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from typing import TYPE_CHECKING

import numpy as np

from engine import motion as M

if TYPE_CHECKING:
    from pythonosc.udp_client import SimpleUDPClient

log = logging.getLogger(__name__)

VMC_PORT = 39539
"""The port VMC marionettes (VSeeFace, VNyan, Warudo, ...) listen on by default."""
IOD_METRES = 0.063
"""Head translation is in interocular distances; a rig gets metres."""


class VmcError(OSError):
    """The VMC target cannot be used; the message says why and what to give instead."""


def parse_target(text: str) -> tuple[str, int]:
    """"HOST:PORT", "HOST" or ":PORT" (host 127.0.0.1, port 39539 when left out)."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port) if port else VMC_PORT
    except ValueError:
        raise VmcError(f"--vmc {text!r}: the port must be a number, e.g. 127.0.0.1:{VMC_PORT}.") from None
    if not 0 < number < 65536:
        raise VmcError(f"--vmc {text!r}: the port must be 1-65535, e.g. 127.0.0.1:{VMC_PORT}.")
    return host, number


def perfect_sync_name(name: str) -> str:
    """talkcam's motion name -> ARKit's perfect-sync clip name ("mouthSmile_L" -> "MouthSmileLeft")."""
    base, side = (name[:-2], {"_L": "Left", "_R": "Right"}[name[-2:]]) if name[-2:] in ("_L", "_R") else (name, "")
    return base[0].upper() + base[1:] + side


BLEND_NAMES: tuple[str, ...] = tuple(perfect_sync_name(n) for n in M.EXPRESSIONS) + (
    "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeLookDownLeft",
    "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight", "EyeLookDownRight",
    "Blink_L", "Blink_R", "Blink", "A")
"""Every blendshape sent, in the order sent."""


def blend_values(motion: np.ndarray) -> list[tuple[str, float]]:
    """(clip name, value in [0, 1]) of one motion vector, in BLEND_NAMES order."""
    m = np.asarray(motion, np.float64)
    expr = [float(np.clip(m[M.index(n)], 0.0, 1.0)) for n in M.EXPRESSIONS]
    gx, gy = float(m[M.index("eyeLookX")]), float(m[M.index("eyeLookY")])
    # image right is the avatar's own left: its left eye looks out (away from the nose), its right eye in
    right, left_, down, up = max(gx, 0.0), max(-gx, 0.0), max(gy, 0.0), max(-gy, 0.0)
    look = [left_, right, up, down,  # left eye: in (toward image left), out, up, down
            right, left_, up, down]  # right eye: in (toward image right), out, up, down
    look = [min(v, 1.0) for v in look]
    blink_l, blink_r = expr[M.EXPRESSIONS.index("eyeBlink_L")], expr[M.EXPRESSIONS.index("eyeBlink_R")]
    presets = [blink_l, blink_r, min(blink_l, blink_r), expr[M.EXPRESSIONS.index("jawOpen")]]
    return list(zip(BLEND_NAMES, expr + look + presets, strict=True))


def head_quaternion(yaw: float, pitch: float, roll: float) -> tuple[float, float, float, float]:
    """talkcam's head angles as a Unity rotation (x, y, z, w) of the avatar's head bone.

    Unity is left-handed, y up, and a humanoid avatar faces +z (toward a camera placed in front of it).
    talkcam: +yaw turns the face toward the image's right (the avatar's own left: a negative rotation about
    y), +pitch nods down (positive about x in Unity), +roll tilts the top of the head toward the image's
    right (the avatar's left: a positive rotation about z). Applied in Unity's order: z, then x, then y."""
    ry, rx, rz = -yaw, pitch, roll
    cy, sy = math.cos(ry / 2), math.sin(ry / 2)
    cx, sx = math.cos(rx / 2), math.sin(rx / 2)
    cz, sz = math.cos(rz / 2), math.sin(rz / 2)
    # q = qy * qx * qz (Unity's Quaternion.Euler)
    w = cy * cx * cz + sy * sx * sz
    x = cy * sx * cz + sy * cx * sz
    y = sy * cx * cz - cy * sx * sz
    z = cy * cx * sz - sy * sx * cz
    return x, y, z, w


def head_angles(q: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """The inverse of `head_quaternion`: (yaw, pitch, roll) in talkcam's convention."""
    x, y, z, w = q
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * x - y * z))))
    ry = math.atan2(2 * (w * y + x * z), 1 - 2 * (x * x + y * y))
    rz = math.atan2(2 * (w * z + x * y), 1 - 2 * (x * x + z * z))
    return -ry, pitch, rz


class VmcSink:
    """A pipeline sink that sends each frame's motion to a VMC marionette over UDP (fire and forget: a
    receiver that is not running costs nothing and loses nothing of the avatar)."""

    name = "vmc"

    def __init__(self, target: str = f"127.0.0.1:{VMC_PORT}") -> None:
        self.host, self.port = parse_target(target)
        self.sent = 0
        self.errors = 0
        self._client: SimpleUDPClient | None = None
        self._t0 = 0.0

    def open(self, size: tuple[int, int], fps: int, sample_rate: int, channels: int = 1) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        try:
            socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            self._client = SimpleUDPClient(self.host, self.port)
        except OSError as exc:
            raise VmcError(f"Cannot send VMC to {self.host}:{self.port} ({exc}). Give the address of the machine "
                           f"running VSeeFace/VNyan/Warudo, e.g. --vmc 127.0.0.1:{VMC_PORT}.") from exc
        self.fps = fps
        self._t0 = time.monotonic()
        log.info("VMC (OSC/UDP) to %s:%d: %d blendshapes and the head pose per frame", self.host, self.port,
                 len(BLEND_NAMES))

    def write_frame(self, frame) -> None:
        client = self._client  # close() may run meanwhile (the sink removed from a running pipeline)
        if client is None:
            return
        try:
            client.send(self.bundle(frame.motion, frame.index / self.fps))
            self.sent += 1
        except OSError as exc:  # UDP: a missing receiver (ICMP refused) or a full buffer; the avatar goes on
            self.errors += 1
            if self.errors == 1:
                log.warning("VMC to %s:%d: %s (keeps trying)", self.host, self.port, exc)

    @staticmethod
    def bundle(motion: np.ndarray, t: float):
        """One frame as an OSC bundle of VMC messages."""
        from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
        from pythonosc.osc_message_builder import OscMessageBuilder

        def msg(address: str, *args):
            b = OscMessageBuilder(address=address)
            for a in args:
                b.add_arg(a, "s" if isinstance(a, str) else ("i" if isinstance(a, int) else "f"))
            return b.build()

        m = np.asarray(motion, np.float64)
        q = head_quaternion(m[M.index("headYaw")], m[M.index("headPitch")], m[M.index("headRoll")])
        # the avatar faces +z (the camera): its own right is +x, so a shift toward the image's right is -x;
        # image down is -y
        px, py = -m[M.index("headX")] * IOD_METRES, -m[M.index("headY")] * IOD_METRES
        bundle = OscBundleBuilder(IMMEDIATELY)
        bundle.add_content(msg("/VMC/Ext/OK", 1))
        bundle.add_content(msg("/VMC/Ext/T", float(t)))
        bundle.add_content(msg("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        bundle.add_content(msg("/VMC/Ext/Bone/Pos", "Head", float(px), float(py), 0.0, *map(float, q)))
        for name, value in blend_values(m):
            bundle.add_content(msg("/VMC/Ext/Blend/Val", name, float(value)))
        bundle.add_content(msg("/VMC/Ext/Blend/Apply"))
        return bundle.build()

    def write_audio(self, piece) -> None:
        pass

    def close(self) -> None:
        if self._client is not None:
            self._client._sock.close()
            self._client = None
            log.info("VMC: %d frames sent to %s:%d", self.sent, self.host, self.port)
