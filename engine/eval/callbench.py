"""`talkcam bench --stage call`: the avatar in a call, measured at the virtual devices.

On a private PulseAudio server (nothing of the user's session is touched):

    test signal ──> virtual speaker ──> virtual microphone "talkcam_mic" ──> talkcam live (MicSource)
                                                                              ├──> virtual camera (a registered
                                                                              │    pyvirtualcam backend that
                                                                              │    times every frame it gets)
                                                                              └──> synced microphone
                                                                                   "talkcam_synced_mic" ──> reader

The test signal is bursts of speech after pauses. Onsets are detected on both sides: on the synced
microphone's audio (envelope crossing) and on the camera's frames (the mouth region leaving its rest
picture, interpolated between frames). Per burst, A/V offset = audio onset - video onset (positive: the
voice comes after the picture). The same signal rendered offline gives the avatar's own lip timing per burst (the offset it has
with no devices at all); less that, the rest is the devices' part (`transport_offset_ms_*`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from engine.audio.io import FPS

log = logging.getLogger(__name__)

BURSTS = 10
PAUSE_S = 1.0
BURST_S = 0.6
RATE = 48000


def call_signal(bursts: int = BURSTS, pause_s: float = PAUSE_S, burst_s: float = BURST_S) -> tuple[np.ndarray, list[int]]:
    """Speech bursts (espeak-ng: the benchmark sentence, cut where the voice is loud) after pauses, at 48 kHz;
    returns the signal and each burst's onset sample (where its envelope first crosses the detector's level)."""
    from engine.audio.io import resample
    from engine.data.tts import EspeakTTS
    from engine.eval.bench import BENCH_TEXT

    utt = EspeakTTS().synthesize(BENCH_TEXT)
    speech = resample(utt.audio, utt.sample_rate, RATE).astype(np.float32)
    speech = 0.5 * speech / max(1e-6, float(np.abs(speech).max()))
    env = _envelope(speech)
    loud = np.flatnonzero(env > 0.3 * env.max())
    n_burst, n_pause = int(burst_s * RATE), int(pause_s * RATE)
    starts, last = [], -n_burst
    for i in loud:  # cut points on loud voice, one burst apart
        if i - last >= n_burst and i + n_burst <= len(speech):
            starts.append(int(i))
            last = int(i)
    if not starts:
        raise RuntimeError("the benchmark speech has no loud part to cut bursts from")
    fade = np.ones(n_burst, np.float32)
    fade[: RATE // 200] = np.linspace(0, 1, RATE // 200)  # 5 ms: a sharp onset, no click
    fade[-RATE // 50:] = np.linspace(1, 0, RATE // 50)
    out, onsets = [np.zeros(n_pause, np.float32)], []
    pos = n_pause
    for b in range(bursts):
        s = starts[b % len(starts)]
        burst = speech[s: s + n_burst] * fade
        onsets.append(pos + _onset(burst))
        out += [burst, np.zeros(n_pause, np.float32)]
        pos += n_burst + n_pause
    return np.concatenate(out), onsets


def _envelope(x: np.ndarray, win: int = RATE // 200) -> np.ndarray:
    """RMS over 5 ms, centred."""
    k = np.ones(win, np.float32) / win
    return np.sqrt(np.convolve(x.astype(np.float64) ** 2, k, mode="same"))


def _onset(x: np.ndarray, level: float = 0.1) -> int:
    """First sample whose envelope crosses `level` of the segment's peak envelope."""
    env = _envelope(x)
    hit = np.flatnonzero(env >= level * env.max())
    return int(hit[0]) if len(hit) else 0


def video_onsets(times: np.ndarray, mouth: np.ndarray, around: list[float], before: float = 0.7,
                 after: float = 1.0, level: float = 0.3) -> list[float | None]:
    """Per expected onset time: when the mouth measure first crosses `level` of the way from its rest (median
    before) to its peak (within `after`), linearly interpolated between frames; None when it never moves."""
    out: list[float | None] = []
    for t0 in around:
        pre = (times >= t0 - before) & (times < t0 - 0.3)
        win = np.flatnonzero((times >= t0 - 0.3) & (times < t0 + after))
        if pre.sum() < 3 or len(win) < 3:
            out.append(None)
            continue
        rest = float(np.median(mouth[pre]))
        peak = float(mouth[win].max())
        if peak - rest < 1e-3 + 3 * float(np.std(mouth[pre])):
            out.append(None)
            continue
        thr = rest + level * (peak - rest)
        k = next(j for j in win if mouth[j] >= thr)
        if k == 0 or mouth[k - 1] >= thr:
            out.append(float(times[k]))
            continue
        f = (thr - mouth[k - 1]) / (mouth[k] - mouth[k - 1])
        out.append(float(times[k - 1] + f * (times[k] - times[k - 1])))
    return out


def audio_onsets(times: np.ndarray, audio: np.ndarray, around: list[float], window: float = 0.8,
                 level: float = 0.1) -> list[float | None]:
    """Per expected onset time: the first sample (time) whose envelope crosses `level` of the burst's peak."""
    env = _envelope(audio)
    out: list[float | None] = []
    for t0 in around:
        idx = np.flatnonzero((times >= t0 - window / 2) & (times < t0 + window))
        if len(idx) < RATE // 10 or env[idx].max() < 1e-3:
            out.append(None)
            continue
        hit = idx[env[idx] >= level * env[idx].max()]
        out.append(float(times[hit[0]]))
    return out


class _TimedCamera:
    """A pyvirtualcam backend that keeps, per frame it is sent, the send time and the mouth measure (mean
    absolute difference from the first frame over `box`)."""

    box: tuple[int, int, int, int] = (0, 0, 1, 1)
    instances: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:
        self.width, self.height = width, height
        self.times: list[float] = []
        self.mouth: list[float] = []
        self._rest: np.ndarray | None = None
        _TimedCamera.instances.append(self)

    def send(self, frame):
        t = time.monotonic()
        x0, y0, x1, y1 = self.box
        crop = frame.reshape(self.height, self.width, 3)[y0:y1, x0:x1].astype(np.float32)
        if self._rest is None:
            self._rest = crop
        self.times.append(t)
        self.mouth.append(float(np.abs(crop - self._rest).mean()))

    def close(self):
        pass

    def device(self):
        return "talkcam-bench-camera"

    def native_fourcc(self):
        return None


def _mouth_box(renderer) -> tuple[int, int, int, int]:
    rig = renderer.rig
    bx0, by0 = rig.box[0], rig.box[1]
    mx0, my0, mx1, my1 = rig.mouth_box
    return bx0 + mx0, by0 + my0, bx0 + mx1, by0 + my1


def _offline_model_offset(engine, avatar, wav: Path, onsets_s: list[float], fps: int) -> list[float | None]:
    """The avatar's own lip timing: the signal rendered offline (no devices), video onset - audio onset."""
    from engine.audio.sources import FileSource
    from engine.runtime.live import PIECE
    from engine.sinks.base import SinkBase

    box = _mouth_box(avatar.renderer)

    class Keep(SinkBase):
        def __init__(self):
            self.idx, self.mouth, self.rest = [], [], None

        def write_frame(self, frame):
            x0, y0, x1, y1 = box
            crop = frame.image[y0:y1, x0:x1].astype(np.float32)
            self.rest = crop if self.rest is None else self.rest
            self.idx.append(frame.index)
            self.mouth.append(float(np.abs(crop - self.rest).mean()))

    keep = Keep()
    engine.pipeline_for(FileSource(wav, PIECE), avatar, [keep]).run()
    # frame i covers audio [i/fps, (i+1)/fps): it is "shown" from i/fps on, as on a screen
    times = np.array(keep.idx, np.float64) / fps
    v = video_onsets(times, np.array(keep.mouth), onsets_s)
    return [None if x is None else x - a for x, a in zip(v, onsets_s)]


def bench_call(portrait: Path, render, session, bursts: int = BURSTS, cache_dir: Path | None = None) -> dict:
    """Run the avatar live between virtual devices and measure the A/V offset and the latency (see the module
    docstring). Needs pulseaudio (installers/setup.sh installs it)."""
    import pyvirtualcam

    from engine.audio.mic import MicSource, rescan
    from engine.audio.pulse import PrivatePulse, PulseStream, alsa_pulse_pcm
    from engine.runtime.live import LIVE_PIECE, AvatarEngine
    from engine.sinks.syncmic import PulseMicOutput, SyncedMicSink
    from engine.sinks.virtualcam import VirtualCamSink
    from engine.sinks.wav import write_wav

    signal, onset_samples = call_signal(bursts)
    fps = FPS
    folder = Path(tempfile.mkdtemp(prefix="talkcam-call-", dir="/tmp"))  # a short socket path
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "ALSA_CONFIG_PATH")}
    server = PrivatePulse(folder)
    pyvirtualcam.register_backend("talkcam-bench", _TimedCamera)
    _TimedCamera.instances.clear()
    pipe = reader = player = None
    stop = threading.Event()
    try:
        server.start()
        conf = folder / "asound.conf"
        conf.write_text(alsa_pulse_pcm("talkcam_bench_mic", "talkcam_mic"))
        os.environ.update({"PULSE_SERVER": server.env["PULSE_SERVER"], "PULSE_RUNTIME_PATH": str(folder),
                           "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"})
        rescan()
        engine = AvatarEngine(render, session, cache_dir=cache_dir)
        avatar = engine.avatar(portrait)
        _TimedCamera.box = _mouth_box(avatar.renderer)
        wav = folder / "call.wav"
        write_wav(wav, signal, RATE)
        onsets_s = [o / RATE for o in onset_samples]
        model = _offline_model_offset(engine, avatar, wav, onsets_s, fps)

        camera = VirtualCamSink(render.size, fps, backend="talkcam-bench")
        synced = SyncedMicSink()
        synced.follow(camera)
        source = MicSource("talkcam_bench_mic", LIVE_PIECE)
        pipe = engine.pipeline_for(source, avatar, [camera, synced])
        pipe.start()
        assert isinstance(synced.output, PulseMicOutput)  # opened by pipe.start(): the default output on Linux
        if not synced.output.flowing.wait(10):
            raise RuntimeError("the synced microphone did not start")
        reader = PulseStream("talkcam_synced_mic", RATE, record=True, name="bench reader")
        got: list[tuple[np.ndarray, float]] = []

        def read():
            while not stop.is_set():
                block = reader.read(480)
                got.append((block, time.monotonic() - reader.latency()))

        th = threading.Thread(target=read, name="bench-reader", daemon=True)
        th.start()
        time.sleep(4.0)  # the avatar runs on silence: the delay settles (the meter spans 3 s)
        player = PulseStream("talkcam_speaker", RATE, name="bench player")
        played: list[tuple[int, float]] = []  # (first sample of the block, time it plays)
        for i in range(0, len(signal), 480):
            player.write(signal[i:i + 480])
            # the latency reaches the end of what was written: this block's first sample plays a block earlier
            played.append((i, time.monotonic() + player.latency() - len(signal[i:i + 480]) / RATE))
        time.sleep(1.0)
        stop.set()
        th.join(timeout=2)
        pipe.stop()
        pipe.join()
        reader.close()
        player.close()
        stats = pipe.stats.summary()
        cam = _TimedCamera.instances[-1]
    finally:
        stop.set()
        if pipe is not None and pipe.running:  # a failure mid-run: nothing is left running on a dead server
            pipe.stop()
            pipe.join()
        for stream in (reader, player):
            if stream is not None:
                stream.close()
        server.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        pyvirtualcam.camera.BACKENDS.pop("talkcam-bench", None)
        rescan()
        shutil.rmtree(folder, ignore_errors=True)

    starts = np.array([p[0] for p in played])
    play_t = np.array([p[1] for p in played])
    played_on = [float(np.interp(o, starts, play_t)) for o in onset_samples]  # the voice entered the microphone
    audio = np.concatenate([b for b, _ in got])
    a_times = np.concatenate([t - np.arange(len(b))[::-1] / RATE for b, t in got])
    # look for each onset where it should be: the camera after the measured frame latency, the synced
    # microphone after the delay it played with (a burst's own motion must not be taken for the next one's)
    lat = stats["latency_ms_p50"] / 1e3
    video_on = video_onsets(np.array(cam.times), np.array(cam.mouth), [p + lat for p in played_on])
    d = (synced.delay_ms or 0.0) / 1e3
    synced_on = audio_onsets(a_times, audio, [p + d for p in played_on])
    rows = [(a, v, p, m) for a, v, p, m in zip(synced_on, video_on, played_on, model) if a is not None and v is not None]
    if not rows:
        raise RuntimeError("no burst was detected on both the synced microphone and the camera")
    av = np.array([1e3 * (a - v) for a, v, _, _ in rows])
    raw = np.array([1e3 * (p - v) for _, v, p, _ in rows])
    to_cam = np.array([1e3 * (v - p) for _, v, p, _ in rows])
    own = np.array([1e3 * m for m in model if m is not None]) if any(m is not None for m in model) else np.zeros(1)
    # the devices' own part: each burst's offset less the avatar's own lip timing on the same burst offline
    transport = np.array([1e3 * (a - v + m) for a, v, _, m in rows if m is not None])
    return {"stage": "call", "bursts": bursts, "bursts_detected": len(rows),
            "av_offset_ms_p50": round(float(np.median(av)), 1),
            "av_offset_ms_p95": round(float(np.percentile(np.abs(av), 95)), 1),
            "av_offset_ms": [round(float(x), 1) for x in av],
            "transport_offset_ms_p50": round(float(np.median(transport)), 1) if len(transport) else None,
            "transport_offset_ms_p95": round(float(np.percentile(np.abs(transport), 95)), 1) if len(transport) else None,
            "unsynced_av_offset_ms_p50": round(float(np.median(raw)), 1),
            "avatar_own_offset_ms_p50": round(float(np.median(own)), 1),
            "mic_to_frame_ms_p50": round(stats["latency_ms_p50"], 1),
            "mic_to_frame_ms_p95": round(stats["latency_ms_p95"], 1),
            "speaker_to_camera_onset_ms_p50": round(float(np.median(to_cam)), 1),
            "synced_mic_delay_ms": None if synced.delay_ms is None else round(synced.delay_ms, 1),
            "synced_mic_resyncs": synced.line.resyncs, "dropped_frames": stats["dropped_frames"],
            "camera_frames": len(cam.times), "size": list(render.size)}
