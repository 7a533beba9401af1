"""The threaded pipeline: streaming equals offline, back-pressure, newest-wins, errors, portrait switch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from engine.audio.io import load_audio
from engine.audio.sources import FileSource
from engine.runtime.pipeline import PipelineConfig

from .conftest import SAMPLE


class Collect:
    """A sink keeping frames (optionally slow, optionally failing)."""

    name = "collect"

    def __init__(self, delay: float = 0.0, fail_at: int = -1) -> None:
        self.frames, self.audio = [], []
        self.delay, self.fail_at = delay, fail_at
        self.closed = False

    def open(self, size, fps, sample_rate, channels=1):
        self.size = size

    def write_frame(self, frame):
        if len(self.frames) == self.fail_at:
            raise RuntimeError("sink broke")
        if self.delay:
            time.sleep(self.delay)
        self.frames.append(frame)

    def write_audio(self, piece):
        self.audio.append(piece)

    def close(self):
        self.closed = True


def test_streaming_equals_offline(engine, avatar):
    """Threads, queues and overlap change nothing: the frames are those of the serial session + renderer."""
    from engine.runtime.stream import StudentStream

    sink = Collect()
    engine.pipeline_for(FileSource(SAMPLE, 640, max_seconds=3.0), avatar, [sink]).run()
    student, corrector, schedule = engine.models
    sess = StudentStream(student, engine.session_config, corrector, schedule, avatar.shape, step=engine.step)
    audio = load_audio(SAMPLE)[: 3 * 16000]
    with torch.inference_mode():
        motion = np.concatenate(list(sess.stream(audio, 640, 75)))
        images = np.concatenate([avatar.renderer.render(motion[i:i + 3]) for i in range(0, 75, 3)])
    assert [f.index for f in sink.frames] == list(range(75))
    got = np.stack([f.motion for f in sink.frames])
    np.testing.assert_array_equal(got, motion)
    diff = np.abs(np.stack([f.image for f in sink.frames]).astype(int) - images)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # the stage's own thread count changes float sums
    assert sum(len(p.samples) for p in sink.audio) == 3 * 16000 and sink.closed


def test_offline_back_pressure_loses_nothing(engine, avatar):
    """A slow sink holds the pipeline back; queues stay bounded and every frame arrives in order."""
    sink = Collect(delay=0.02)
    pipe = engine.pipeline_for(FileSource(SAMPLE, 640, max_seconds=2.0), avatar, [sink],
                               PipelineConfig(queue_chunks=2))
    peak = [0, 0]

    def watch():
        while pipe.running or not peak[0]:
            peak[0] = max(peak[0], pipe._audio_q.qsize())
            peak[1] = max(peak[1], pipe._motion_q.qsize())
            time.sleep(0.002)

    w = threading.Thread(target=watch, daemon=True)
    pipe.start()
    w.start()
    pipe.join()
    assert [f.index for f in sink.frames] == list(range(50))
    assert pipe.stats.dropped_frames == 0 and pipe.stats.dropped_audio == 0
    assert peak[0] <= pipe._audio_q.maxsize and peak[1] <= 2
    assert peak[1] == 2  # the renderer's queue did fill: the student waited


def test_live_newest_wins_when_the_sinks_are_slow(engine, avatar):
    """Live, a slow consumer makes the pipeline drop old chunks, not fall behind the microphone."""
    sink = Collect(delay=0.12)  # 8 fps worth of sink
    pipe = engine.pipeline_for(FileSource(SAMPLE, 320, realtime=True, max_seconds=4.0), avatar, [sink],
                               PipelineConfig(queue_chunks=1))
    pipe.run()
    idx = [f.index for f in sink.frames]
    assert pipe.stats.dropped_frames > 20
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert idx[-1] >= 80  # near the end of the audio (100 frames); in order it would reach frame ~35
    lat = np.array([f.latency for f in sink.frames[-10:]])
    assert lat.max() < 1.5  # bounded: without dropping it would grow to seconds


def test_stage_errors_are_raised_in_the_caller(engine, avatar):
    sink = Collect(fail_at=10)
    pipe = engine.pipeline_for(FileSource(SAMPLE, 640), avatar, [sink])
    with pytest.raises(RuntimeError, match="sink broke"):
        pipe.run()
    assert not pipe.running and sink.closed and len(sink.frames) == 10


def test_stop_ends_every_stage(engine, avatar):
    sink = Collect()
    pipe = engine.pipeline_for(FileSource(SAMPLE, 320, realtime=True), avatar, [sink])
    pipe.start()
    time.sleep(1.5)
    pipe.stop()
    assert pipe.join(timeout=5)
    assert sink.closed and 10 < len(sink.frames) < 60


def test_portrait_switch_and_controls_mid_stream(engine, avatar, portraits_dir):
    """The avatar changes at a chunk boundary without a restart; frame numbers run on."""
    sink = Collect()
    pipe = engine.pipeline_for(FileSource(SAMPLE, 640, realtime=True, max_seconds=6.0), avatar, [sink])
    pipe.start()
    while len(sink.frames) < 20:
        time.sleep(0.01)
    other = engine.switch_portrait(portraits_dir / "lp_s42.jpg")
    pipe.set_control("blink", 1.0)
    shown = len(sink.frames)  # frames out when the switch was asked for (preparing the portrait takes a while)
    pipe.join()
    idx = np.array([f.index for f in sink.frames])
    # frame numbers run on; live (a paced source) a chunk may be dropped while the portrait is prepared
    st = pipe.stats
    assert idx[0] == 0 and idx[-1] >= 140 and np.all(np.diff(idx) > 0), (idx, st)
    assert len(idx) + st.dropped_frames <= 150 and len(idx) >= 75, st  # drops are counted (or their audio was)
    corner = np.array([f.image[:8, :8].mean() for f in sink.frames])
    old, new = avatar.renderer.rig.frame[:8, :8].mean(), other.renderer.rig.frame[:8, :8].mean()
    assert abs(old - new) > 5
    hits = np.flatnonzero(np.abs(corner - new) < 1e-6)
    assert len(hits), f"the portrait never switched (asked at frame {shown} of 150)"
    switched = int(hits[0])  # position in the sink; idx[switched] is its frame number
    # at a chunk boundary, soon after the call: at most the queued chunks (motion queue + the chunk in each
    # stage) lie between the frames out and the chunk the student takes next
    queued = (PipelineConfig().queue_chunks + 3) * 3
    assert 20 <= switched <= shown + queued and idx[switched] % 3 == 0, (switched, idx[switched], shown)
    assert np.all(np.abs(corner[:switched] - old) < 1e-6) and np.all(np.abs(corner[switched:] - new) < 1e-6)
    assert idx[-1] - idx[switched] > 10  # the stream ran on with the new portrait


def test_live_drop_keeps_a_portrait_switch_and_counts_every_frame(engine, avatar):
    """Newest wins live, but a dropped motion chunk hands its portrait switch on (else the student would
    speak with the new identity while the old face is drawn), and every dropped frame is counted."""
    pipe = engine.pipeline_for(FileSource(SAMPLE, 640, realtime=True), avatar, [Collect()])
    assert pipe.live
    q = pipe._motion_q
    chunk = lambda i, swap=None: ([3 * i, 3 * i + 1, 3 * i + 2], [0.0] * 3, 0.0, np.zeros((3, 4)), swap)  # noqa: E731
    marker = object()
    for i in range(q.maxsize):
        assert pipe._put(q, chunk(i, marker if i == 0 else None)) == []
    dropped = pipe._put(q, chunk(q.maxsize))
    assert [d[0][0] for d in dropped] == [0]
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert items[0][4] is marker and all(it[4] is None for it in items[1:])  # the next chunk drawn switches
    assert [it[0][0] for it in items] == [3 * i for i in range(1, q.maxsize + 1)]
    # two switches in a row: a dropped older switch is moot when the next chunk carries a newer one
    older, newer = object(), object()
    for i in range(q.maxsize):
        pipe._put(q, chunk(10 + i, older if i == 0 else newer if i == 1 else None))
    pipe._put(q, chunk(20))
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert [it[4] for it in items] == [newer, None, None]
