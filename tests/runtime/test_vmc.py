"""VTuber output over the VMC protocol: a real OSC/UDP receiver gets every frame of a live stream, with the
names the VMC / perfect-sync conventions give and values equal to the motion."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from engine import motion as M
from engine.audio.sources import FileSource
from engine.cli import main
from engine.sinks.vmc import (
    BLEND_NAMES,
    VmcError,
    VmcSink,
    blend_values,
    head_angles,
    head_quaternion,
    parse_target,
)

from .conftest import SAMPLE


class Receiver:
    """A VMC marionette stand-in: collects every message, grouped per frame by /VMC/Ext/T."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, str, tuple]] = []
        d = Dispatcher()
        d.set_default_handler(lambda address, *args: self.messages.append((time.monotonic(), address, args)))
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), d)  # one datagram at a time, in order
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def frames(self) -> dict[float, dict]:
        out: dict[float, dict] = {}
        cur = None
        for _, address, args in self.messages:
            if address == "/VMC/Ext/T":
                cur = out.setdefault(round(args[0], 4), {"blend": {}, "order": []})
            elif cur is not None and address == "/VMC/Ext/Blend/Val":
                cur["blend"][args[0]] = args[1]
                cur["order"].append(args[0])
            elif cur is not None and address == "/VMC/Ext/Bone/Pos":
                cur[args[0]] = args[1:]
            elif cur is not None:
                cur.setdefault("other", []).append(address)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Keep:
    name = "keep"

    def __init__(self) -> None:
        self.frames = []

    def open(self, size, fps, sample_rate, channels=1):
        pass

    def write_frame(self, frame):
        self.frames.append(frame)

    def write_audio(self, piece):
        pass

    def close(self):
        pass


def test_live_stream_reaches_a_vmc_receiver_frame_by_frame(engine, avatar, receiver):
    keep, vmc = Keep(), VmcSink(f"127.0.0.1:{receiver.port}")
    engine.pipeline_for(FileSource(SAMPLE, 640, realtime=True, max_seconds=3.0), avatar, [keep, vmc]).run()
    time.sleep(0.3)  # the last datagrams
    got = receiver.frames()
    n = len(keep.frames)  # live: a slow machine may drop a few frames; every frame shown is sent
    assert n >= 60 and vmc.sent == n and vmc.errors == 0
    assert len(got) == n  # every frame sent arrived (local UDP)
    one = ["/VMC/Ext/OK", "/VMC/Ext/T", "/VMC/Ext/Root/Pos", "/VMC/Ext/Bone/Pos"] + \
        ["/VMC/Ext/Blend/Val"] * len(BLEND_NAMES) + ["/VMC/Ext/Blend/Apply"]
    assert [a for _, a, _ in receiver.messages] == one * n  # each frame one bundle, in the VMC order
    # live: a bundle per frame shown (25 a second less any drops), 43 messages each: far over 25 messages a second
    times = [t for t, _, _ in receiver.messages]
    span = times[-1] - times[0] + 1 / 25
    assert n / span >= 18 and len(times) / span >= 25 * 10
    for f in keep.frames:
        rec = got[round(f.index / 25, 4)]
        assert rec["order"] == list(BLEND_NAMES)
        want = dict(blend_values(f.motion))
        assert all(abs(rec["blend"][k] - v) < 1e-6 for k, v in want.items())  # OSC floats are 32-bit
        yaw, pitch, roll = head_angles(rec["Head"][3:7])
        m = f.motion
        assert abs(yaw - m[M.index("headYaw")]) < 1e-5 and abs(pitch - m[M.index("headPitch")]) < 1e-5
        assert abs(roll - m[M.index("headRoll")]) < 1e-5
    # the mouth moves in the stream (speech), so the values are not a constant
    jaw = [got[round(f.index / 25, 4)]["blend"]["JawOpen"] for f in keep.frames]
    assert np.std(jaw) > 0.02


def test_names_and_values_follow_the_conventions():
    assert BLEND_NAMES[:3] == ("JawOpen", "MouthClose", "MouthFunnel")
    assert "MouthSmileLeft" in BLEND_NAMES and "EyeBlinkRight" in BLEND_NAMES and "BrowInnerUp" in BLEND_NAMES
    assert len(set(BLEND_NAMES)) == len(BLEND_NAMES)
    m = M.zeros()
    m[M.index("eyeBlink_L")] = 0.8
    m[M.index("jawOpen")] = 0.4
    m[M.index("eyeLookX")] = 0.5  # toward the image's right: the avatar's own left
    m[M.index("eyeLookY")] = -0.3  # up
    v = dict(blend_values(m))
    assert v["EyeBlinkLeft"] == pytest.approx(0.8) and v["Blink_L"] == pytest.approx(0.8) and v["Blink"] == 0.0
    assert v["JawOpen"] == pytest.approx(0.4) and v["A"] == pytest.approx(0.4)
    assert v["EyeLookOutLeft"] == pytest.approx(0.5) and v["EyeLookInRight"] == pytest.approx(0.5)
    assert v["EyeLookInLeft"] == 0.0 and v["EyeLookUpLeft"] == pytest.approx(0.3) and v["EyeLookDownRight"] == 0.0
    # yaw toward the image's right turns the avatar's face (+z) toward its own left (-x)
    x, y, z, w = head_quaternion(0.3, 0.0, 0.0)
    fx = 2 * (x * z + w * y)  # the rotated +z axis' x component
    assert fx == pytest.approx(-math.sin(0.3))
    for angles in [(0.2, -0.1, 0.3), (-0.35, 0.3, -0.2)]:
        assert head_angles(head_quaternion(*angles)) == pytest.approx(angles)


def test_targets_are_parsed_and_bad_ones_refused(caplog):
    assert parse_target("192.168.1.5:39540") == ("192.168.1.5", 39540)
    assert parse_target(":39541") == ("127.0.0.1", 39541) and parse_target("studio-pc") == ("studio-pc", 39539)
    with pytest.raises(VmcError, match="port must be a number"):
        parse_target("host:abc")
    with pytest.raises(VmcError, match="1-65535"):
        parse_target("host:70000")
    assert main(["live", "--no-gui", "--audio", str(SAMPLE), "--vmc", "host:abc"]) == 2
    assert "port must be a number" in caplog.text
    with pytest.raises(VmcError, match="Cannot send VMC"):
        VmcSink("no-such-host.invalid:39539").open((64, 64), 25, 16000)
